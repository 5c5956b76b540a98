"""Coercion and validation, type by type, as the typed-attributes contract's table says.

Values are compared with their JSON text, so ``42`` and ``42.0`` (or ``1``
and ``True``) are never taken for one another.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from talon_classic.coerce import (
    KNOWN_TYPES,
    MISMATCH,
    accepted_as_is,
    coerce,
    coercer,
    compile_types,
    conforms,
    format_time,
    is_rfc3339,
)


def same(a: Any, b: Any) -> bool:
    """Equal as JSON (types included), or both MISMATCH."""
    if a is MISMATCH or b is MISMATCH:
        return a is b
    return json.dumps(a) == json.dumps(b)


CASES = [
    # string
    ("string", "  Ann ", "  Ann "), ("string", "", ""), ("string", 42, "42"),
    ("string", -7, "-7"), ("string", 4.0, "4.0"), ("string", 4.5, "4.5"),
    ("string", 1e20, "1e+20"), ("string", 1e-7, "1e-07"), ("string", True, "true"),
    ("string", False, "false"), ("string", ["a"], MISMATCH), ("string", {}, MISMATCH),
    ("string", None, MISMATCH), ("string", 10**5000, MISMATCH),
    ("string", float("nan"), MISMATCH),
    # number
    ("number", 42, 42), ("number", 12.5, 12.5), ("number", "42", 42),
    ("number", " -1.5e3 ", -1500.0), ("number", "1e3", 1000.0), ("number", "0.5", 0.5),
    ("number", "-0", 0), ("number", "1E+2", 100.0), ("number", "\t7\n", 7),
    ("number", "01", MISMATCH), ("number", "+5", MISMATCH), ("number", ".5", MISMATCH),
    ("number", "5.", MISMATCH), ("number", "", MISMATCH), ("number", "0x1f", MISMATCH),
    ("number", "NaN", MISMATCH), ("number", "Infinity", MISMATCH), ("number", "1e400", MISMATCH),
    ("number", "1_000", MISMATCH), ("number", "١٢", MISMATCH), ("number", "1" * 5000, MISMATCH),
    ("number", True, MISMATCH), ("number", "12 points", MISMATCH), ("number", [1], MISMATCH),
    ("number", float("inf"), MISMATCH), ("number", None, MISMATCH),
    # boolean
    ("boolean", True, True), ("boolean", False, False), ("boolean", "TRUE", True),
    ("boolean", " False\n", False), ("boolean", "yes", MISMATCH), ("boolean", "1", MISMATCH),
    ("boolean", 1, MISMATCH), ("boolean", 0, MISMATCH), ("boolean", [True], MISMATCH),
    # time
    ("time", "2024-05-01", "2024-05-01T00:00:00.000Z"),
    ("time", "2024-05-01T12:30:00+02:00", "2024-05-01T10:30:00.000Z"),
    ("time", " 2024-05-01 08:15:30.25 ", "2024-05-01T08:15:30.250Z"),
    ("time", "2024-05-01T12:30:59.9999999Z", "2024-05-01T12:30:59.999Z"),
    ("time", "2024-05-01T12:30:00.000Z", "2024-05-01T12:30:00.000Z"),
    ("time", "2024-05-01T00:30:00-01:00", "2024-05-01T01:30:00.000Z"),
    ("time", "2024-05-01T00:30:00+01:00", "2024-04-30T23:30:00.000Z"),
    ("time", "0005-01-01T00:00:00Z", "0005-01-01T00:00:00.000Z"),
    ("time", 1714566600, "2024-05-01T12:30:00.000Z"),
    ("time", 1714566600123, "2024-05-01T12:30:00.123Z"),
    ("time", 1700000000000, "2023-11-14T22:13:20.000Z"),
    ("time", 99_999_999_999, "5138-11-16T09:46:39.000Z"),
    ("time", 100_000_000_000, "1973-03-03T09:46:40.000Z"),
    ("time", -86400, "1969-12-31T00:00:00.000Z"), ("time", 0, "1970-01-01T00:00:00.000Z"),
    ("time", 1714566600.123, "2024-05-01T12:30:00.123Z"),
    ("time", 1714566600.1239, "2024-05-01T12:30:00.123Z"),
    ("time", -0.0005, "1969-12-31T23:59:59.999Z"),
    ("time", "yesterday", MISMATCH), ("time", "1714566600", MISMATCH), ("time", True, MISMATCH),
    ("time", "2024-02-30", MISMATCH), ("time", "2024-05-01T24:00:00", MISMATCH),
    ("time", "0001-01-01T00:00:00+01:00", MISMATCH), ("time", 10**20, MISMATCH),
    ("time", 10**400, MISMATCH), ("time", ["2024-05-01"], MISMATCH), ("time", None, MISMATCH),
    # lists
    ("(list string)", ["gold", 7, 2.5, True], ["gold", "7", "2.5", "true"]),
    ("(list number)", [7, "13", " 2.5 ", "1e2"], [7, 13, 2.5, 100.0]),
    ("(list time)", ["2024-05-01", 1714566600], ["2024-05-01T00:00:00.000Z",
                                                 "2024-05-01T12:30:00.000Z"]),
    ("(list string)", [], []), ("(list number)", [1, "two"], MISMATCH),
    ("(list string)", "gold", MISMATCH), ("(list number)", 7, MISMATCH),
    ("(list string)", [["a"]], MISMATCH),
    # passed through
    ("location", "52.52;13.40", "52.52;13.40"), ("location", 7, 7),
    ("(list location)", ["48.85;2.35", 7], ["48.85;2.35", 7]),
    ("legacyType", " 01 ", " 01 "), ("List String", [1], [1]),
]


@pytest.mark.parametrize(("kind", "value", "expected"), CASES,
                         ids=[f"{c[0]}:{c[1]!r:.30}" if not isinstance(c[1], int) or
                              abs(c[1]) < 10**30 else f"{c[0]}:huge" for c in CASES])
def test_table(kind: str, value: Any, expected: Any) -> None:
    got = coerce(value, kind)
    assert same(got, expected), (got, expected)
    if got is not MISMATCH:
        assert conforms(got, kind)


def test_type_names_are_exact() -> None:
    """``Number`` is not ``number``: an unknown type, so the value passes unchanged."""
    assert coerce("42", "Number") == "42"
    assert coercer("number") is coercer("number")  # compiled once per type


def test_mismatch_is_a_falsy_singleton() -> None:
    assert repr(MISMATCH) == "MISMATCH" and not MISMATCH


def test_format_time_naive_is_utc_and_cuts() -> None:
    assert format_time(datetime(2024, 5, 1, 1, 2, 3, 999999)) == "2024-05-01T01:02:03.999Z"
    east = timezone(timedelta(hours=5, minutes=30))
    assert format_time(datetime(2024, 5, 1, 5, 30, tzinfo=east)) == "2024-05-01T00:00:00.000Z"


@pytest.mark.parametrize(("value", "ok"), [
    ("2024-05-01T12:30:00Z", True), ("2024-05-01T12:30:00.123456789Z", True),
    ("2024-05-01T12:30:00+02:00", True), ("2024-05-01T12:30:00-23:59", True),
    ("2024-02-29T00:00:00Z", True),
    ("2024-05-01", False), ("2024-05-01T12:30:00", False), ("2024-05-01 12:30:00Z", False),
    ("2024-05-01t12:30:00Z", False), ("2024-05-01T12:30:00z", False),
    ("2024-05-01T12:30Z", False), ("2024-05-01T12:30:00+0200", False),
    ("2024-05-01T12:30:00+24:00", False), ("2023-02-29T00:00:00Z", False),
    ("2024-05-01T12:30:60Z", False), ("2024-13-01T00:00:00Z", False),
    (" 2024-05-01T12:30:00Z", False), (1714566600, False), (None, False),
])
def test_rfc3339(value: Any, ok: bool) -> None:
    assert is_rfc3339(value) is ok


@pytest.mark.parametrize(("kind", "good", "bad"), [
    ("string", ["", "x"], [1, True, None, ["x"]]),
    ("number", [0, -1.5, 10**30], [True, "1", float("nan"), float("inf"), None, [1]]),
    ("boolean", [True, False], [1, "true", None]),
    ("time", ["2024-05-01T12:30:00.000Z"], ["2024-05-01", 1714566600, None]),
    ("(list string)", [[], ["a"]], [["a", 1], "a", None]),
    ("(list number)", [[1, 2.5]], [[1, True], [1, "2"]]),
    ("(list time)", [["2024-05-01T00:00:00Z"]], [["2024-05-01"]]),
    ("location", [None, 1, "x", [1], {}], []),
    ("(list location)", ["x", [1]], []),
    ("somethingNew", [None, {}], []),
])
def test_conforms(kind: str, good: list[Any], bad: list[Any]) -> None:
    assert all(conforms(v, kind) for v in good)
    assert not any(conforms(v, kind) for v in bad)


def test_compiled_types() -> None:
    compiled = compile_types({"a": "string", "b": "time", "c": "location", "d": "(list string)"})
    assert compiled.as_is["a"] == frozenset({str})
    assert compiled.as_is["b"] == frozenset() and compiled.as_is["d"] == frozenset()
    assert {str, int, float, bool, list, dict} <= compiled.as_is["c"]
    assert compiled.coercers["b"](0) == "1970-01-01T00:00:00.000Z"
    assert accepted_as_is("number") == frozenset({int, float})


# -- properties --------------------------------------------------------------------------
offsets = st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-23 * 60, 23 * 60))
moments = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31),
                       timezones=st.one_of(st.none(), st.just(UTC), offsets))
time_texts = st.one_of(
    moments.map(lambda d: d.isoformat()),
    moments.map(lambda d: d.isoformat(sep=" ", timespec="milliseconds")),
    moments.map(lambda d: d.date().isoformat()),
    moments.map(lambda d: format_time(d)),
)
number_texts = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"\s?-?(0|[1-9][0-9]{0,3})(\.[0-9]{1,3})?([eE][+-]?[0-9]{1,3})?\s?",
                  fullmatch=True),
)
scalars = st.one_of(
    st.text(max_size=8), st.sampled_from(["true", " FALSE ", "yes", "", "01", "+5"]),
    number_texts, time_texts, st.booleans(),
    st.integers(min_value=-10**15, max_value=10**15), st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4))
types = st.sampled_from(KNOWN_TYPES + ("legacyType",))
EXAMPLES = settings(max_examples=400, deadline=None)


@EXAMPLES
@given(values, types)
def test_coercing_twice_changes_nothing(value: Any, kind: str) -> None:
    once = coerce(value, kind)
    if once is not MISMATCH:
        assert same(coerce(once, kind), once)


@EXAMPLES
@given(values, types)
def test_every_coerced_value_conforms(value: Any, kind: str) -> None:
    once = coerce(value, kind)
    if once is not MISMATCH:
        assert conforms(once, kind), (value, kind, once)


@EXAMPLES
@given(values, st.sampled_from(("string", "number", "boolean", "(list string)",
                                "(list number)", "location", "legacyType")))
def test_a_conforming_value_is_sent_unchanged(value: Any, kind: str) -> None:
    if conforms(value, kind):
        assert same(coerce(value, kind), value)


@EXAMPLES
@given(moments)
def test_rfc3339_times_are_coerced_to_the_same_instant(moment: datetime) -> None:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.isoformat(timespec="microseconds")
    assert is_rfc3339(text.replace("+00:00", "Z"))
    out = coerce(text, "time")
    assert out is not MISMATCH
    back = datetime.fromisoformat(out)
    assert timedelta(0) <= moment - back < timedelta(milliseconds=1)
