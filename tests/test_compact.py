"""Compaction on the local engine (DuckDB): exact, against an in-memory oracle.

The oracle (tests/compact_oracle.py) folds every event in input order with
the streaming merge's rule, and the streaming Merger itself (with room for
every profile) must agree with it; compaction must give the same values,
the same ordering keys, one record per integrationId, sorted.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path

import pytest
from compact_oracle import ExplodingEngine, fold, merger_profiles, read_output
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from talon_classic.compact import CompactSummary, compact, events
from talon_classic.exceptions import CompactError

ALLOW = ["a", "b", "c", "email", "plan", "name"]
STAMPS = [None, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "2026-01-02T00:00:00Z",
          "2026-01-01T01:00:00+01:00", "not a time", "2026-01-02"]


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def as_map(records: list[dict]) -> dict[str, dict]:
    return {r["integrationId"]: {"attributes": r["attributes"], "timestamps": r["timestamps"]}
            for r in records}


event_strategy = st.fixed_dictionaries(
    {"userId": st.sampled_from(["u0", "u1", "u2", "u3", " u1 ", 7]),
     "traits": st.dictionaries(st.sampled_from(["a", "b", "c", "zz"]),
                               st.one_of(st.integers(-3, 3), st.text(max_size=3), st.booleans(),
                                         st.none()), max_size=3)},
    optional={"timestamp": st.sampled_from(STAMPS), "type": st.sampled_from(["identify", "track"])},
)
line_strategy = st.one_of(event_strategy, event_strategy, event_strategy,
                          st.sampled_from(["{not json", "   ", "[1,2]", '{"type":"identify"}']))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.lists(line_strategy, max_size=25), min_size=1, max_size=3))
def test_duckdb_equals_the_oracle(tmp_path_factory, files) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    paths = [write_jsonl(tmp / f"in{i}.jsonl", lines) for i, lines in enumerate(files)]
    out = tmp / "out.jsonl"
    summary = compact([str(p) for p in paths], ALLOW, str(out), workers=1)
    got = read_output(out)
    want = fold(paths, ALLOW)
    assert as_map(got) == want
    assert [r["integrationId"] for r in got] == sorted(want)  # one per id, sorted
    # the oracle is the streaming merge's own rule
    assert {i: p["attributes"] for i, p in want.items()} == merger_profiles(paths, ALLOW)
    assert summary.profiles_written == len(want)


def test_far_apart_users_in_an_unsorted_file_come_out_newest_wins(tmp_path: Path) -> None:
    """Events of u1 further apart than the streaming ordering window (100,000 profiles),
    the older one last: its value must not win."""
    lines = [{"userId": "u1", "timestamp": "2026-03-01T00:00:00Z", "traits": {"plan": "new"}}]
    lines += [{"userId": f"x{i}", "timestamp": "2026-02-01T00:00:00Z", "traits": {"a": i}}
              for i in range(100_001)]
    lines += [{"userId": "u1", "timestamp": "2026-01-01T00:00:00Z",
               "traits": {"plan": "old", "email": "u1@x.io"}}]
    src = write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    compact([str(src)], ALLOW, str(out), workers=2)
    got = as_map(read_output(out))
    assert got["u1"]["attributes"] == {"plan": "new", "email": "u1@x.io"}
    assert got["u1"]["timestamps"]["plan"] == [1772323200.0, 0]
    assert len(got) == 100_002


def test_workers_and_blocks_do_not_change_the_output(tmp_path: Path, monkeypatch) -> None:
    lines = [{"userId": f"u{i % 37}", "timestamp": STAMPS[i % len(STAMPS)],
              "traits": {"a": i, "b": i % 3}} for i in range(3000)]
    lines[5] = "{broken"
    lines[700] = "   "
    paths = [write_jsonl(tmp_path / "a.jsonl", lines[:1700]),
             write_jsonl(tmp_path / "b.jsonl", lines[1700:])]
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    compact([str(p) for p in paths], ALLOW, str(one), workers=1)
    monkeypatch.setattr(events, "BLOCK_BYTES", 512)  # dozens of blocks, out of order
    s = compact([str(p) for p in paths], ALLOW, str(two), workers=2)
    assert one.read_bytes() == two.read_bytes()
    assert as_map(read_output(two)) == fold(paths, ALLOW)
    assert s.events_read == 2999 and s.skipped["invalid_json"] == 1


def test_bad_input_is_reported_counted_and_the_rest_goes_on(tmp_path: Path) -> None:
    good = {"userId": "u1", "traits": {"plan": "pro"}}
    raw = (json.dumps(good).encode() + b"\n"
           + b"{nope\n"
           + b'{"userId": "u2", "traits": {"plan": "\xff"}}\n'
           + b"x" * 2000 + b"\n"
           + json.dumps({"type": "track", "userId": "u3"}).encode() + b"\n"
           + json.dumps({"traits": {"plan": "x"}}).encode() + b"\n"
           + json.dumps({"userId": "u4", "traits": {"plan": "free", "nope": 1}}).encode() + b"\n")
    src = tmp_path / "in.jsonl"
    src.write_bytes(raw)
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(gzip.compress(json.dumps({"userId": "u5", "traits": {"plan": "gz"}}).encode()
                                 + b"\n" + b'{"userId": "u6"}\n' * 2000)[:-40])
    out = tmp_path / "out.jsonl"
    warnings: list[str] = []
    s = compact([str(src), str(gz)], ALLOW, str(out), workers=1, max_line_bytes=1024,
                warn=warnings.append)
    assert s.skipped == {"invalid_json": 2, "line_too_long": 1, "not_identify": 1,
                         "no_user_id": 1, "truncated_input": 1}
    assert [w.split(": ")[0] for w in warnings] == [
        f"{src}:2", f"{src}:3", f"{src}:4", f"{gz}:{warnings[-1].split(':')[1]}"]
    assert "line_too_long: line is longer than 1024 bytes (2000 bytes)" in warnings[2]
    assert "truncated_input" in warnings[3]
    assert s.dropped_names == {"not_allowlisted": {"nope": 1}}
    got = as_map(read_output(out))
    assert got["u1"]["attributes"] == {"plan": "pro"} and got["u4"]["attributes"] == {"plan": "free"}
    assert got["u5"]["attributes"] == {"plan": "gz"} and got["u6"]["attributes"] == {}


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz", "out.parquet"])
def test_every_output_format_holds_the_same_records_and_is_private(tmp_path: Path, name) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"userId": "b", "timestamp": "2026-01-01T00:00:00Z", "traits": {"plan": "pro", "a": 1.5}},
        {"userId": "a", "traits": {"name": "Ada \u00e9\U0001f600", "c": [1, "x", True]}},
        {"userId": "c", "traits": {"unlisted": 1}},
    ])
    out = tmp_path / name
    s = compact([str(src)], ALLOW, str(out), workers=1)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert read_output(out) == [
        {"integrationId": "a", "attributes": {"c": [1, "x", True], "name": "Ada \u00e9\U0001f600"},
         "timestamps": {"c": [None, 1], "name": [None, 1]}},
        {"integrationId": "b", "attributes": {"a": 1.5, "plan": "pro"},
         "timestamps": {"a": [1767225600.0, 0], "plan": [1767225600.0, 0]}},
        {"integrationId": "c", "attributes": {}, "timestamps": {}},
    ]
    assert s.profiles_written == 3
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".part")]


def test_gz_output_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": "u1", "traits": {"a": 1}}])
    compact([str(src)], ALLOW, str(tmp_path / "1.jsonl.gz"), workers=1)
    compact([str(src)], ALLOW, str(tmp_path / "2.jsonl.gz"), workers=1)
    assert (tmp_path / "1.jsonl.gz").read_bytes() == (tmp_path / "2.jsonl.gz").read_bytes()


def test_a_wrong_output_name_is_refused_before_reading(tmp_path: Path) -> None:
    with pytest.raises(CompactError, match=r"out\.csv: the output must end in \.jsonl"):
        compact([str(tmp_path / "missing.jsonl")], ALLOW, str(tmp_path / "out.csv"))


def test_the_summary_renders_like_identify_with_the_output(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": "u1", "traits": {"a": 1, "x": 2}}, "{"])
    s = compact([str(src)], ALLOW, str(tmp_path / "o.jsonl"), workers=1)
    assert isinstance(s, CompactSummary)
    text = s.render()
    assert "events read                   2" in text
    assert "not_allowlisted             1  top: x 1" in text
    assert f"profiles written              1  to {tmp_path / 'o.jsonl'} (duckdb, 1 worker)" in text
    d = s.as_dict()
    assert d["skipped"] == {"invalid_json": 1} and d["profiles_written"] == 1
    assert "profiles_upserted" not in d


def test_nothing_kept_writes_an_empty_output(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", ["{bad", {"type": "track", "userId": "u1"}, "  "])
    out = tmp_path / "out.jsonl"
    s = compact([str(src)], ALLOW, str(out), workers=1)
    assert out.read_bytes() == b"" and s.profiles_written == 0 and s.events_read == 2


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_transformer_stops_the_run_in_one_line_and_writes_nothing(
        tmp_path: Path, workers: int, monkeypatch) -> None:
    """The transformer given is the one the workers use; a bug in it is one line, no output."""
    monkeypatch.setattr(events, "BLOCK_BYTES", 16)  # not "small": really in worker processes
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": "u1", "traits": {"a": 1}},
                                              {"userId": "boom"}])
    out = tmp_path / "out.jsonl"
    with pytest.raises(CompactError, match=r"RuntimeError: boom; nothing was written$"):
        compact([str(src)], ALLOW, str(out), workers=workers,
                transformer=ExplodingEngine(ALLOW))
    assert not out.exists()
    assert os.listdir(tmp_path) == ["in.jsonl"]


def test_a_line_is_read_quickly_and_its_long_integers_exactly() -> None:
    from talon_classic.compact.lines import process_line
    from talon_classic.transform import Engine

    line = (b'{"userId": 100000000000000000000000000001, "timestamp": "2024-01-01T00:00:00Z",'
            b' "traits": {"age": 123456789012345678901234567890, "email": "a@example.com"}}')
    kept = process_line(line, 1, Engine(["age", "email"]), 1 << 20)
    assert kept.integration_id == "100000000000000000000000000001"  # not '1e+29'
    assert kept.attributes == {"email": "a@example.com"}
    assert kept.dropped == [("age", "unsupported_value")] and kept.timestamp == 1704067200.0
