"""JSON in and out for the whole package: the same results with or without orjson.

Every JSON text talon-classic reads (input lines, bodies sent to ``serve``,
spooled events, Talon.One's answers) goes through :func:`loads`; everything
it writes (request bodies, ``transform`` and dry-run lines, dead letters,
the spool, ``serve``'s answers) through :func:`dumps` or :func:`dumps_bytes`.
orjson (the ``fast`` extra) does the work when installed and when its result
is the standard library's; the standard library does the rest.

Reading, :func:`loads`:

* Standard JSON, plus ``NaN``, ``Infinity`` and ``-Infinity`` (Python's json
  reads them; the engine never sends them).
* Integers exactly, whatever their size. orjson reads integers beyond 64 bits
  as floats, so text holding 19 or more digits in a row is read by the
  standard library; an integer over Python's 4,300-digit limit for
  ``int(str)`` is converted here, without touching that process-wide limit.
* A lone surrogate escape (``"\\ud800"``) gives a str holding it. A str
  argument must be valid Unicode (no raw surrogate), as text decoded from
  UTF-8 always is.
* At most :data:`MAX_NESTING` levels of arrays and objects, whichever parser
  reads and however deep the caller's stack is: never a ``RecursionError``.
* Whatever is refused raises :class:`BadLine` with reason ``invalid_json``
  and a short message: ``Expecting value: column 7``, ``not valid UTF-8
  (byte 3)``, ``nested too deeply (more than 512 levels)``.

:func:`loads_quick` is :func:`loads` without the look for long integers,
for a caller that can tell whether its result used a float that may stand
for one: orjson reads an integer literal beyond 64 bits as a float of
magnitude at least :data:`INEXACT_FLOAT` (2**63), and nothing else differs.
The engine can tell (:attr:`talon_classic.transform.Result.approximate`),
and the readers of events read a line again with :func:`loads` when it
says so (:func:`talon_classic.intake.reread`). The look costs about a
quarter of reading an event (a pass over every byte), and events with such
a float are rare.

Writing, :func:`dumps` (str) and :func:`dumps_bytes` (UTF-8):

* Compact (no spaces), non-ASCII characters as they are.
* A lone surrogate is written as its ``\\udXXX`` escape (as Python's json
  does), so the output is always valid UTF-8.
* Integers in full, whatever their size; floats in the shortest form that
  reads back as the same float. The notation of a float can differ between
  orjson versions and the standard library (``1e-05`` / ``0.00001``,
  ``1e30`` / ``1e+30``): the number is the same. Everything else is
  byte-identical on both paths.
* ``NaN`` and infinities are written as ``null`` (as orjson and JavaScript
  do), so the output is always standard JSON.
* Any depth; tuples as arrays; dict keys that are int, float, bool or None
  as the standard library writes them.
* Anything else (a set, bytes, a datetime, a circular reference) raises
  :class:`Unserialisable`, naming the value's type and where it is. Only
  JSON values are in this contract: orjson also writes some other types
  (UUID, Enum), which must not be relied on.

So :func:`dumps` never fails on anything :func:`loads` returned, and
``loads(dumps(x)) == x`` for it, except that non-finite floats read back as
``None``.
"""

from __future__ import annotations

import decimal
import json
import math
import re
import sys
from typing import Any

from talon_classic.exceptions import BadLine, Unserialisable

__all__ = ["INEXACT_FLOAT", "MAX_NESTING", "BadLine", "Unserialisable", "dumps", "dumps_bytes",
           "loads", "loads_quick"]

#: Deepest nesting of arrays and objects :func:`loads` accepts.
MAX_NESTING = 512
#: The smallest magnitude of a float orjson makes of an integer literal (one beyond 64 bits):
#: below it, a float in what :func:`loads_quick` read was a float in the text.
INEXACT_FLOAT = float(2**63)

_fast: Any = None
try:  # the ``fast`` extra
    import orjson

    _fast = orjson
    _FAST_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    _FAST_OPTIONS = 0

# -- reading ---------------------------------------------------------------------------------

#: One pass for both checks of the fast path: digits become "0", "{" becomes "[".
_SHAPE = bytes.maketrans(b"0123456789{", b"0000000000[")
#: orjson turns integer literals outside 64 bits (19 digits or more) into floats.
_LONG_RUN = b"0" * 19
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_QUOTES_OR_BRACKETS = bytes(b for b in range(256) if b not in b'"[]{}')
#: Objects and arrays alike: ``{`` -> ``[``, ``}`` -> ``]``.
_PAIRS = bytes.maketrans(b"{}", b"[]")
_OPEN = ord("[")
#: Levels :func:`_too_deep` peels off at C speed before it counts bracket by bracket.
_QUICK_PASSES = 16
_TOO_DEEP = f"nested too deeply (more than {MAX_NESTING} levels)"
#: int(str) takes this many digits whatever sys.set_int_max_str_digits() was given (640)
_SAFE_DIGITS = sys.int_info.str_digits_check_threshold


def loads(data: bytes | str) -> Any:
    """Parse one JSON document; raise :class:`BadLine` (``invalid_json``) with a short message."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadLine("invalid_json", f"not valid Unicode (a lone surrogate at character "
                                          f"{exc.start + 1})") from None
    # nesting deeper than MAX_NESTING needs more than MAX_NESTING brackets and twice the bytes
    long = len(data) > 2 * MAX_NESTING
    if _fast is not None:
        shape = data.translate(_SHAPE)
        if long and shape.count(b"[") > MAX_NESTING and _too_deep(data):
            raise BadLine("invalid_json", _TOO_DEEP)
        # find, not ``in``: ``x in bytes`` first tries x as an integer, and the TypeError
        # it raises and clears costs about as much as the search itself
        if shape.find(_LONG_RUN) < 0:
            try:
                return _fast.loads(data)
            except (ValueError, RecursionError):
                pass  # the standard library reads what orjson refuses, or names the problem
    elif long and data.count(b"[") + data.count(b"{") > MAX_NESTING and _too_deep(data):
        raise BadLine("invalid_json", _TOO_DEEP)
    return _loads_std(data)


def loads_quick(data: bytes) -> Any:
    """:func:`loads`, except that an integer literal beyond 64 bits may be read as a float
    (of magnitude :data:`INEXACT_FLOAT` or more), as orjson reads it.

    Only for a caller that reads ``data`` again with :func:`loads` whenever its
    result depends on such a float; everything else (errors, nesting, what
    orjson refuses) is exactly :func:`loads`.
    """
    if _fast is None or type(data) is not bytes:
        return loads(data)
    # nesting deeper than MAX_NESTING needs more than MAX_NESTING brackets and twice the bytes
    if (len(data) > _SHORT and data.count(b"[") + data.count(b"{") > MAX_NESTING
            and _too_deep(data)):
        raise BadLine("invalid_json", _TOO_DEEP)
    try:
        return _fast.loads(data)
    except (ValueError, RecursionError):
        return _loads_std(data)


#: Texts this long at most cannot nest too deeply.
_SHORT = 2 * MAX_NESTING


def _too_deep(data: bytes) -> bool:
    """More than :data:`MAX_NESTING` levels of arrays and objects? Exact for valid JSON.

    Escapes go first, so every quote left opens or closes a string, and
    strings go before brackets are counted. Then each pass of ``bytes.replace``
    (C speed) removes every innermost ``[]`` pair, one level per pass: a
    request body of a thousand profiles has thousands of brackets but few
    levels, so a handful of passes settle it. What is still there after a
    few passes (deep, or not valid JSON) is counted bracket by bracket:
    linear whatever the text.
    """
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    # quotes and brackets only; then strings without brackets (most) go at C speed:
    # removing two adjacent quotes leaves every other byte inside or outside a string
    # as it was (an empty string, or two strings joined into one), as long as every
    # string is closed: with an odd number of quotes the pair removed could be a string's
    # end and the unclosed one's start, which would leave the first string unclosed
    kept = data.translate(_PAIRS, _NOT_QUOTES_OR_BRACKETS)
    if not kept.count(b'"') % 2:
        kept = kept.replace(b'""', b"")
    if b'"' in kept:  # strings holding brackets; then an unmatched quote, if any
        kept = _STRING.sub(b"", kept).replace(b'"', b"")
    brackets = kept
    rest = brackets
    for _ in range(_QUICK_PASSES):
        if not rest:
            return False
        shorter = rest.replace(b"[]", b"")
        if len(shorter) == len(rest):
            break  # not balanced: not JSON
        rest = shorter
    if not rest:
        return False
    return _deeper_than(brackets, MAX_NESTING)


def _deeper_than(brackets: bytes, limit: int) -> bool:
    """Do ``[`` / ``]`` bytes nest deeper than ``limit``, counted one by one?"""
    depth = 0
    for byte in brackets:
        if byte == _OPEN:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _loads_std(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine("invalid_json", f"not valid UTF-8 (byte {exc.start + 1})") from None
    try:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise
        except ValueError:  # an integer over Python's int(str) digit limit
            return json.loads(text, parse_int=_int_from_digits)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
        raise BadLine("invalid_json", f"{exc.msg}: {where}") from None
    except RecursionError:  # within MAX_NESTING, but the caller's stack is already deep
        raise BadLine("invalid_json", "nested too deeply") from None


def _int_from_digits(text: str) -> int:
    """``int(text)`` for any number of digits, without the process-wide digit limit.

    Divide and conquer, so the cost grows like the multiplication's
    (about 0.6 s for a million digits), not quadratically.
    """
    powers: dict[int, int] = {}

    def convert(start: int, end: int) -> int:
        if end - start <= _SAFE_DIGITS:
            return int(text[start:end])
        mid = (start + end) // 2
        low = end - mid
        power = powers.get(low)
        if power is None:
            power = powers[low] = 10**low
        return convert(start, mid) * power + convert(mid, end)

    if text.startswith("-"):
        return -convert(1, len(text))
    return convert(0, len(text))


# -- writing ---------------------------------------------------------------------------------

_STD = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_encode_string = json.encoder.encode_basestring
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def dumps(obj: Any) -> str:
    """Compact JSON text of ``obj``; raise :class:`Unserialisable` if it is not JSON data."""
    if _fast is not None:
        try:
            return _fast.dumps(obj, option=_FAST_OPTIONS).decode()
        except (TypeError, ValueError, RecursionError):
            pass  # a lone surrogate, a big integer, deep nesting, non-str keys...
    return _dumps_std(obj)


def dumps_bytes(obj: Any) -> bytes:
    """:func:`dumps` as UTF-8 bytes (always valid UTF-8)."""
    if _fast is not None:
        try:
            return _fast.dumps(obj, option=_FAST_OPTIONS)
        except (TypeError, ValueError, RecursionError):
            pass
    return _dumps_std(obj).encode("utf-8")


def _dumps_std(obj: Any) -> str:
    try:
        text = _STD.encode(obj)
    except (TypeError, ValueError, RecursionError):
        # NaN, an integer over the digit limit, very deep nesting, or not JSON data
        return _dumps_any(obj)
    return _escape_surrogates(text)


def _escape_surrogates(text: str) -> str:
    if text.isascii() or _LONE_SURROGATE.search(text) is None:
        return text
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _dumps_any(obj: Any) -> str:
    """The standard library's output for any JSON data, without recursion or digit limits.

    An explicit stack instead of recursion; NaN and infinities as ``null``.
    """
    parts: list[str] = []
    write = parts.append
    # each frame: [iterator of items, closing bracket, is an object, items written, key or index]
    stack: list[list[Any]] = []
    open_ids: set[int] = set()
    value = obj
    while True:
        if isinstance(value, str):
            write(_escape_surrogates(_encode_string(value)))
        elif value is None or isinstance(value, (bool, int, float)):
            write(_scalar(value))
        elif isinstance(value, (dict, list, tuple)):
            if id(value) in open_ids:
                raise Unserialisable(f"a circular reference{_where(stack)}")
            open_ids.add(id(value))
            if isinstance(value, dict):
                write("{")
                stack.append([iter(value.items()), "}", True, 0, None, value])
            else:
                write("[")
                stack.append([iter(value), "]", False, 0, None, value])
        else:
            raise Unserialisable(f"a {type(value).__name__} is not a JSON value{_where(stack)}")
        while stack:
            frame = stack[-1]
            item: Any = next(frame[0], _END)
            if item is _END:
                write(frame[1])
                open_ids.discard(id(frame[5]))
                stack.pop()
                continue
            if frame[3]:
                write(",")
            if frame[2]:
                key, value = item
                write(_key(key, stack))
                write(":")
                frame[4] = key
            else:
                frame[4] = frame[3]
                value = item
            frame[3] += 1
            break
        else:
            return "".join(parts)


_END = object()


def _scalar(value: None | bool | int | float) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return _int_text(value)
    return float.__repr__(value) if math.isfinite(value) else "null"


def _key(key: Any, stack: list[list[Any]]) -> str:
    """An object key as the standard library writes it (non-str keys become strings)."""
    if isinstance(key, str):
        return _escape_surrogates(_encode_string(key))
    if isinstance(key, float) and not math.isfinite(key):
        return '"NaN"' if math.isnan(key) else ('"Infinity"' if key > 0 else '"-Infinity"')
    if key is None or isinstance(key, (bool, int, float)):
        return f'"{_scalar(key)}"'
    where = _where(stack[:-1])  # the object holding the key
    raise Unserialisable(f"a {type(key).__name__} key is not a JSON object key{where}")


def _where(stack: list[list[Any]]) -> str:
    """`` at traits.a[3]`` for the frames open now; empty at the top level."""
    path = ""
    for frame in stack:
        key = frame[4]
        path += f"[{key}]" if not frame[2] else (f".{key}" if path else str(key))
    return f" at {path}" if path else ""


def _int_text(value: int) -> str:
    """The decimal digits of any integer, without the process-wide digit limit."""
    try:
        return int.__repr__(value)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows
        pass
    digits = _decimal_of(abs(value), abs(value).bit_length(), {})
    text = format(digits, "f")
    return "-" + text if value < 0 else text


def _decimal_of(value: int, bits: int, powers: dict[int, decimal.Decimal]) -> decimal.Decimal:
    """``Decimal(value)`` by halving the binary digits: fast even for millions of digits."""
    if bits <= 20_000:  # Decimal(int) is quadratic, but quick at this size
        return decimal.Decimal(value)
    half = bits // 2
    high = value >> half
    power = powers.get(half)
    if power is None:
        power = powers[half] = _EXACT.power(decimal.Decimal(2), half)
    return _EXACT.add(_EXACT.multiply(_decimal_of(high, bits - half, powers), power),
                      _decimal_of(value - (high << half), half, powers))
