"""How the emulator behaves: :class:`EmulatorConfig` and the checks of its values.

One frozen value holds every setting; a runtime change (``POST
/_emulator/config`` or :meth:`Emulator.configure`) makes a new one with
:func:`dataclasses.replace`, so the same checks refuse a bad value whether
it comes at start or later, before it can break a request.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

_SET_FIELDS = ("attributes", "reject_ids")
_FLOAT_FIELDS = ("rate_limit", "management_rate_limit", "latency_ms", "fail_rate",
                 "hang_seconds")
#: Fields never shown (``public``) nor logged.
SECRET_FIELDS = frozenset({"api_key", "management_key"})
_COUNT_FIELDS = ("fail_next", "hang_next", "drop_next")


def _number(name: str, value: Any, kind: type) -> Any:
    """``value`` as a non-negative ``kind``; bools and strings are refused, not guessed."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if kind is int and value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return kind(value)


def _names(name: str, value: Any) -> frozenset[str]:
    """A list or set of strings as a frozenset (a lone string is refused: it is not a list)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of strings, got {value!r}")
    out = frozenset(value)
    if not all(isinstance(v, str) for v in out):
        raise ValueError(f"{name} must be a list of strings")
    return out


def _types(name: str, value: Any) -> Mapping[str, str]:
    """A mapping of attribute name -> type as a read-only mapping; types are non-empty
    strings, and a ``*`` pattern cannot have one."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must map attribute names to types, got {value!r}")
    out: dict[str, str] = {}
    for key, type_ in value.items():
        if not isinstance(key, str) or not isinstance(type_, str) or not type_:
            raise ValueError(f"{name} must map attribute names to type names, got "
                             f"{key!r}: {type_!r}")
        if "*" in key:
            raise ValueError(f"{name}: pattern {key!r} cannot have a type")
        out[key] = type_
    return MappingProxyType(dict(sorted(out.items())))


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator behaves; every field but ``db`` can change at runtime.

    Values are checked (and lists turned into frozensets) on construction,
    so a bad runtime change is refused instead of breaking later requests.
    """

    #: The key clients send as ``Authorization: ApiKey-v1 <key>``; never shown.
    api_key: str = field(default="emulator-key", repr=False)
    #: The Management API key, sent as ``Authorization: ManagementKey-v1 <key>``; never shown.
    management_key: str = field(default="emulator-management-key", repr=False)
    #: Attribute names that "exist" (``*`` entries are shell patterns, ``consent_*``);
    #: None accepts every well-formed name. Also accepts a mapping name -> type (None:
    #: any value), which becomes the names here and the types in ``attribute_types``.
    #: With a list, Talon.One's built-in attributes exist too (``attributes.BUILTIN_ATTRIBUTES``).
    attributes: frozenset[str] | None = None
    #: Attribute name -> Talon.One type (``number``, ``(list string)``...); every /v2
    #: profile write is checked against it. Names not here take any value (built-ins
    #: take their own type). Replaced whole when ``attributes`` is given as a mapping.
    attribute_types: Mapping[str, str] = field(default_factory=dict)
    #: None keeps profiles in memory; a path keeps them in SQLite (WAL), across restarts.
    db: str | None = None
    #: Requests per second over all /v2 requests; 0 = no limit. A token bucket holding
    #: ``max(1, rate_limit)`` tokens (one second's worth), so a burst of that many passes.
    rate_limit: float = 60.0
    #: Requests per second over all /v1 (Management API) requests, Talon.One's 3; 0 = none.
    management_rate_limit: float = 3.0
    #: Added to every /v2 answer.
    latency_ms: float = 0.0
    #: Fraction of /v2 requests answered with ``fail_status`` (random, from ``seed``).
    fail_rate: float = 0.0
    fail_status: int = 503
    #: The next N /v2 requests are answered with ``fail_status``.
    fail_next: int = 0
    #: The next N /v2 requests sleep ``hang_seconds`` before being handled, as a request
    #: Talon.One finishes late: a write lands at the end of its hang, even when the client
    #: gave up on it long before. With ``hang_apply`` False it is not handled at all and
    #: answered 504 at the end of the hang.
    hang_next: int = 0
    hang_seconds: float = 10.0
    hang_apply: bool = True
    #: The next N /v2 requests are handled, then their connection closes mid-answer.
    drop_next: int = 0
    #: integrationIds that fail any request carrying them with 400 ("poison" profiles).
    reject_ids: frozenset[str] = frozenset()
    seed: int | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        for name in sorted(SECRET_FIELDS):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
        if isinstance(self.attributes, Mapping):
            schema = self.attributes
            put("attribute_types", _types("attributes", {
                k: v for k, v in schema.items() if v is not None}))
            put("attributes", _names("attributes", schema.keys()))
        else:
            put("attribute_types", _types("attribute_types", self.attribute_types))
            if self.attributes is not None:
                put("attributes", _names("attributes", self.attributes))
        put("reject_ids", _names("reject_ids", self.reject_ids))
        if self.db is not None and not isinstance(self.db, str | os.PathLike):
            raise ValueError(f"db must be a path, got {self.db!r}")
        for name in _FLOAT_FIELDS:
            put(name, _number(name, getattr(self, name), float))
        for name in _COUNT_FIELDS:
            put(name, _number(name, getattr(self, name), int))
        if self.fail_rate > 1:
            raise ValueError(f"fail_rate must be between 0 and 1, got {self.fail_rate}")
        status = self.fail_status
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"fail_status must be an HTTP status (100-599), got {status!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer or null, got {self.seed!r}")
        if not isinstance(self.hang_apply, bool):
            raise ValueError(f"hang_apply must be true or false, got {self.hang_apply!r}")

    def public(self) -> dict[str, Any]:
        """The config as JSON-ready data, without the keys (for ``/_emulator/config``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in SECRET_FIELDS}
        out["attribute_types"] = dict(self.attribute_types)
        for name in _SET_FIELDS:
            if out[name] is not None:
                out[name] = sorted(out[name])
        if out["db"] is not None:
            out["db"] = os.fspath(out["db"])
        return out


#: The names :meth:`Emulator.configure` accepts.
CONFIG_FIELDS = frozenset(f.name for f in fields(EmulatorConfig))
