"""`talon-classic compact`, `identify --profiles` and `identify --compact`, end to end.

Delivery goes over real loopback HTTP to the emulator; a compacted backfill
must leave Talon.One exactly as the streaming `identify` does, with one
write per profile.
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from compact_oracle import fold, read_output
from resume_helpers import before_repairs, kill_after, resume

from talon_classic.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "identifies.jsonl"
SAMPLE_ALLOW = json.loads((ROOT / "samples" / "settings.json").read_text())["customAttributes"]
VECTORS = [json.loads(line) for line in
           (ROOT / "tests" / "data" / "identify.jsonl").read_text().splitlines() if line.strip()]
ALLOW = ["email", "plan", "name"]


def cli(*args: str, input: bytes | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "talon_classic.cli", *args]


def settings_for(path: Path, emu=None, allow=ALLOW) -> Path:
    data = {"customAttributes": allow}
    if emu is not None:
        data.update(apiKey=emu.api_key, applicationDomain=emu.url)
    path.write_text(json.dumps(data))
    return path


def write_jsonl(path: Path, events) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def state(emu) -> dict[str, dict]:
    return {p["integrationId"]: p["attributes"] for p in emu.profiles()}


def test_compact_prints_the_summary_and_writes_sorted_profiles(tmp_path: Path) -> None:
    out = tmp_path / "profiles.jsonl"
    result = cli("compact", str(SAMPLES), "--settings", str(ROOT / "samples" / "settings.json"),
                 "-o", str(out), "--workers", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert "events read                 234" in result.output
    assert "profiles written             40" in result.output
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    records = read_output(out)
    assert [r["integrationId"] for r in records] == sorted(r["integrationId"] for r in records)
    assert {r["integrationId"]: r for r in records} == {
        iid: {"integrationId": iid, **p} for iid, p in fold([SAMPLES], SAMPLE_ALLOW).items()}


def test_compact_json_summary_and_warnings_on_stderr(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"userId": "u1", "traits": {"plan": "a", "zip": 1}}\n{broken\n')
    result = subprocess.run(_cli("compact", str(src), "--custom-attribute", "plan", "-o",
                                 str(tmp_path / "o.jsonl.gz"), "--json", "--workers", "2"),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["skipped"] == {"invalid_json": 1} and data["profiles_written"] == 1
    assert data["dropped"] == {"not_allowlisted": {"count": 1, "top": {"zip": 1}}}
    assert data["exit_code"] == 0
    assert data["workers"] == 1  # an input this small is transformed in the main process
    assert result.stderr == f"{src}:2: invalid_json: Expecting property name enclosed in " \
        "double quotes: column 2\n"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "x.csv"], "x.csv: the output must end in .jsonl, .jsonl.gz or .parquet"),
    (["-o", "/no/such/dir/x.jsonl"], "no such directory /no/such/dir"),
    (["-o", "o.jsonl", "--spark-master", "local[2]"], "--spark-master is only used with "
                                                      "--engine spark"),
    (["-o", "o.jsonl", "--memory-limit", "lots"], "memory limit 'lots' is not a size"),
])
def test_compact_usage_errors_are_one_line(tmp_path: Path, args, message) -> None:
    os.chdir(tmp_path)
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": "u1"}])
    result = subprocess.run(_cli("compact", str(src), "--custom-attribute", "plan", *args),
                            capture_output=True, text=True)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.returncode == 2


def test_missing_input_and_the_output_as_input(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": "u1"}])
    gone = cli("compact", str(tmp_path / "gone.jsonl"), "-o", str(tmp_path / "o.jsonl"))
    assert gone.exit_code == 2 and "gone.jsonl: no such file" in gone.output
    same = cli("compact", str(src), "-o", str(src))
    assert same.exit_code == 2 and "is also an INPUT" in same.output


def test_samples_compacted_and_sent_equal_the_streaming_run(talon_emulator_factory,
                                                            tmp_path: Path) -> None:
    streamed, compacted = talon_emulator_factory(), talon_emulator_factory()
    s1 = settings_for(tmp_path / "s1.json", streamed, SAMPLE_ALLOW)
    s2 = settings_for(tmp_path / "s2.json", compacted, SAMPLE_ALLOW)
    first = cli("identify", str(SAMPLES), "--settings", str(s1), "--quiet",
                "--dead-letter", str(tmp_path / "d1.jsonl"))
    assert first.exit_code == 0, first.output
    out = tmp_path / "profiles.parquet"
    assert cli("compact", str(SAMPLES), "--settings", str(s2), "-o", str(out), "--quiet",
               "--workers", "1").exit_code == 0
    sent = cli("identify", str(out), "--profiles", "--settings", str(s2), "--quiet", "--json",
               "--dead-letter", str(tmp_path / "d2.jsonl"))
    assert sent.exit_code == 0, sent.output
    report = json.loads(sent.output)
    assert report["profiles_upserted"] == 40 and report["events_read"] == 40
    assert state(compacted) == state(streamed)
    assert compacted.stats()["profile_updates"] == 40  # one write per profile


def test_shared_vectors_compacted_and_sent_equal_the_streaming_run(talon_emulator_factory,
                                                                   tmp_path: Path) -> None:
    allow = VECTORS[0]["settings"]["customAttributes"]
    src = write_jsonl(tmp_path / "vectors.jsonl", [c["event"] for c in VECTORS])
    streamed, compacted = talon_emulator_factory(), talon_emulator_factory()
    s1 = settings_for(tmp_path / "s1.json", streamed, allow)
    s2 = settings_for(tmp_path / "s2.json", compacted, allow)
    assert cli("identify", str(src), "--settings", str(s1), "--quiet",
               "--dead-letter", str(tmp_path / "d1.jsonl")).exit_code == 0
    both = cli("identify", str(src), "--compact", "--settings", str(s2), "--quiet", "--json",
               "--dead-letter", str(tmp_path / "d2.jsonl"))
    assert both.exit_code == 0, both.output
    report = json.loads(both.output)
    assert report["events_read"] == len(VECTORS)  # the events behind the profiles
    assert report["skipped"] == json.loads(cli(
        "compact", str(src), "--settings", str(s2), "-o", str(tmp_path / "v.jsonl"), "--json",
        "--quiet").output)["skipped"]
    assert state(compacted) == state(streamed)
    assert state(compacted)


def test_identify_compact_merges_far_apart_users_where_streaming_cannot(talon_emulator_factory,
                                                                        tmp_path: Path) -> None:
    """u1's older event comes 3,000 profiles later; with a 1,000-profile ordering window the
    streaming run merges them in file order, --compact by timestamp."""
    events = [{"userId": "u1", "timestamp": "2026-03-01T00:00:00Z", "traits": {"plan": "new"}}]
    events += [{"userId": f"x{i}", "timestamp": "2026-02-01T00:00:00Z",
                "traits": {"email": f"{i}@x.io"}} for i in range(3000)]
    events += [{"userId": "u1", "timestamp": "2026-01-01T00:00:00Z", "traits": {"plan": "old"}}]
    src = write_jsonl(tmp_path / "unsorted.jsonl", events)
    emu = talon_emulator_factory()
    s = settings_for(tmp_path / "s.json", emu)
    result = cli("identify", str(src), "--compact", "--settings", str(s), "--quiet", "--json",
                 "--dead-letter", str(tmp_path / "d.jsonl"))
    assert result.exit_code == 0, result.output
    assert emu.profile("u1")["attributes"] == {"plan": "new"}
    assert emu.stats()["profile_updates"] == 3001
    assert json.loads(result.output)["profiles_upserted"] == 3001

    from talon_classic.bulk import Options, Pipeline
    from talon_classic.client import Client
    from talon_classic.transform import Engine

    small_window = talon_emulator_factory()
    with Client(small_window.url, small_window.api_key, rate_limit=0) as client:
        Pipeline(Engine(ALLOW), client, Options(ordering_window=1000)).run([str(src)])
    assert small_window.profile("u1")["attributes"] == {"plan": "old"}  # why compaction exists


def test_a_rejected_profile_is_dead_lettered_as_its_record(talon_emulator,
                                                           tmp_path: Path) -> None:
    """The dead letter of a compacted profile Talon.One refuses is the record on its line
    (the batch keeps the line, not the decoded record), in both timestamp layouts."""
    talon_emulator.configure(reject_ids=["bad1", "bad2"])
    one_key = {"integrationId": "bad1", "attributes": {"plan": "pro", "email": "a@x.io"},
               "timestamps": {"plan": [5.0, 1], "email": [5.0, 1]}}
    two_keys = {"integrationId": "bad2", "attributes": {"plan": "pro", "email": "b@x.io"},
                "timestamps": {"plan": [5.0, 1], "email": [None, 2]}}
    good = {"integrationId": "ok", "attributes": {"plan": "basic"},
            "timestamps": {"plan": [1.0, 0]}}
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n"
                           for r in (one_key, good, two_keys)))
    dead = tmp_path / "d.jsonl"
    result = cli("identify", str(src), "--profiles", "--quiet", "--settings",
                 str(settings_for(tmp_path / "s.json", talon_emulator)),
                 "--dead-letter", str(dead))
    assert result.exit_code == 1, result.output
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [(x["event"], x["reason"], x["input"]) for x in letters] == [
        (one_key, "rejected", f"{src}:1"), (two_keys, "rejected", f"{src}:3")]
    assert talon_emulator.profile("ok")["attributes"] == {"plan": "basic"}


def test_profiles_input_bad_records_are_skipped_counted_and_named(talon_emulator,
                                                                  tmp_path: Path) -> None:
    good = {"integrationId": "u1", "attributes": {"plan": "pro"}, "timestamps": {"plan": [1.0, 0]}}
    lines = [json.dumps(good), "{nope", json.dumps({"integrationId": "u2", "attributes": []}),
             json.dumps({"integrationId": "u3", "attributes": {"plan": "x"}, "timestamps": {}}),
             json.dumps({"integrationId": "", "attributes": {}, "timestamps": {}}),
             json.dumps({"integrationId": "u4", "attributes": {"plan": "y"},
                         "timestamps": {"plan": ["soon", 3]}})]
    src = tmp_path / "p.jsonl.gz"
    src.write_bytes(gzip.compress("\n".join(lines).encode() + b"\n"))
    s = settings_for(tmp_path / "s.json", talon_emulator)
    result = subprocess.run(_cli("identify", str(src), "--profiles", "--settings", str(s),
                                 "--json", "--dead-letter", str(tmp_path / "d.jsonl")),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["skipped"] == {"invalid_json": 1, "invalid_profile": 4}
    assert report["profiles_upserted"] == 1
    warned = result.stderr.splitlines()
    assert warned == [
        f"{src}:2: invalid_json: Expecting property name enclosed in double quotes: column 2",
        f"{src}:3: invalid_profile: attributes is missing or not an object",
        f"{src}:4: invalid_profile: timestamps has no key for attribute 'plan'",
        f"{src}:5: invalid_profile: integrationId is missing or not a non-empty string",
        f"{src}:6: invalid_profile: timestamps.plan is not [timestamp or null, position]",
    ]
    assert talon_emulator.profile("u1")["attributes"] == {"plan": "pro"}


@pytest.mark.parametrize(("flag", "message"), [
    ("--profiles", "--compact takes events"),
    ("--replay-dead-letters", "--compact takes events"),
    ("--dead-letter-skipped", "--dead-letter-skipped lists skipped events, which --compact"),
])
def test_compact_refuses_what_it_cannot_do(tmp_path: Path, flag, message) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": "u1"}])
    result = cli("identify", str(src), "--compact", flag, "--dry-run",
                 "--custom-attribute", "plan")
    assert result.exit_code == 2
    assert message in result.output


def test_profiles_dry_run_sends_the_record_as_it_is_without_timestamps(tmp_path: Path) -> None:
    record = {"integrationId": "u1", "attributes": {"plan": "pro", "n": 2},
              "timestamps": {"plan": [5.0, 1], "n": [None, 0]}}
    src = write_jsonl(tmp_path / "p.jsonl", [record])
    result = subprocess.run(_cli("identify", str(src), "--profiles", "--dry-run", "-q",
                                 "--custom-attribute", "plan", "--id-prefix", "seg-",
                                 "--application-domain", "https://x.talon.one"),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)["body"]
    # sent as it is (no allowlist applied again), without the ordering keys
    assert body == {"customerProfiles": [{"integrationId": "seg-u1",
                                          "attributes": {"plan": "pro", "n": 2}}]}


def test_sigkill_during_profiles_sending_then_resume_delivers_everything_once(
        talon_emulator_factory, tmp_path: Path) -> None:
    emu = talon_emulator_factory(rate_limit=0, latency_ms=40)
    events = [{"userId": f"user{i % 4000}", "timestamp": f"2024-01-01T00:00:{i % 60:02d}Z",
               "traits": {"plan": f"p{i}", "email": f"{i}@x.io"}} for i in range(10_000)]
    src = write_jsonl(tmp_path / "big.jsonl", events)
    s = settings_for(tmp_path / "s.json", emu)
    profiles = tmp_path / "profiles.jsonl.gz"
    assert cli("compact", str(src), "--settings", str(s), "-o", str(profiles), "-q",
               "--workers", "1").exit_code == 0
    ckpt = tmp_path / "run.checkpoint.json"
    common = [str(profiles), "--profiles", "--settings", str(s), "--checkpoint", str(ckpt),
              "--quiet", "--dead-letter", str(tmp_path / "d.jsonl")]
    acked = kill_after(_cli("identify", *common, "--batch-size", "50", "--concurrency", "2",
                            "--rate-limit", "80"), ckpt)
    total_batches = 80  # 4,000 profiles, 50 per batch
    assert 20 < acked < total_batches
    before = len(emu.requests(limit=100000))
    report = resume(_cli("identify", *common, "--resume", "--json", "--concurrency", "4",
                         "--rate-limit", "0", "--read-timeout", "2"))
    assert report["batches_resumed"] == acked
    resent = before_repairs(emu.requests(limit=100000)[before:], report)
    assert len(resent) == total_batches - acked
    want = fold([src], ALLOW)
    assert state(emu) == {iid: p["attributes"] for iid, p in want.items()}
    # a resume cannot change what the inputs are
    again = subprocess.run(_cli("identify", str(profiles), "--compact", "--settings", str(s),
                                "--checkpoint", str(ckpt), "--resume", "--quiet"),
                           capture_output=True, text=True)
    assert again.returncode == 2
    assert "cannot resume with --compact True (the run used False)" in again.stderr


def test_compaction_refuses_engage_memberships_it_would_lose(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": "u1"}])
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"customAttributes": ["plan"], "apiKey": "k",
                                    "applicationDomain": "https://x.talon.one",
                                    "engageAudiences": "memberships"}))
    for args in (["compact", str(src), "-o", str(tmp_path / "o.jsonl")],
                 ["identify", str(src), "--compact", "--dry-run"]):
        result = cli(*args, "--settings", str(settings))
        assert result.exit_code == 2, result.output
        assert "compaction keeps profile attributes only, and engageAudiences is " \
               "'memberships'" in result.output
    assert not (tmp_path / "o.jsonl").exists()


def test_compact_with_a_schema_types_as_identify_does(talon_emulator_factory,
                                                        tmp_path: Path) -> None:
    """--schema FILE: values coerced to Talon.One's types, unknown attributes dropped;
    sending the typed file leaves Talon.One as the typed streaming run does."""
    from talon_classic.schema import Schema, write_schema_file

    types = {"email": "string", "plan": "string", "age": "number"}
    schema = tmp_path / "schema.json"
    write_schema_file(Schema(types), schema)
    events = write_jsonl(tmp_path / "in.jsonl", [
        {"type": "identify", "userId": "u1", "timestamp": "2026-01-01T00:00:00Z",
         "traits": {"email": "a@x.io", "age": "42", "name": "Ann"}},
        {"type": "identify", "userId": "u2", "timestamp": "2026-01-01T00:00:00Z",
         "traits": {"plan": "pro", "age": "old"}},
    ])
    settings = settings_for(tmp_path / "s.json", allow=["email", "plan", "name", "age"])
    out = tmp_path / "p.jsonl"
    result = cli("compact", str(events), "--settings", str(settings), "--schema", str(schema),
                 "-o", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"schema: from {schema} (3 attributes)\n")
    assert "unknown_attribute" in result.output and "type_mismatch" in result.output
    assert {r["integrationId"]: r["attributes"] for r in read_output(out)} == {
        "u1": {"email": "a@x.io", "age": 42}, "u2": {"plan": "pro"}}
    as_json = json.loads(cli("compact", str(events), "--settings", str(settings), "--schema",
                             str(schema), "-o", str(out), "--quiet", "--json").output)
    assert as_json["schema"] == {"origin": f"from {schema}", "attributes": 3}

    compacted, streamed = (talon_emulator_factory(attributes=types) for _ in range(2))
    for emu, args in ((compacted, [str(out), "--profiles"]), (streamed, [str(events)])):
        sent = cli("identify", *args, "--settings", str(settings_for(
            tmp_path / "e.json", emu, allow=["email", "plan", "name", "age"])),
            "--schema", str(schema), "--no-state", "--quiet")
        assert sent.exit_code == 0, sent.output
    assert state(compacted) == state(streamed) == {"u1": {"email": "a@x.io", "age": 42},
                                                   "u2": {"plan": "pro"}}


def _ledger_rows(path: Path) -> dict[str, list]:
    import sqlite3

    with sqlite3.connect(path) as db:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                for table in ("ledger_shapes", "ledger_profiles", "ledger_uncertain")}


def test_profiles_fast_path_leaves_what_the_general_path_leaves(talon_emulator_factory,
                                                                tmp_path: Path,
                                                                monkeypatch) -> None:
    """Lines sharing one ordering key are read by the fast path (compact.profiles.fast_line);
    with it turned off every line is parsed in full. Both must give the same emulator state,
    summaries and ledger, over bad records, a second run with superseded values and a resume."""
    from talon_classic.compact import profiles as profile_reading

    def record(iid, attrs, key, **other):
        return {"integrationId": iid, "attributes": attrs,
                "timestamps": {**{n: key for n in attrs}, **other}}

    first = [record("a", {"email": "a@x.io", "plan": "pro"}, [100.0, 1]),
             record("b", {"plan": "free"}, [None, 2]),
             record("c", {"email": "c@x.io", "plan": "x"}, [50.0, 3], plan=[70.0, 4]),
             "{nope",
             record("d", {"plan": 3}, [1.5, "x"]),
             record("e", {"plan": "y"}, [2.0, 5], email=[3.0, 6]),
             {"integrationId": "f", "attributes": {"plan": "z"}, "timestamps": {}},
             record("", {"plan": "q"}, [1.0, 7])]
    first += [record(f"u{i}", {"email": f"{i}@x.io"}, [float(i), i]) for i in range(40)]
    second = [record("a", {"email": "old@x.io", "plan": "older"}, [90.0, 1]),
              record("b", {"plan": "newer"}, [10.0, 1]),
              record("c", {"email": "c2@x.io"}, [60.0, 2]),
              record("u1", {"email": "1@x.io"}, [1.0, 1])]
    monkeypatch.setattr(profile_reading, "_orjson", profile_reading._orjson)  # undone after
    files = []
    for name, lines in (("first", first), ("second", second)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join((x if isinstance(x, str) else
                                 json.dumps(x, separators=(",", ":"))) + "\n" for x in lines))
        files.append(path)
    fast_lines = [profile_reading.fast_line(line) is not None
                  for line in files[0].read_bytes().splitlines()]
    assert fast_lines[:3] == [True, True, False] and sum(fast_lines) == 44
    outcome = {}
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(profile_reading, "_orjson", None)
        emu = talon_emulator_factory()
        s = settings_for(tmp_path / f"s-{fast}.json", emu, ["email", "plan"])
        run_state = tmp_path / f"state-{fast}.db"
        reports = []
        for path in files:
            ckpt = tmp_path / f"{path.stem}-{fast}.ckpt"
            common = [str(path), "--profiles", "--settings", str(s), "--state", str(run_state),
                      "--checkpoint", str(ckpt), "--batch-size", "10", "--concurrency", "1",
                      "--json", "--quiet", "--dead-letter", str(tmp_path / f"d-{fast}.jsonl"),
                      "--dead-letter-skipped"]
            for extra in ([], ["--resume"]):
                result = cli("identify", *common, *extra)
                assert result.exit_code == 0, result.output
                report = json.loads(result.output.strip().splitlines()[-1])
                reports.append({k: v for k, v in report.items()
                                if k not in ("elapsed_s", "seconds", "peak_rss_mb", "rate",
                                             "events_per_s", "state_file", "dead_letter")})
        outcome[fast] = (state(emu), reports, _ledger_rows(run_state),
                         (tmp_path / f"d-{fast}.jsonl").read_text().splitlines())
    assert outcome[True] == outcome[False]
    emu_state, reports, ledger, dead = outcome[True]
    assert reports[0]["skipped"] == {"invalid_json": 1, "invalid_profile": 3}
    assert len(dead) == 4
    assert (reports[0]["requests"], reports[1]["batches_resumed"]) == (5, 5)  # all resumed
    assert reports[2]["dropped"]["superseded"] == {"count": 2, "top": {"email": 1, "plan": 1}}
    assert reports[2]["profiles_current"] == 1
    assert emu_state["a"] == {"email": "a@x.io", "plan": "pro"}  # older values superseded
    assert emu_state["b"] == {"plan": "newer"}
    # c's email was at 50 and its plan at 70: each attribute's own timestamp reached the
    # ledger (not the profile's newest), so an email at 60 is newer and goes
    assert emu_state["c"] == {"email": "c2@x.io", "plan": "x"}
    assert len(ledger["ledger_profiles"]) == 44  # a, b, c, e, u0..u39


def test_an_input_reached_through_a_link_is_not_overwritten(tmp_path: Path) -> None:
    """Found by an adversarial pass: the "also an INPUT" check compared names, so a symbolic
    or hard link replaced the raw events with their compaction."""
    src = write_jsonl(tmp_path / "same.jsonl", [{"userId": "u1", "traits": {"plan": "a"}}])
    (tmp_path / "alias.jsonl").symlink_to(src)
    os.link(src, tmp_path / "hard.jsonl")
    before = src.read_bytes()
    s = settings_for(tmp_path / "s.json")
    for name in ("alias.jsonl", "hard.jsonl"):
        result = cli("compact", str(tmp_path / name), "--settings", str(s), "-o", str(src))
        assert result.exit_code == 2, result.output
        assert f"{src}: is also an INPUT" in result.output
    assert src.read_bytes() == before


def test_a_temp_dir_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": "u1", "traits": {"plan": "a"}}])
    result = cli("compact", str(src), "--settings", str(settings_for(tmp_path / "s.json")),
                 "-o", str(tmp_path / "o.jsonl"), "--temp-dir", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "'--temp-dir': Directory" in result.output and "does not exist" in result.output


def _profile_line(iid: str, attributes: str, stamps: str) -> str:
    """A hand-written record line: the JSON text of its parts as given (NaN, long integers,
    lone surrogate escapes stay as written)."""
    return f'{{"integrationId":{iid},"attributes":{{{attributes}}},"timestamps":{{{stamps}}}}}\n'


def test_profiles_values_the_event_path_would_not_send_are_dropped_or_skipped(
        talon_emulator, tmp_path: Path) -> None:
    """The event path's value rules hold for hand-edited records: what it drops as
    unsupported_value is dropped (the rest of the profile sent), and an integrationId it
    would refuse, or a timestamp that is not a finite number, skips the record as
    invalid_profile, naming the field; with the state file (ledger) the run ends cleanly."""
    huge, vast = "1" + "0" * 400, "1" + "0" * 5000
    ab = '"a":[1.0,1],"b":[1.0,1]'
    src = tmp_path / "p.jsonl"
    src.write_text("".join([
        _profile_line('"h1"', '"a":NaN,"b":1', ab),
        _profile_line('"h2"', '"a":"\\ud800","b":2', ab),
        _profile_line('"h3"', f'"a":{huge},"b":3', ab),
        _profile_line('"h4"', f'"a":{vast},"b":4', ab),
        _profile_line('"h5"', '"a":[1,Infinity],"b":5,"\\ud800c":6', ab + ',"\\ud800c":[1.0,1]'),
        _profile_line('"h6"', '"a":[1,null,2],"b":null', ab),
        _profile_line('"\\ud800"', '"a":1', '"a":[1.0,1]'),
        _profile_line('"t1"', '"a":1', '"a":[NaN,1]'),
        _profile_line('"t2"', '"a":1', f'"a":[{huge},1]'),
        _profile_line('"t3"', '"a":1,"b":2', '"a":[1.0,1],"b":[-Infinity,2]'),
    ]))
    s = settings_for(tmp_path / "s.json", talon_emulator, ["a", "b"])
    dead = tmp_path / "d.jsonl"
    result = subprocess.run(_cli("identify", str(src), "--profiles", "--settings", str(s),
                                 "--json", "--state", str(tmp_path / "st.db"),
                                 "--dead-letter", str(dead)),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["skipped"] == {"invalid_profile": 4}
    assert report["dropped"]["unsupported_value"] == {
        "count": 6, "top": {"a": 5, "\\ud800c": 1}}
    assert (report["profiles_upserted"], report["dead_lettered"]) == (6, 0)
    assert not dead.exists()
    not_finite = "the timestamp is not a finite number (NaN, an infinity or too large)"
    assert result.stderr.splitlines() == [
        f"{src}:7: invalid_profile: integrationId holds a lone surrogate, so it is not text "
        "and cannot be sent",
        f"{src}:8: invalid_profile: timestamps.a: {not_finite}",
        f"{src}:9: invalid_profile: timestamps.a: {not_finite}",
        f"{src}:10: invalid_profile: timestamps.b: {not_finite}",
    ]
    assert state(talon_emulator) == {"h1": {"b": 1}, "h2": {"b": 2}, "h3": {"b": 3},
                                     "h4": {"b": 4}, "h5": {"b": 5}, "h6": {"a": [1, 2]}}


def test_a_damaged_parquet_input_is_refused_before_anything_is_sent(talon_emulator,
                                                                    tmp_path: Path) -> None:
    """Every Parquet input's footer and columns are checked up front: a truncated file (or
    one without the columns as text) after a good input is a usage error, nothing sent."""
    good = tmp_path / "good.jsonl"  # more than a batch: sent before the bad one is read
    good.write_text("".join(json.dumps({"integrationId": f"u{i}", "attributes": {"plan": "pro"},
                                        "timestamps": {"plan": [1.0, i]}}) + "\n"
                            for i in range(1500)))
    whole = tmp_path / "whole.parquet"
    result = cli("compact", str(SAMPLES), "--custom-attribute", "plan", "-o", str(whole),
                 "--quiet")
    assert result.exit_code == 0, result.output
    data = whole.read_bytes()
    trunc = tmp_path / "trunc.parquet"
    trunc.write_bytes(data[:len(data) // 2])
    import duckdb

    typed = tmp_path / "typed.parquet"
    duckdb.sql(f"COPY (SELECT 1 AS integrationId, '{{}}' AS attributes, '{{}}' AS timestamps) "
               f"TO '{typed}'")
    s = settings_for(tmp_path / "s.json", talon_emulator)
    for bad, why in ((trunc, "No magic bytes found at end of file"),
                     (typed, "column integrationId is INTEGER, not text")):
        result = subprocess.run(_cli("identify", str(good), str(whole), str(bad), "--profiles",
                                     "--settings", str(s)), capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"Error: {bad}: not a compacted-profile Parquet file (")
        assert why in line and result.stdout == ""
        assert talon_emulator.stats()["profiles"] == 0  # not the inputs before it either
    result = subprocess.run(_cli("identify", str(good), str(whole), "--profiles", "--settings",
                                 str(s), "--json"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["profiles_upserted"] == 1540
