"""The emulator's request parsing: orjson where it reads as json.loads does, else json.loads."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from talon_classic.emulator.routes import _no_constants, parse_json


def std(data: bytes):
    try:
        return json.loads(data, parse_constant=_no_constants)
    except ValueError as exc:
        return type(exc)


def ours(data: bytes):
    try:
        return parse_json(data)
    except ValueError as exc:
        return type(exc)


@pytest.mark.parametrize("data", [
    b'{"a": 1}', b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'[1e400]',
    b'{"a": 12345678901234567890123}', b'{"a": 1234567890123456789.5}', b'{"a": "\\ud800"}',
    b'\xef\xbb\xbf{"a": 1}', '{"a": 1}'.encode("utf-16"), b'{"a": 1, "a": 2}', b'{"a": "\xff"}',
    b'[' * 2000 + b']' * 2000, b'{"a": "x\ty"}', b' {"a": -0} ', b'{"a": 1.0e5}', b'',
])
def test_bodies_parse_as_json_loads_parses_them(data: bytes) -> None:
    try:
        expected = std(data)
    except RecursionError:
        with pytest.raises(RecursionError):
            parse_json(data)
        return
    assert ours(data) == expected
    if isinstance(expected, dict):
        assert list(ours(data)) == list(expected)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(value=json_values, spaces=st.booleans())
def test_any_json_text_parses_as_json_loads_parses_it(value, spaces: bool) -> None:
    data = json.dumps(value, separators=(", ", ": ") if spaces else (",", ":")).encode()
    assert repr(ours(data)) == repr(std(data))
