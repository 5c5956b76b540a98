"""The shape every group of endpoints takes, and the request helpers they share.

The emulator answers several APIs, each under its own path prefix: the
Integration API (``/v2``, :mod:`~talon_classic.emulator.integration` and
:mod:`~talon_classic.emulator.audiences`), the Management API (``/v1``,
:mod:`~talon_classic.emulator.management`) and the inspection endpoints
(``/_emulator``, :mod:`~talon_classic.emulator.inspection`). Each is a
:class:`Routes` subclass in a module of its own; another API is one more
module and one more entry in :data:`Emulator.route_groups`. Groups sharing
a prefix share its key and rate limit (the first one listed authenticates).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from talon_classic.emulator.problems import bad_request

_orjson: Any = None
try:  # the ``fast`` extra
    import orjson

    _orjson = orjson
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    pass
#: Digits all become "0"; a run this long is an integer orjson would not read exactly.
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19

if TYPE_CHECKING:
    from talon_classic.emulator.app import Emulator


@dataclass
class Exchange:
    """What one request did, for the request log and the fault handling."""

    #: Profiles the request carried (logged even when it is refused).
    profiles: int = 0
    #: The configured latency was already spent (a write spends it holding its profiles).
    paused: bool = False
    #: The answer is to be cut short on purpose (``drop_next``).
    drop: bool = False


#: An endpoint: the request, its exchange, and the rule's arguments, to an answer.
Endpoint = Callable[..., Response]


class Routes:
    """The endpoints under one path prefix, served by one :class:`Emulator`.

    A request to an ``emulated`` group stands for a request to Talon.One:
    it is authenticated (:meth:`authenticate`), takes the injected faults,
    the latency and the rate limit, and is recorded in the request log.
    Other groups (inspection) answer directly.
    """

    #: Paths starting with this belong to the group (``"/v2/"``).
    prefix: ClassVar[str]
    #: Whether requests here emulate Talon.One (authenticated, faulted, paced, logged).
    emulated: ClassVar[bool] = False
    #: The :class:`~talon_classic.emulator.config.EmulatorConfig` field that paces the group.
    rate_field: ClassVar[str] = "rate_limit"

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def rules(self) -> list[Rule]:
        """The group's URL rules; each ``endpoint`` is an :data:`Endpoint`."""
        raise NotImplementedError

    def authenticate(self, request: Request) -> None:
        """Raise a 401 :class:`~talon_classic.emulator.problems.Problem` for a refused key."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes) -> Any:
    """``data`` parsed as :func:`json.loads` does it, ``NaN`` and ``Infinity`` refused.

    orjson (when installed) reads most bodies in a third of the time and to the
    same value; what it reads differently or not at all (integers of 19 digits or
    more, a byte-order mark, lone surrogates, NaN, UTF-16, deep nesting) goes to
    :func:`json.loads`, which decides as before.
    """
    if (_orjson is not None and _LONG_RUN not in data.translate(_DIGITS)
            and not data.startswith(b"\xef\xbb\xbf")):
        try:
            return _orjson.loads(data)
        except ValueError:
            pass
    return json.loads(data, parse_constant=_no_constants)


def json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying why not.

    ``NaN`` and ``Infinity`` are refused, as Talon.One's JSON parser does
    (Python's accepts them, and ``json.dumps`` writes them).
    """
    try:
        body = parse_json(request.get_data())
    except ValueError:
        raise bad_request("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object", "/")
    return body


def flag(request: Request, name: str, values: tuple[str, str], default: str) -> bool:
    """A query parameter that takes one of two ``values``; True for the first."""
    value = request.args.get(name, default)
    if value.lower() not in values:
        raise bad_request(f"query parameter {name} must be {' or '.join(values)}, got {value!r}",
                          parameter=name)
    return value.lower() == values[0]


def window(request: Request, default_limit: int) -> tuple[int, int]:
    """The ``limit`` and ``offset`` query parameters of a listing."""
    limit = request.args.get("limit", default_limit, type=int)
    offset = request.args.get("offset", 0, type=int)
    if limit < 0 or offset < 0:
        raise bad_request("limit and offset must be >= 0",
                          parameter="limit" if limit < 0 else "offset")
    return limit, offset
