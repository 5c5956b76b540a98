"""The reading stage's rules: the same decisions in a worker as in the main process."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from talon_classic.intake import Intake, RawEvent, Skipped, original, reread
from talon_classic.jsonio import loads, loads_quick
from talon_classic.schema import Schema
from talon_classic.transform import Engine

PERSONAS = {"computation_class": "audience", "computation_key": "VIP Users",
            "computation_id": "aud_1", "space_id": "spa_1"}


def in_process(intake: Intake, line: bytes) -> Any:
    """What the main process decides for a line it decoded itself."""
    try:
        event = loads(line)
    except ValueError as bad:
        return Skipped(getattr(bad, "reason", None), str(bad), False)
    return intake.digest(intake.unwrap(event))


def as_worker(intake: Intake, lines: list[bytes]) -> list[Any]:
    """What a worker process decides: a pickled copy of ``intake``, its results pickled."""
    copy = pickle.loads(pickle.dumps(intake))
    outcomes, _ = pickle.loads(pickle.dumps(copy(lines)))
    return outcomes


events = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8)
identify = st.fixed_dictionaries(
    {"userId": st.one_of(st.text(max_size=4), st.integers(), st.none()),
     "traits": st.dictionaries(st.sampled_from(["email", "plan", "age", "address", "x"]),
                               events, max_size=4)},
    optional={"type": st.sampled_from(["identify", "track", "IDENTIFY", 3]),
              "timestamp": st.sampled_from(["2024-01-01T00:00:00Z", "yesterday", 17, None]),
              "context": st.just({"personas": PERSONAS})})
lines = st.lists(st.one_of(identify.map(lambda e: json.dumps(e).encode()),
                           st.binary(max_size=12), events.map(lambda e: json.dumps(e).encode())),
                 max_size=20)


@settings(max_examples=150, deadline=None)
@given(lines, st.booleans(), st.sampled_from(["attributes", "both"]))
def test_a_worker_decides_every_line_as_the_main_process(batch: list[bytes], replay: bool,
                                                         engage: str) -> None:
    engine = Engine(["email", "plan", "address_*", "age"], engage_audiences=engage)
    intake = Intake(engine, replay_dead_letters=replay)
    if replay:
        batch = [b'{"event": %s, "reason": "rejected"}' % line if line.startswith(b"{")
                 else line for line in batch]
    expected = [in_process(intake, line) for line in batch]
    got = as_worker(intake, batch)
    for want, have in zip(expected, got, strict=True):
        if type(want) is Skipped:
            assert have == want
        else:  # kept: the decoded event rides along only when it carries a membership
            assert have[:4] == want[:4]


def test_an_engine_with_a_schema_reaches_the_worker_as_its_recipe() -> None:
    schema = Schema({"age": "number", "vip_users": "boolean"}, source="test")
    intake = Intake(Engine(["age"], schema, engage_audiences="both"))
    copy = pickle.loads(pickle.dumps(intake))
    assert copy.engine.schema is not None and dict(copy.engine.schema.items()) == dict(
        schema.items())
    assert copy.engine.allowlist == ("age",) and copy.engine.engage_audiences == "both"
    line = b'{"userId": "u", "traits": {"age": "42"}}'
    assert copy([line])[0][0][:4] == ("u", {"age": 42}, None, [])


def test_new_engage_names_are_reported_once_and_memberships_come_decoded() -> None:
    intake = Intake(Engine(["email"], engage_audiences="both"))
    line = json.dumps({"userId": "u", "traits": {"VIP Users": True}, "context":
                       {"personas": PERSONAS}}).encode()
    (kept,), names = intake([line])
    assert names == ["vip_users"] and kept[4] == loads(line)
    (_,), again = intake([line])
    assert again == []
    plain = Intake(Engine(["email"]))
    ((_, _, _, _, event),), _ = plain([line])
    assert event is None  # no membership: the main process keeps the line, not the event


def test_a_raw_event_decodes_as_the_reader_would() -> None:
    line = b'{"event": {"userId": "u"}, "reason": "rejected"}'
    assert RawEvent(line, inner=False).decode() == loads(line)
    assert RawEvent(line, inner=True).decode() == {"userId": "u"}
    assert RawEvent(b"[1]", inner=True).decode() == [1]
    assert original(RawEvent(line, inner=True)) == {"userId": "u"}
    assert original({"a": 1}) == {"a": 1}


def test_profiles_are_checked_as_identify_profiles_checks_them() -> None:
    intake = Intake(Engine([]), profiles=True)
    good = {"integrationId": "u", "attributes": {"a": 1},
            "timestamps": {"a": [1700000000.0, 3]}}
    bad = {"integrationId": "u", "attributes": {"a": 1}, "timestamps": {}}
    out, _ = intake([json.dumps(good).encode(), json.dumps(bad).encode()])
    assert out[0] == ("u", {"a": 1}, 1700000000.0, [], good)  # the record: its own keys
    assert out[1].reason == "invalid_profile"
    assert out[1].error == "timestamps has no key for attribute 'a'"


# -- reading quickly, exact all the same ------------------------------------------------------

#: Numbers orjson reads differently from the standard library (beyond 64 bits: floats), the
#: floats that look like them, and the ones that do not.
NUMBERS = st.one_of(
    st.sampled_from(["18446744073709551615", "18446744073709551616", "-9223372036854775808",
                     "-9223372036854775809", "1" + "0" * 30, "9223372036854775808.0", "1e30",
                     "-1e19", "1e300", "42", "2.5", "9007199254740993"]),
    st.integers(-10**40, 10**40).map(str), st.floats(allow_nan=False,
                                                     allow_infinity=False).map(repr))
_value = st.recursive(
    NUMBERS | st.sampled_from(['"s"', "true", "null"]),
    lambda inner: st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]")
    | st.lists(st.tuples(st.sampled_from(['"a"', '"b"', '"a_b"']), inner), max_size=3).map(
        lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}"),
    max_leaves=6)
ENGAGE_SCORE = ',"context":{"personas":{"computation_class":"computed_trait",' \
    '"computation_key":"score"}}'


def _event_text(uid: str, traits: list[tuple[str, str]], engage: bool, etype: str) -> bytes:
    members = ",".join(f"{k}:{v}" for k, v in traits)
    return ('{"type":' + etype + ',"userId":' + uid + ',"traits":{' + members + "}"
            + (ENGAGE_SCORE if engage else "") + "}").encode()


quick_events = st.builds(
    _event_text,
    st.one_of(NUMBERS, st.just('"u"')),
    st.lists(st.tuples(st.sampled_from(['"age"', '"score"', '"x"', '"tags"', '"n"']), _value),
             max_size=4),
    st.booleans(),
    # mostly identify; else a type the skip message shows as it is (a number, a list)
    st.one_of(st.just('"identify"'), st.just('"identify"'), _value))


@settings(max_examples=300, deadline=None)
@given(quick_events, st.booleans())
def test_an_event_read_quickly_is_transformed_as_one_read_exactly(line: bytes,
                                                                   typed: bool) -> None:
    """orjson makes a float of an integer beyond 64 bits; whatever the engine makes of such
    a float, the line is read again exactly, so every outcome is the exact reader's."""
    schema = Schema({"age": "string", "x_a": "number", "score": "string"}, source="test") \
        if typed else None
    engine, alone = (Engine(["age", "x_*", "tags", "n"], schema) for _ in range(2))
    exact = loads(line)
    result = engine.transform(loads_quick(line))
    if result.approximate:
        result = reread(engine, line)
    assert result == alone.transform(exact) and repr(result) == repr(alone.transform(exact))
    # the Engage names it learnt too (a worker hands them to the run, which creates them)
    assert engine.engage_names == alone.engage_names
    intake = Intake(engine)
    assert intake.digest(loads_quick(line), line) == intake.digest(exact)
    assert as_worker(intake, [line]) == [intake.digest(exact)]


@pytest.mark.parametrize("line", [
    # an Engage computed trait holding a long integer: dropped, so its name is not learnt
    b'{"userId":"u","traits":{"score":{"k":100000000000000000000}}' + ENGAGE_SCORE.encode()
    + b'}',
    # the skip message shows the type as it is
    b'{"type":[100000000000000000000],"userId":"u"}',
])
def test_what_a_quick_reading_gets_wrong_leaves_no_trace(line: bytes) -> None:
    engine, alone = Engine([]), Engine([])
    result = engine.transform(loads_quick(line))
    assert result.approximate
    assert reread(engine, line) == alone.transform(loads(line))
    assert repr(reread(engine, line)) == repr(alone.transform(loads(line)))
    assert engine.engage_names == alone.engage_names


def test_a_long_integer_read_quickly_is_still_dropped_and_an_id_still_exact() -> None:
    engine = Engine(["big", "f"])
    line = b'{"userId": 100000000000000000000000000000, "traits": {"big": 1' + b"0" * 25 + \
        b', "f": 1e30}}'
    quick = engine.transform(loads_quick(line))
    assert quick.approximate and quick.integration_id == "1e+29"  # what orjson alone gives
    result = reread(engine, line)
    assert result.integration_id == "1" + "0" * 29  # (still approximate: f is 1e30)
    assert result.attributes == {"f": 1e30} and result.dropped == [("big", "unsupported_value")]
    wrapped = b'{"event": %s, "reason": "rejected"}' % line
    assert reread(engine, wrapped, Intake(engine, replay_dead_letters=True).unwrap) == result
