"""The package's one JSON module: the same results with orjson and without it.

Every test that takes ``path`` runs twice: with orjson (the ``fast`` extra,
installed for the tests) and with the module's fast path switched off, as
on an install without it.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from talon_classic import jsonio
from talon_classic.exceptions import TalonClassicError
from talon_classic.jsonio import (
    INEXACT_FLOAT,
    MAX_NESTING,
    BadLine,
    Unserialisable,
    dumps,
    dumps_bytes,
    loads,
    loads_quick,
)

ORJSON = pytest.importorskip("orjson")


@pytest.fixture(params=["orjson", "stdlib"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "stdlib":
        monkeypatch.setattr(jsonio, "_fast", None)
    return request.param


def both(func: Any, *args: Any) -> tuple[Any, Any]:
    """``func(*args)`` with orjson, then without it."""
    with_fast = func(*args)
    saved, jsonio._fast = jsonio._fast, None
    try:
        return with_fast, func(*args)
    finally:
        jsonio._fast = saved


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# -- reading ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    (b'"\\ud800"', "\ud800"),
    (b'["\\udfff", "\\ud834\\udd1e"]', ["\udfff", "𝄞"]),
    (b"18446744073709551615", 2**64 - 1),
    (b"18446744073709551616", 2**64),  # orjson alone would give a float
    (b"-9223372036854775809", -(2**63) - 1),
    (b'{"id": "12345678901234567890", "n": 1}', {"id": "12345678901234567890", "n": 1}),
    (b"1" + b"0" * 400, 10**400),
    (b"-" + b"9" * 5000, -(10**5000 - 1)),  # over Python's 4,300-digit int(str) limit
    (b"[1e400, -1e400]", [math.inf, -math.inf]),
    (b'{"a": 1, "a": 2}', {"a": 2}),
    (b' {"x": [1.5, true, null]}\r', {"x": [1.5, True, None]}),
], ids=["surrogate", "surrogates", "u64", "2**64", "-2**63-1", "digits-in-string", "1e400",
        "5000-digits", "inf", "duplicate-key", "whitespace"])
def test_loads_reads_exactly_what_is_written(path: str, text: bytes, value: Any) -> None:
    got = loads(text)
    assert got == value
    assert type(got) is type(value)
    assert loads(text.decode()) == value  # str in, the same


def test_loads_reads_nan_as_pythons_json_does(path: str) -> None:
    got = loads(b'[NaN, Infinity, -Infinity]')
    assert math.isnan(got[0]) and got[1:] == [math.inf, -math.inf]


@pytest.mark.parametrize("text, message", [
    (b"{", "Expecting property name enclosed in double quotes: column 2"),
    (b'{"a": }', "Expecting value: column 7"),
    (b'{\n "a": }', "Expecting value: line 2 column 7"),
    (b'"\xff"', "not valid UTF-8 (byte 2)"),
    (b"", "Expecting value: column 1"),
    (b"[1] x", "Extra data: column 5"),
])
def test_loads_refuses_with_a_short_message(path: str, text: bytes, message: str) -> None:
    with pytest.raises(BadLine) as info:
        loads(text)
    assert (info.value.reason, str(info.value)) == ("invalid_json", message)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TalonClassicError)


def test_a_str_with_a_raw_surrogate_is_not_text(path: str) -> None:
    with pytest.raises(BadLine, match="lone surrogate at character 3"):
        loads('"a\ud800"')


def test_nesting_limit_is_exact_and_never_a_recursion_error(path: str) -> None:
    assert loads(nested(MAX_NESTING)) == deep_list(MAX_NESTING)
    assert loads(b'{"a":' * MAX_NESTING + b"1" + b"}" * MAX_NESTING)
    for depth in (MAX_NESTING + 1, 1000, 1024, 1025, 100_000):
        with pytest.raises(BadLine, match=r"^nested too deeply \(more than 512 levels\)$"):
            loads(nested(depth))
    with pytest.raises(BadLine, match="nested too deeply"):
        loads(b"[" * 100_000)  # unbalanced, too
    # brackets inside strings are text, not nesting
    text = b'["' + b"[" * 5000 + b'", "\\"]]]' + b"{" * 5000 + b'"]'
    assert loads(text) == ["[" * 5000, '"]]]' + "{" * 5000]


def _depth_one_by_one(text: bytes) -> int:
    """The deepest nesting of ``text``'s brackets outside strings, counted plainly."""
    import re

    depth = deepest = 0
    stripped = re.sub(rb'"[^"]*"', b"", re.sub(rb"\\.", b"", text, flags=re.DOTALL))
    for byte in stripped:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b"1", b","]),
                max_size=60),
       st.integers(0, MAX_NESTING + 3), st.integers(1, 3))
# a string, then an unclosed one: removing the adjacent quotes first left the first open
@example(noise=[b"]", b"]", b'"', b"]", b'"', b'"'], depth=515, width=1)
def test_too_deep_agrees_with_counting_one_by_one(noise: list[bytes], depth: int,
                                                   width: int) -> None:
    """Exact for valid JSON (the quick passes) and for any text (the one-by-one count)."""
    valid = (b"[" * depth + b"1" + b"]" * depth + b",") * width
    for text in (b"[" + valid + b"0]", b"".join(noise), b"".join(noise) + valid):
        assert jsonio._too_deep(text) == (_depth_one_by_one(text) > MAX_NESTING), text[:80]


def test_a_wide_shallow_document_is_settled_by_the_quick_passes() -> None:
    """A request body of a thousand profiles: thousands of brackets, three levels."""
    body = dumps_bytes([{"integrationId": f"u{i}", "attributes": {"tags": ["a", "b"]}}
                        for i in range(1000)])
    assert body.count(b"[") > MAX_NESTING and not jsonio._too_deep(body)
    assert len(loads(body)) == 1000


def test_a_deep_stack_cannot_turn_parsing_into_a_recursion_error(path: str) -> None:
    def at_depth(n: int) -> Any:
        return loads(nested(MAX_NESTING)) if n == 0 else at_depth(n - 1)

    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(700)
        try:  # 300 frames in, the standard library's parser runs out of stack
            got = at_depth(300)
        except BadLine as bad:
            assert str(bad) == "nested too deeply"
        else:
            assert path == "orjson" and got == deep_list(MAX_NESTING)  # orjson has its own stack
    finally:
        sys.setrecursionlimit(limit)


# -- writing ---------------------------------------------------------------------------------

def test_dumps_is_compact_utf8_and_identical_on_both_paths() -> None:
    doc = {"ü": "é \u2028 \x00 \x1f \x7f </script> 𝄞 \"q\" \\", "n": [1, -7, 2**64 - 1, 0, True,
           False, None], "nested": {"k": [{"x": []}, {}]}, "t": (1, "two")}
    text, plain = both(dumps, doc)
    assert text == plain
    assert text == json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    assert both(dumps_bytes, doc) == (text.encode(), text.encode())


@pytest.mark.parametrize("value, text", [
    ("\ud800", '"\\ud800"'),
    (["a\udfffb", {"k\udc80": "ok é"}], '["a\\udfffb",{"k\\udc80":"ok é"}]'),
    (2**64, "18446744073709551616"),
    (-(2**63) - 1, "-9223372036854775809"),
    (10**400, "1" + "0" * 400),
    (-(10**5000 - 1), "-" + "9" * 5000),
    ([math.nan, math.inf, -math.inf], "[null,null,null]"),
    ({1: "int key", None: 0, False: 1}, '{"1":"int key","null":0,"false":1}'),
], ids=["surrogate", "surrogate-key", "2**64", "-2**63-1", "1e400", "5000-digits", "nan",
        "keys"])
def test_dumps_writes_what_naive_encoders_refuse(value: Any, text: str) -> None:
    assert both(dumps, value) == (text, text)
    assert both(dumps_bytes, value) == (text.encode(), text.encode())


def test_dumps_writes_any_depth(path: str) -> None:
    for depth in (254, 255, 300, MAX_NESTING, 5000):
        assert dumps(deep_list(depth)) == "[" * depth + "]" * depth


def test_floats_are_the_same_number_on_both_paths() -> None:
    values = [0.1, 1.5e-7, 1e-05, 0.0001, 1e16, 1e22, 123456789.125, -0.0, 5e-324,
              1.7976931348623157e308, 2.0**63, 1e30]
    fast, plain = both(dumps, values)
    assert loads(fast) == loads(plain) == values
    assert plain == json.dumps(values, separators=(",", ":"))  # the standard library's spelling


def test_what_is_not_json_data_raises_unserialisable(path: str) -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    for value, message in [
        ({1, 2}, "a set is not a JSON value"),
        ({"a": [1, {"b": b"x"}]}, "a bytes is not a JSON value at a[1].b"),
        ({"when": __import__("datetime").date(2024, 1, 1)}, "a date is not a JSON value at when"),
        ({"a": cycle}, "a circular reference at a[0]"),
        ({(1, 2): "x"}, "a tuple key is not a JSON object key"),
        ([{"k": {(1,): 1}}], "a tuple key is not a JSON object key at [0].k"),
    ]:
        for encode in (dumps, dumps_bytes):
            with pytest.raises(Unserialisable) as info:
                encode(value)
            assert str(info.value) == message
            assert isinstance(info.value, ValueError) and isinstance(info.value, TalonClassicError)


def test_the_process_wide_digit_limit_is_left_alone(path: str) -> None:
    before = sys.get_int_max_str_digits()
    assert loads(dumps(10**5000)) == 10**5000
    assert sys.get_int_max_str_digits() == before


def test_request_bodies_match_the_standard_library() -> None:
    """Moved from test_client (``encode_body`` is now ``jsonio.dumps_bytes``)."""
    body = {"customerProfiles": [{"integrationId": "ü\u2028\"x", "attributes": {
        "f": 0.1, "big": 10**30, "neg": -7, "list": ["a", None, False], "nested": {"k": [1.0]},
    }}]}
    expected = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(dumps_bytes(body)) == json.loads(expected)
    assert dumps_bytes({1: "int key"}) == b'{"1":"int key"}'  # orjson refuses: stdlib answers


# -- the property: whatever loads accepts, dumps writes, and it reads back the same ---------

def _json_text() -> st.SearchStrategy[str]:
    """JSON texts the reader meets: lone surrogate escapes, huge and exact numbers, depth."""
    chars = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=("Cs",))
    escape = st.integers(0xD800, 0xDFFF).map(lambda c: f"\\u{c:04x}")
    pair = st.just("\\ud834\\udd1e")
    string = st.lists(st.one_of(chars.map(lambda c: json.dumps(c, ensure_ascii=False)[1:-1]),
                                escape, pair), max_size=6).map(lambda xs: '"' + "".join(xs) + '"')
    digits = st.integers(1, 30).flatmap(lambda n: st.from_regex(rf"-?[1-9][0-9]{{{n - 1}}}",
                                                                fullmatch=True))
    number = st.one_of(
        digits, st.sampled_from(["0", "-0", "18446744073709551616", "1" + "0" * 400,
                                 "9" * 4400, "1e400", "NaN", "-Infinity"]),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
    )
    scalar = st.one_of(string, number, st.sampled_from(["true", "false", "null"]))
    return st.recursive(
        scalar,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
            st.lists(st.tuples(string, inner), max_size=4).map(
                lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}"),
        ),
        max_leaves=20,
    )


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to itself."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b)


def _finite(value: Any) -> Any:
    """``value`` as it reads back after writing: NaN and infinities become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _depth(text: str) -> int:
    """Most arrays and objects open at once in JSON ``text`` (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


@settings(max_examples=300, deadline=None)
@given(_json_text(), st.sampled_from([0, 1, MAX_NESTING - 4]))
def test_whatever_loads_reads_dumps_writes_and_reads_back(text: str, wrap: int) -> None:
    # what the reader accepts: at most MAX_NESTING levels in all (deeper is tested apart)
    assume(wrap + _depth(text) <= MAX_NESTING)
    text = "[" * wrap + text + "]" * wrap
    data = text.encode()
    value, plain = both(loads, data)
    assert _same(value, plain)  # one reading, with orjson or without
    for written in (*both(dumps, value), *(b.decode() for b in both(dumps_bytes, value))):
        written.encode("utf-8")  # always valid UTF-8
        again, again_plain = both(loads, written)
        assert _same(again, _finite(value)) and _same(again_plain, again)


def _close(quick: Any, exact: Any) -> bool:
    """``quick`` is ``exact`` but for integers beyond 64 bits, read as floats of at least
    INEXACT_FLOAT in magnitude (what orjson makes of them)."""
    if type(exact) is int and type(quick) is float and not -2**63 <= exact < 2**64:
        return abs(quick) >= INEXACT_FLOAT and quick == float(exact)
    if isinstance(exact, list) and isinstance(quick, list):
        return len(exact) == len(quick) and all(map(_close, quick, exact))
    if isinstance(exact, dict) and isinstance(quick, dict):
        return exact.keys() == quick.keys() and all(_close(quick[k], exact[k]) for k in exact)
    return _same(quick, exact)


@settings(max_examples=300, deadline=None)
@given(_json_text().map(str.encode) | st.binary(max_size=20),
       st.sampled_from([0, MAX_NESTING, MAX_NESTING + 1]))
def test_loads_quick_is_loads_but_for_integers_beyond_64_bits(data: bytes, wrap: int) -> None:
    data = b"[" * wrap + data + b"]" * wrap
    try:
        exact = loads(data)
    except BadLine as bad:
        with pytest.raises(BadLine) as info:
            loads_quick(data)
        assert str(info.value) == str(bad) and info.value.reason == bad.reason
        return
    quick, plain = both(loads_quick, data)
    assert _close(quick, exact) and _same(plain, exact)  # without orjson: loads itself


def test_loads_quick_reads_what_orjson_reads() -> None:
    assert loads_quick(b"[18446744073709551616, 1]") == [2.0**64, 1]
    assert loads_quick(b"[1e400]") == [math.inf]  # orjson refuses: the standard library reads


def test_without_orjson_installed_the_module_uses_the_standard_library() -> None:
    import subprocess

    code = ("import sys; sys.modules['orjson'] = None\n"
            "from talon_classic import jsonio\n"
            "assert jsonio._fast is None\n"
            "v = jsonio.loads(b'[18446744073709551616, \"\\\\ud800\", 1e400]')\n"
            "print(jsonio.dumps(v))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == '[18446744073709551616,"\\ud800",null]\n'
