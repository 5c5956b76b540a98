"""Reading compacted profiles back: the shared-key fast path equals parsing in full.

:func:`~talon_classic.compact.profiles.parse_line` reads a line whose
attributes share one ordering key by parsing the key once; whatever the
line holds, the record (and :func:`~talon_classic.compact.profiles.check`'s
verdict on it) must be what :func:`~talon_classic.jsonio.loads` gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from talon_classic.compact import profiles
from talon_classic.compact.output import ProfileWriter
from talon_classic.compact.profiles import check, fast_line, parse_line, read_profile_records
from talon_classic.exceptions import BadLine
from talon_classic.jsonio import dumps_bytes, loads

pytestmark = pytest.mark.skipif(profiles._orjson is None, reason="the fast path needs orjson")


def outcome(line: bytes, parse=loads):
    """(record, check's verdict) or the BadLine's message, ``line`` read by ``parse``."""
    try:
        record = parse(line)
    except BadLine as exc:
        return str(exc)
    return record, check(record)


def fast_outcome(line: bytes):
    return outcome(line, parse_line)


names = st.one_of(st.sampled_from(["plan", "email", "a", "b", "timestamps", "x]", 'q"', "é",
                                   ',"timestamps":{', "[1.0,2]", "\ud800"]),
                  st.text(max_size=4))
stamp = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False),
                  st.integers(-2**70, 2**70), st.booleans(), st.text(max_size=2))
key = st.one_of(st.lists(stamp, min_size=0, max_size=3), st.tuples(stamp, st.integers(-5, 2**65)),
                stamp)
values = st.one_of(st.none(), st.integers(-2**70, 2**70), st.text(max_size=3),
                   st.lists(st.integers(), max_size=2), st.floats(allow_nan=False))


@st.composite
def lines(draw) -> bytes:
    """Compacted lines, mostly as ``compact`` writes them, often slightly off."""
    attrs = draw(st.dictionaries(names, values, max_size=5))
    shared = draw(key)
    stamps = {n: shared for n in attrs}
    for n in draw(st.lists(names, max_size=2)):  # a name of its own, or another key
        stamps[n] = draw(key)
    record = {"integrationId": draw(st.one_of(st.just("u1"), st.text(max_size=3), st.none())),
              "attributes": attrs, "timestamps": stamps}
    if draw(st.booleans()):
        record = dict(reversed(list(record.items())))
    text = dumps_bytes(record)
    edit = draw(st.sampled_from(["none", "none", "spaces", "cut", "byte", "dup"]))
    if edit == "spaces":
        text = text.replace(b":", b": ")
    elif edit == "cut" and text:
        text = text[:draw(st.integers(0, len(text) - 1))]
    elif edit == "byte" and text:
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.sampled_from([b"]", b"}", b"0", b",", b"\xff", b'"']))
        text += dumps_bytes(record)[at + 1:]
    elif edit == "dup":
        text = text[:-1] + b',"timestamps":' + dumps_bytes(stamps) + b"}"
    return text


@settings(max_examples=600, deadline=None)
@given(line=lines())
def test_parse_line_reads_every_line_as_loads_does(line: bytes) -> None:
    assert fast_outcome(line) == outcome(line)


@pytest.mark.parametrize("line", [
    b'{"integrationId":"u","attributes":{"a":1},"timestamps":{"a":[5.0,1]}}',
    b'{"integrationId":"u","attributes":{"a":1,"b":2},"timestamps":{"a":[null,3],"b":[null,3]}}',
    b'{"integrationId":"u","attributes":{"a":1,"timestamps":{"a":[1,2]}},"timestamps":{"a":[1,2]}}',
    b'{"integrationId":"u","attributes":{"a":1},"timestamps":{"a":[12345678901234567890123,1]}}',
    b'{"integrationId":"u","attributes":{"a":12345678901234567890123},"timestamps":{"a":[1.5,1]}}',
    b'{"integrationId":"u","attributes":{"a":[1,{"b":[-98765432109876543210]}]},'
    b'"timestamps":{"a":[1.5,1]}}',
    b'{"integrationId":"u","x":18446744073709551616,"attributes":{"a":1},"timestamps":{"a":[1,1]}}',
    b'{"integrationId":"u","attributes":{"a":1e300,"b":-9.3e18},"timestamps":{"a":[1,1],"b":[1,1]}}',
    b'{"integrationId":"u","attributes":{"a":1},"timestamps":{"a":["soon",1]}}',
    b'{"integrationId":"u","attributes":{"a":1},"timestamps":{"a":[1.5]}}',
    b'{"integrationId":"u","attributes":{"a":1},"timestamps":{"a":[1.5,1,2]}}',
    b'{"integrationId":"u","attributes":{"a":1},"timestamps":{"a":[1.5,true]}}',
    b'{"integrationId":"u","attributes":{"a":1,"b":1},"timestamps":{"a":[1,1],"b":[1,1]},'
    b'"timestamps":{"a":[2,2]}}',
    b'{"integrationId":"u","attributes":{"a":1},"timestamps":{"a":[1.5,1],"a":[1.5,1]}}',
    b'{"integrationId":"u","attributes":{"a":1},"timestamps":{"a":[NaN,1]}}',
    b'{,"timestamps":{"a":[1,1]}}',
])
def test_edge_lines_read_as_loads_reads_them(line: bytes) -> None:
    assert fast_outcome(line) == outcome(line)


def test_what_compact_writes_takes_the_fast_path_and_shares_one_key(tmp_path: Path) -> None:
    out = tmp_path / "p.jsonl"
    writer = ProfileWriter(str(out))
    writer.write("u1", {"plan": "pro", "email": "e@x.io"}, {"plan": [5.0, 7], "email": [5.0, 7]})
    writer.write("u2", {"plan": "free", "email": "f"}, {"plan": [5.0, 7], "email": [None, 9]})
    writer.close()
    first, second = out.read_bytes().splitlines()
    record = fast_line(first)
    assert record == json.loads(first)
    assert record is not None and record["timestamps"]["plan"] is record["timestamps"]["email"]
    assert check(record) == (None, 5.0)
    assert fast_line(second) is None  # two keys: parsed in full
    assert [r.event for r in read_profile_records([str(out)])] == [
        json.loads(first), json.loads(second)]


def test_parquet_records_equal_the_jsonl_ones(tmp_path: Path) -> None:
    rows = [("u1", {"b": [1], "a": "x"}, {"b": [2.5, 3], "a": [2.5, 3]}),
            ("u2", {"a": "y"}, {"a": [None, 4]}),
            ("u3", {"a": "z", "b": 2}, {"a": [1.0, 1], "b": [3.0, 2]})]
    got = {}
    for suffix in ("jsonl", "parquet"):
        writer = ProfileWriter(str(tmp_path / f"p.{suffix}"))
        for row in rows:
            writer.write(*row)
        writer.close()
        got[suffix] = [r.event for r in read_profile_records([str(tmp_path / f"p.{suffix}")])]
    assert got["parquet"] == got["jsonl"]
    assert [check(r) for r in got["parquet"]] == [(None, 2.5), (None, None), (None, 3.0)]


@pytest.mark.parametrize(("line", "verdict"), [
    (b'{"integrationId":"\\ud800","attributes":{},"timestamps":{}}',
     "integrationId holds a lone surrogate, so it is not text and cannot be sent"),
    (b'{"integrationId":"u","attributes":{"a":1},"timestamps":{"a":[NaN,1]}}', "timestamps.a: "),
    (b'{"integrationId":"u","attributes":{"a":1},"timestamps":{"a":[Infinity,1]}}',
     "timestamps.a: "),
    (b'{"integrationId":"u","attributes":{"a":1},"timestamps":{"a":[1' + b"0" * 400 + b',1]}}',
     "timestamps.a: "),
    (b'{"integrationId":"u","attributes":{"a":1,"b":1},"timestamps":{"a":[1.0,1],"b":[1'
     + b"0" * 400 + b',2]}}', "timestamps.b: "),
    (b'{"integrationId":"u","attributes":{"a":1},"timestamps":{"a":[1' + b"0" * 300 + b',1]}}',
     None),
])
def test_check_refuses_an_id_or_a_timestamp_the_event_path_would_not_take(line, verdict) -> None:
    """A timestamp must be a finite number a float holds (the ledger's; NaN is its "none")."""
    for parse in (loads, parse_line):
        found = check(parse(line))[0]
        assert (found if verdict is None or found is None else found[:len(verdict)]) == verdict


def test_sendable_attributes_follow_the_event_path() -> None:
    """What the engine would drop as unsupported_value is dropped; nulls are left out unsaid."""
    from talon_classic.transform import Engine, sendable_attributes

    attrs = loads(b'{"ok":"x","n":NaN,"s":"\\ud800","big":' + b"9" * 400 + b',"l":[1,null,2],'
                  b'"bad":[1,Infinity],"o":{"k":1},"z":null,"\\ud800k":1,"f":1e300,"t":true}')
    sent, dropped = sendable_attributes(attrs)
    assert sent == {"ok": "x", "l": [1, 2], "f": 1e300, "t": True}
    assert dropped == [(n, "unsupported_value") for n in ("n", "s", "big", "bad", "o", "\\ud800k")]
    # the same verdicts as the event path on the same (flat) traits, the object aside
    flat = {k: v for k, v in attrs.items() if k != "o"}
    result = Engine(list(flat)).transform({"userId": "u", "traits": flat})
    assert (result.attributes, result.dropped) == (sent, [d for d in dropped if d[0] != "o"])
    plain = {"a": "x", "b": 2, "c": [1, 2]}
    assert sendable_attributes(plain) == (plain, []) and sendable_attributes(plain)[0] is plain
