"""Talon.One's attribute types, and the check a written value must pass.

Talon.One refuses (400) a profile write whose value does not have the
attribute's type. The emulator checks exactly what Talon.One would: for
``string`` a JSON string, for ``number`` a number (booleans are not
numbers), for ``boolean`` ``true``/``false``, for ``time`` an RFC 3339
date-time string, for a list type a list of such items. ``location``,
``(list location)`` and types it does not know take any value.

This check is written independently of talon-classic's own coercion
(``talon_classic.coerce``): the emulator is the referee the library's
output is measured against, so it must not share the library's code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

#: Talon.One's attribute types.
TYPES = ("string", "number", "boolean", "time", "(list string)", "(list number)",
         "(list time)", "location", "(list location)")

#: RFC 3339 ``date-time`` as Talon.One (Go's ``time.RFC3339``) parses it: a full date,
#: ``T``, a full time with optional fraction digits, and ``Z`` or a numeric offset.
#: Upper-case ``T`` and ``Z`` only, no spaces, no bare dates. Every field's range is in
#: the pattern but the day's bound for its month (see :func:`is_rfc3339`).
_RFC3339 = re.compile(
    r"(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d+)?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII)

_LIST = re.compile(r"\(list (\w+)\)", re.ASCII)


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def is_rfc3339(text: str) -> bool:
    """Is ``text`` an RFC 3339 date-time, e.g. ``2024-05-01T12:30:00.5+02:00``?

    The fields must be in range (month 1-12, a day the month has, hour
    0-23, minute and second 0-59, offset hours 0-23 and minutes 0-59), as
    Go's parser requires.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        return False
    day = match.group(3)
    if day < "29":
        return True
    return int(day) <= _days_in_month(int(match.group(1)), int(match.group(2)))


def kind(value: Any) -> str:
    """What a JSON value is, for a message: ``a string``, ``a boolean``, ``null``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else f"got {kind(value)}"


def _number(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return None if ok else f"got {kind(value)}"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"got {kind(value)}"


def _time(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"got {kind(value)}"
    return None if is_rfc3339(value) else "got a string that is not an RFC 3339 date-time"


#: The check of each scalar type whose values Talon.One checks.
_SCALARS = {"string": _string, "number": _number, "boolean": _boolean, "time": _time}
#: The item types of the list types whose items Talon.One checks.
_LIST_ITEMS = ("string", "number", "time")


#: A check of one value: None when it passes, else why not.
Check = Callable[[Any], "str | None"]


@lru_cache(maxsize=256)
def checker(attribute_type: str | None) -> Check | None:
    """The check for values of ``attribute_type``; None when any value passes
    (no type, ``location``, ``(list location)``, a type the emulator does not know).

    Looked up once per type, so a bulk request of 1000 profiles pays the
    parsing of a type name once, not once per value.
    """
    if attribute_type is None:
        return None
    listed = _LIST.fullmatch(attribute_type)
    if listed is None:
        return _SCALARS.get(attribute_type)  # location and unknown types: None
    if listed.group(1) not in _LIST_ITEMS:
        return None  # (list location) and unknown list types: any value
    check_item = _SCALARS[listed.group(1)]

    def check_list(value: Any) -> str | None:
        if not isinstance(value, list):
            return f"got {kind(value)}"
        for index, item in enumerate(value):
            problem = check_item(item)
            if problem is not None:
                return f"item {index} {problem}"
        return None
    return check_list


def type_problem(attribute_type: str | None, value: Any) -> str | None:
    """Why ``value`` cannot be written to an attribute of ``attribute_type``; None if it can.

    ``attribute_type`` None means the attribute exists with no known type:
    any value passes. The reason reads after the expected type, e.g.
    ``"got a string"`` or ``"item 2 got a boolean"``.
    """
    check = checker(attribute_type)
    return None if check is None else check(value)


def expectation(attribute_type: str) -> str:
    """What a value of ``attribute_type`` must be, for the error's details."""
    listed = _LIST.fullmatch(attribute_type)
    item = listed.group(1) if listed else attribute_type
    wanted = {
        "string": "a JSON string",
        "number": "a JSON number (not a boolean, not a string)",
        "boolean": "true or false",
        "time": "an RFC 3339 date-time string with an offset, e.g. 2024-05-01T12:30:00.000Z",
    }.get(item, "any value")
    return f"a list whose items are each {wanted}" if listed else wanted
