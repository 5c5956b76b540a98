"""A local Talon.One, for trials, tests and benchmarks: as strict as the real one.

It answers the endpoints talon-classic uses with the real request and
response shapes, status codes and error bodies. The Integration API
(``Authorization: ApiKey-v1``): ``GET /v2/authping``,
``PUT /v2/customer_profiles/{integrationId}`` and the bulk
``PUT /v2/customer_profiles`` (400 for an attribute that does not exist or
a value of the wrong type, 409 for concurrent updates of one profile), and
the audiences (``POST /v2/audiences``, ``PUT``/``DELETE
/v2/audiences/{id}``, ``DELETE /v2/audiences/{id}/memberships``,
``POST /v2/customer_audiences``), 429 with ``Retry-After`` above 60
requests per second. The Management API (``Authorization:
ManagementKey-v1``, 3 requests per second): ``GET /v1/attributes``,
``GET /v1/audiences`` and ``GET /v1/audiences/{id}/memberships``. Faults
can be injected at start or at runtime (``POST /_emulator/config``), and
``/_emulator/...`` lets tests and users look at what arrived without a key.

It is a WSGI app (werkzeug) served by waitress; profiles and audiences live
in memory or, with ``db``, in SQLite (WAL) so they survive restarts.

One concept per module:

* :mod:`~talon_classic.emulator.config`: :class:`EmulatorConfig`, every setting and its checks;
* :mod:`~talon_classic.emulator.attributes`: which attributes exist, their types, the file;
* :mod:`~talon_classic.emulator.types`: the check a value must pass for its type;
* :mod:`~talon_classic.emulator.store`: the profiles, in memory or in SQLite;
* :mod:`~talon_classic.emulator.audience_store`: the audiences and members, likewise;
* :mod:`~talon_classic.emulator.traffic`: the request log and counters;
* :mod:`~talon_classic.emulator.faults`: injected failures, hangs, drops, latency, rate limits;
* :mod:`~talon_classic.emulator.problems`: Talon.One's error bodies;
* :mod:`~talon_classic.emulator.routes`: what a group of endpoints looks like;
* :mod:`~talon_classic.emulator.integration`: the ``/v2`` profile endpoints;
* :mod:`~talon_classic.emulator.audiences`: the ``/v2`` audience endpoints;
* :mod:`~talon_classic.emulator.management`: the ``/v1`` Management API endpoints;
* :mod:`~talon_classic.emulator.inspection`: the ``/_emulator`` endpoints;
* :mod:`~talon_classic.emulator.app`: :class:`Emulator`, the WSGI app that ties them;
* :mod:`~talon_classic.emulator.server`: :class:`EmulatorServer`, the app served by waitress.
"""

from talon_classic.emulator.app import Emulator
from talon_classic.emulator.attributes import parse_attributes_file
from talon_classic.emulator.config import EmulatorConfig
from talon_classic.emulator.server import EmulatorServer

__all__ = ["Emulator", "EmulatorConfig", "EmulatorServer", "parse_attributes_file"]
