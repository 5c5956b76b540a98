"""Typed attributes: coerce an untyped Segment value to a Talon.One type, or check one.

Talon.One refuses a value of the wrong type with a 400 that fails a whole
bulk request, while Segment traits are untyped (``age: "42"``,
``createdAt: 1700000000``). Two questions are answered here, per type:

* :func:`coerce` (and the compiled :func:`coercer`): what value to send,
  following the coercion table of the typed-attributes contract; a value
  that cannot be made to fit gives :data:`MISMATCH`.
* :func:`conforms`: would Talon.One accept this value as it is, with no
  coercion at all? That is the check a strict emulator answers 400 with.

Every coerced value conforms, and coercing it again changes nothing.

Type by type (``MISMATCH`` for anything not listed):

=====================  =========================================================
``string``             a string as is; a number as its JSON text (``42`` ->
                       ``"42"``, ``4.0`` -> ``"4.0"``); a boolean as
                       ``"true"``/``"false"``
``number``             a number as is (never a boolean); a string that,
                       trimmed, is a JSON number (integer text stays an integer)
``boolean``            a boolean as is; ``"true"``/``"false"`` trimmed, any case
``time``               an ISO 8601 string (what Python 3.11's
                       ``datetime.fromisoformat`` accepts, trimmed; no offset
                       means UTC) or Unix time (seconds when ``abs(n) <
                       100_000_000_000``, else milliseconds), always written
                       ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (further digits cut)
``(list T)``           a list whose every item coerces by ``T``'s row
``location``, others   anything, unchanged
=====================  =========================================================

Choices the contract leaves open, written down here:

* Trimming is :meth:`str.strip` (Unicode whitespace).
* A JSON number's digits are ASCII only (``"١٢"`` is no number).
* A number string too large for a float (``"1e400"``) or with more digits
  than Python converts (``"1" * 5000``) is a mismatch, not an infinity or a crash.
* Unix time that is a float counts its decimal value (``1714566600.123`` is
  123 ms, not the binary float's 122.99...) and is cut to the millisecond
  below it, as fraction digits are cut.
* A time outside years 1-9999 (after the offset is applied) is a mismatch:
  RFC 3339, which Talon.One reads, has four-digit years only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Final

#: The types Talon.One knows for customer-profile attributes.
SCALAR_TYPES: Final = ("string", "number", "boolean", "time")
LIST_TYPES: Final = ("(list string)", "(list number)", "(list time)")
PASS_THROUGH_TYPES: Final = ("location", "(list location)")
KNOWN_TYPES: Final = SCALAR_TYPES + LIST_TYPES + PASS_THROUGH_TYPES

#: Unix time below this absolute value is seconds, from it on milliseconds.
SECONDS_LIMIT: Final = 100_000_000_000


class _Mismatch:
    """The one value meaning "cannot be coerced to this type"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISMATCH"

    def __bool__(self) -> bool:
        return False


#: Returned by every coercer for a value that does not fit its type.
MISMATCH: Final[Any] = _Mismatch()

#: A coercer: value in, coerced value (or :data:`MISMATCH`) out.
Coercer = Callable[[Any], Any]

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_float_repr = float.__repr__
_join = "".join
_isfinite = math.isfinite


# -- scalars ----------------------------------------------------------------------
def to_string(value: Any) -> Any:
    """``string``: a string as is, a number as its JSON text, a boolean as ``true``/``false``."""
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        try:
            return str(value)
        except ValueError:  # more digits than Python will print
            return MISMATCH
    if kind is float:  # json.dumps writes a finite float as its repr
        return _float_repr(value) if _isfinite(value) else MISMATCH
    return MISMATCH


def to_number(value: Any) -> Any:
    """``number``: a number as is (not a boolean); a trimmed JSON-number string parsed."""
    kind = type(value)
    if kind is int:
        return value
    if kind is float:
        return value if _isfinite(value) else MISMATCH
    if kind is not str:
        return MISMATCH
    text = value.strip()
    match = _JSON_NUMBER.fullmatch(text)
    if match is None:
        return MISMATCH
    try:
        if match.group(1) is None and match.group(2) is None:
            return int(text)
        number = float(text)
    except ValueError:  # an integer longer than Python converts
        return MISMATCH
    return number if _isfinite(number) else MISMATCH


def to_boolean(value: Any) -> Any:
    """``boolean``: a boolean as is; ``"true"``/``"false"`` after trimming, in any case."""
    if type(value) is bool:
        return value
    if type(value) is str:
        text = value.strip().lower()
        if text == "true":
            return True
        if text == "false":
            return False
    return MISMATCH


def format_time(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC, as JavaScript's ``toISOString()`` writes it.

    A naive ``moment`` is taken as UTC. Microseconds are cut to milliseconds.
    Raises OverflowError when the UTC moment falls outside years 1-9999.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


def _from_unix(value: int | float) -> str:
    """Unix time (seconds below :data:`SECONDS_LIMIT`, else milliseconds) as a time string."""
    if type(value) is int:
        millis = value * 1000 if -SECONDS_LIMIT < value < SECONDS_LIMIT else value
    else:
        exact = Decimal(repr(value))  # the decimal the JSON text said, not the binary float
        if -SECONDS_LIMIT < exact < SECONDS_LIMIT:
            exact *= 1000
        millis = int(exact.to_integral_value(rounding=ROUND_FLOOR))
    return format_time(_EPOCH + timedelta(milliseconds=millis))


def to_time(value: Any) -> Any:
    """``time``: an ISO 8601 string or Unix time, written ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    kind = type(value)
    try:
        if kind is str:
            return format_time(datetime.fromisoformat(value.strip()))
        if kind is int or (kind is float and _isfinite(value)):
            return _from_unix(value)
    except (ValueError, OverflowError, InvalidOperation):
        return MISMATCH
    return MISMATCH


def unchanged(value: Any) -> Any:
    """``location``, ``(list location)`` and unknown types: the value as it is."""
    return value


_SCALAR_COERCERS: dict[str, Coercer] = {
    "string": to_string,
    "number": to_number,
    "boolean": to_boolean,
    "time": to_time,
}


#: Python types a value may have to be right as it is, with no coercer call.
#: (Only for values the engine produced or JSON decoded: finite floats.)
_AS_IS: dict[str, frozenset[type]] = {
    "string": frozenset({str}),
    "number": frozenset({int, float}),
    "boolean": frozenset({bool}),
}


#: Item types a list takes as is with no look at the values (floats are looked at:
#: a list given to :func:`coerce` directly may hold a NaN).
_LIST_ITEMS_AS_IS: dict[str, frozenset[type]] = {
    "number": frozenset({int}),
    "boolean": frozenset({bool}),
}


def _list_of(item: Coercer, as_is: frozenset[type]) -> Coercer:
    """A coercer for ``(list T)`` from ``T``'s: every item must coerce.

    A list whose items all have a type ``T`` takes as is (``as_is``) is
    returned itself, after one C-level pass over it.
    """

    def coerce_list(value: Any) -> Any:
        if type(value) is not list:
            return MISMATCH
        if as_is and as_is.issuperset(map(type, value)):
            return value
        return _coerce_items(item, value)

    return coerce_list


def _coerce_list_string(value: Any) -> Any:
    """``(list string)``: :func:`_list_of` with a faster as-is test (``str.join`` checks in C)."""
    if type(value) is not list:
        return MISMATCH
    try:
        _join(value)
    except TypeError:  # an item is not a string
        return _coerce_items(to_string, value)
    return value


def _coerce_items(item: Coercer, value: list[Any]) -> Any:
    out = [item(v) for v in value]
    for v in out:
        if v is MISMATCH:
            return MISMATCH
    return out


@lru_cache(maxsize=64)
def coercer(type_name: str) -> Coercer:
    """The coercer for one Talon.One type name (exact, case-sensitive); unknown types pass."""
    found = _SCALAR_COERCERS.get(type_name)
    if found is not None:
        return found
    if type_name == "(list string)":
        return _coerce_list_string
    if type_name in LIST_TYPES:
        item = type_name[6:-1]
        return _list_of(_SCALAR_COERCERS[item], _LIST_ITEMS_AS_IS.get(item, frozenset()))
    return unchanged


def coerce(value: Any, type_name: str) -> Any:
    """``value`` coerced to ``type_name``, or :data:`MISMATCH` when it cannot be."""
    return coercer(type_name)(value)


# -- the engine's compiled form ---------------------------------------------------------
_ANY_JSON: frozenset[type] = frozenset({str, int, float, bool, list, dict, type(None)})


def accepted_as_is(type_name: str) -> frozenset[type]:
    """Python types whose engine-made values need no coercion for ``type_name``.

    Empty for ``time`` and the list types (their values are always looked at);
    every JSON type for the types that pass anything through.
    """
    if type_name in _SCALAR_COERCERS or type_name in LIST_TYPES:
        return _AS_IS.get(type_name, frozenset())
    return _ANY_JSON


@dataclass(frozen=True)
class CompiledTypes:
    """Per-attribute decisions of a schema, made once so that events cost little.

    ``as_is[name]`` are the Python types that need nothing done;
    ``coercers[name]`` handles every other value. A name in neither is not
    in the schema.
    """

    as_is: dict[str, frozenset[type]]
    coercers: dict[str, Coercer]


def compile_types(types: Mapping[str, str]) -> CompiledTypes:
    """Compile ``{attribute name: Talon.One type}`` for the engine."""
    return CompiledTypes(
        as_is={name: accepted_as_is(t) for name, t in types.items()},
        coercers={name: coercer(t) for name, t in types.items()},
    )


# -- validation without coercion (what Talon.One, and the emulator, accept) -----------------
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)


def is_rfc3339(value: Any) -> bool:
    """Is ``value`` an RFC 3339 date-time string naming a real instant?

    As Go's ``time.Parse(time.RFC3339, ...)`` reads it: an upper-case ``T``
    between date and time, seconds required, any number of fraction digits,
    ``Z`` or a ``±HH:MM`` offset required (hours up to 23). Dates must exist
    (no 30 February) and leap seconds (``:60``) are refused; years 0001-9999.
    """
    if type(value) is not str:
        return False
    m = _RFC3339.fullmatch(value)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        return False
    if m.group(8) is not None and (int(m.group(9)) > 23 or int(m.group(10)) > 59):
        return False
    return True


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is float and _isfinite(value))


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: type(v) is str,
    "number": _is_number,
    "boolean": lambda v: type(v) is bool,
    "time": is_rfc3339,
}


def conforms(value: Any, type_name: str) -> bool:
    """Would Talon.One take ``value`` for an attribute of ``type_name`` as it is?

    ``string``: a JSON string; ``number``: a finite number, not a boolean;
    ``boolean``: ``true``/``false``; ``time``: an RFC 3339 string (see
    :func:`is_rfc3339`); a list type: a list of such items. ``location``,
    ``(list location)`` and unknown types accept anything.
    """
    check = _CHECKS.get(type_name)
    if check is not None:
        return check(value)
    if type_name in LIST_TYPES:
        item = _CHECKS[type_name[6:-1]]
        return type(value) is list and all(item(v) for v in value)
    return True
