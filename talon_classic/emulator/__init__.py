"""A local Talon.One Integration API, for trials, tests and benchmarks.

It answers the endpoints talon-classic uses with the real request and
response shapes: ``GET /v2/authping``,
``PUT /v2/customer_profiles/{integrationId}`` and the bulk
``PUT /v2/customer_profiles``, with Talon.One's status codes and error
bodies (401, 400, 409 for concurrent updates of one profile, 429 with
``Retry-After`` above the rate limit). Faults can be injected at start or at
runtime (``POST /_emulator/config``), and ``/_emulator/...`` lets tests and
users look at what arrived without an API key.

It is a WSGI app (werkzeug) served by waitress; profiles live in memory or,
with ``db``, in SQLite (WAL) so they survive restarts.

One concept per module:

* :mod:`~talon_classic.emulator.config`: :class:`EmulatorConfig`, every setting and its checks;
* :mod:`~talon_classic.emulator.attributes`: which attribute names exist, the attributes file;
* :mod:`~talon_classic.emulator.store`: the profiles, in memory or in SQLite;
* :mod:`~talon_classic.emulator.traffic`: the request log and counters;
* :mod:`~talon_classic.emulator.faults`: injected failures, hangs, drops, latency, rate limit;
* :mod:`~talon_classic.emulator.problems`: Talon.One's error bodies;
* :mod:`~talon_classic.emulator.routes`: what a group of endpoints looks like;
* :mod:`~talon_classic.emulator.integration`: the ``/v2`` Integration API endpoints;
* :mod:`~talon_classic.emulator.inspection`: the ``/_emulator`` endpoints;
* :mod:`~talon_classic.emulator.app`: :class:`Emulator`, the WSGI app that ties them;
* :mod:`~talon_classic.emulator.server`: :class:`EmulatorServer`, the app served by waitress.
"""

from talon_classic.emulator.app import Emulator
from talon_classic.emulator.attributes import parse_attributes_file
from talon_classic.emulator.config import EmulatorConfig
from talon_classic.emulator.server import EmulatorServer

__all__ = ["Emulator", "EmulatorConfig", "EmulatorServer", "parse_attributes_file"]
