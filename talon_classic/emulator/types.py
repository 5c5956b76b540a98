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
from typing import Any

#: Talon.One's attribute types.
TYPES = ("string", "number", "boolean", "time", "(list string)", "(list number)",
         "(list time)", "location", "(list location)")

#: RFC 3339 ``date-time`` as Talon.One (Go's ``time.RFC3339``) parses it: a full date,
#: ``T``, a full time with optional fraction digits, and ``Z`` or a numeric offset.
#: Upper-case ``T`` and ``Z`` only, no spaces, no bare dates.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:Z|[+-](\d{2}):(\d{2}))",
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
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if not 1 <= month <= 12 or not 1 <= day <= _days_in_month(year, month):
        return False
    if hour > 23 or minute > 59 or second > 59:
        return False
    off_hour, off_minute = match.group(7), match.group(8)
    return off_hour is None or (int(off_hour) <= 23 and int(off_minute) <= 59)


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


def _scalar_problem(attribute_type: str, value: Any) -> str | None:
    if attribute_type == "string":
        return None if isinstance(value, str) else f"got {kind(value)}"
    if attribute_type == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"got {kind(value)}"
    if attribute_type == "boolean":
        return None if isinstance(value, bool) else f"got {kind(value)}"
    if attribute_type == "time":
        if not isinstance(value, str):
            return f"got {kind(value)}"
        return None if is_rfc3339(value) else "got a string that is not an RFC 3339 date-time"
    return None  # location and types the emulator does not know: any value


def type_problem(attribute_type: str | None, value: Any) -> str | None:
    """Why ``value`` cannot be written to an attribute of ``attribute_type``; None if it can.

    ``attribute_type`` None means the attribute exists with no known type:
    any value passes. The reason reads after the expected type, e.g.
    ``"got a string"`` or ``"item 2 got a boolean"``.
    """
    if attribute_type is None:
        return None
    listed = _LIST.fullmatch(attribute_type)
    if listed is None:
        return _scalar_problem(attribute_type, value)
    item_type = listed.group(1)
    if item_type not in ("string", "number", "time"):
        return None  # (list location) and unknown list types: any value
    if not isinstance(value, list):
        return f"got {kind(value)}"
    for index, item in enumerate(value):
        problem = _scalar_problem(item_type, item)
        if problem is not None:
            return f"item {index} {problem}"
    return None


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
