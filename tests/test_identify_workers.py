"""``identify --workers N``: the same run as in one process, on every core, end to end.

Each test runs ``identify`` as a user would, against the emulator over real
loopback HTTP, once with ``--workers 1`` (everything in the main process)
and once with ``--workers 3`` (lines decoded and transformed in worker
processes), and compares everything a user can see: the summary (every
counter, the top dropped names), the dead letters, the checkpoint, the
requests Talon.One received, and the profiles it holds in the end.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from resume_helpers import before_repairs, resume

from talon_classic.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "identifies.jsonl"
VECTORS = ROOT / "tests" / "data" / "identify.jsonl"
TYPED = ROOT / "tests" / "data" / "typed.jsonl"
PERSONAS = {"computation_class": "audience", "computation_key": "vip_users",
            "computation_id": "aud_1", "space_id": "spa_1"}
#: Summary fields that differ between any two runs (time, memory, paths).
UNSTABLE = {"elapsed_s", "events_per_s", "peak_rss_mb", "dead_letter_file", "state_file"}


def _allowlist() -> list[str]:
    names = set(json.loads((ROOT / "samples" / "settings.json").read_text())["customAttributes"])
    for line in VECTORS.read_text().splitlines():
        names.update(json.loads(line)["settings"].get("customAttributes", []))
    return sorted(names)


def bad_lines() -> bytes:
    """One line of every kind a run skips, and lines that are kept around them."""
    deep = b'{"userId": "deep", "traits": {"a": ' + b"[" * 600 + b"]" * 600 + b"}}"
    return b"".join([
        b"{not json\n",
        b'{"userId": "u\xff", "traits": {"plan": "x"}}\n',  # not UTF-8
        b'{"userId": "long", "traits": {"name": "' + b"x" * 3000 + b'"}}\n',  # > 2048 bytes
        deep + b"\n",  # nested too deeply
        b'{"type": "track", "userId": "t1", "event": "Clicked"}\n',  # not identify
        b'{"type": "identify", "anonymousId": "anon-9", "traits": {"email": "a@x"}}\n',
        b"[1, 2]\n",  # not an object
        b"null\n",
        b"   \n",  # blank: no record
        b'{"userId": "' + b"i" * 260 + b'", "traits": {"plan": "x"}}\n',  # id too long
        b'{"userId": "good-1", "timestamp": "2026-11-01T00:00:00Z", "traits": {"plan": "p"}}\n',
        b'{"userId": "good-1", "timestamp": "2026-10-01T00:00:00Z", "traits": {"plan": "old"}}\n',
        b'{"userId": "good-2", "traits": {"plan": "q", "nope": 1, "email": "g@x"}}\n',
    ])


def engage_lines() -> bytes:
    """Engage audience identifies and Audience Entered/Exited tracks (memberships)."""
    events: list[dict[str, Any]] = []
    for i in range(40):
        user, ts = f"user-{i % 7:03d}", f"2026-11-0{1 + i % 3}T10:{i:02d}:00Z"
        if i % 3 == 0:
            events.append({"type": "track", "userId": user, "timestamp": ts,
                           "event": "Audience Entered" if i % 2 else "Audience Exited",
                           "properties": {"audience_key": "vip_users"},
                           "context": {"personas": PERSONAS}})
        else:
            events.append({"type": "identify", "userId": user, "timestamp": ts,
                           "traits": {"vip_users": i % 2 == 0, "email": f"{user}@x"},
                           "context": {"personas": PERSONAS}})
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def event_inputs(where: Path) -> list[str]:
    """The samples, every shared vector's event and the bad lines, over three inputs: a
    plain file, a gzip file that starts with a byte order mark, a gzip file cut short."""
    where.mkdir()
    vectors = b"".join(json.dumps(json.loads(line)["event"]).encode() + b"\n"
                       for line in VECTORS.read_text().splitlines())
    first = where / "events.jsonl"
    first.write_bytes(SAMPLES.read_bytes() + bad_lines() + vectors + engage_lines())
    second = where / "more.jsonl.gz"
    second.write_bytes(gzip.compress(b"\xef\xbb\xbf" + vectors + bad_lines()
                                     + SAMPLES.read_bytes()))
    cut = gzip.compress(b"".join(b'{"userId": "z%d", "traits": {"plan": "%d"}}\n' % (i, i)
                                 for i in range(600)))
    third = where / "cut.jsonl.gz"
    third.write_bytes(cut[: len(cut) // 2])
    return [str(first), str(second), str(third)]


def settings_file(path: Path, emu, allow: list[str], **extra: Any) -> str:
    path.write_text(json.dumps({"apiKey": emu.api_key, "applicationDomain": emu.url,
                                "customAttributes": allow, **extra}))
    return str(path)


def identify(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(main, ["identify", "--json", "--rate-limit", "0", *args])
    assert result.exit_code in (0, 1), result.output
    lines = result.stdout.strip().splitlines()
    return result.exit_code, json.loads(lines[-1]) if lines else {}, result.stderr


def seen(emu) -> dict[str, Any]:
    """What Talon.One holds and was sent: profiles, and each request's status and size."""
    return {"profiles": sorted(emu.profiles(), key=lambda p: p["integrationId"]),
            "requests": [(r["method"], r["status"], r["profiles"]) for r in emu.requests()],
            "audiences": [(a["name"], emu.audience_members(a["id"])) for a in emu.audiences()]}


def stable(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in UNSTABLE}


def both_ways(factory, tmp_path: Path, make_inputs, *flags: str, allow: list[str] | None = None,
              emulator: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
              ) -> list[dict[str, Any]]:
    """Run identify with --workers 1, then 3, each into a fresh emulator and directory;
    return what each run left (exit status, summary, warnings, dead letters, checkpoint,
    what the emulator holds)."""
    runs = []
    for workers in ("1", "3"):
        emu = factory(**(emulator or {}))
        where = tmp_path / f"workers-{workers}"
        where.mkdir()
        inputs = make_inputs(where / "in")
        ckpt, dead = where / "run.checkpoint.json", where / "dead.jsonl"
        code, report, err = identify(
            *inputs, "--settings", settings_file(where / "s.json", emu, allow or _allowlist(),
                                                 **(settings or {})),
            "--checkpoint", str(ckpt), "--dead-letter", str(dead), "--dead-letter-skipped",
            "--batch-size", "7", "--concurrency", "1", "--workers", workers, *flags)
        assert report["internal_errors"] == 0 and report["stopped"] is None, report
        state = json.loads(ckpt.read_text())
        runs.append({
            "code": code, "report": stable(report),
            "warnings": err.replace(str(where), "<dir>"),
            "dead": dead.read_text().replace(str(where), "<dir>") if dead.exists() else "",
            "checkpoint": (state["watermark"], state["done"],
                           {k.replace(str(where), "<dir>"): v
                            for k, v in state["skips_logged"].items()}),
            "fingerprint": {k: v for k, v in state["fingerprint"].items()
                            if k not in ("inputs", "target")},
            "talon": seen(emu)})
    return runs


@pytest.mark.timeout(180)
def test_events_with_every_kind_of_bad_line_come_out_the_same(talon_emulator_factory,
                                                              tmp_path: Path) -> None:
    allow = _allowlist()
    # Talon.One knows every allowlisted attribute but one: profiles with it are refused,
    # so their events are dead-lettered, decoded again from the lines a worker took
    strict = {"attributes": frozenset(a for a in allow if a != "plan")}
    one, three = both_ways(talon_emulator_factory, tmp_path, event_inputs, "--max-line-bytes",
                           "2048", emulator=strict)
    assert one == three
    report = one["report"]
    assert set(report["skipped"]) >= {"invalid_json", "line_too_long", "not_identify",
                                      "no_user_id", "invalid_event", "truncated_input",
                                      "invalid_user_id"}, report["skipped"]
    assert report["rejected"] > 0 and report["profiles_upserted"] > 0
    assert "nested too deeply" in one["warnings"] and "not valid UTF-8" in one["warnings"]
    dead = [json.loads(line) for line in one["dead"].splitlines()]
    assert {d["reason"] for d in dead} >= {"rejected", "invalid_json", "not_identify"}
    assert any(d["reason"] == "rejected" and d["event"]["traits"].get("plan") for d in dead)


@pytest.mark.timeout(180)
def test_engage_memberships_come_out_the_same(talon_emulator_factory, tmp_path: Path) -> None:
    def inputs(where: Path) -> list[str]:
        where.mkdir()
        path = where / "engage.jsonl"
        path.write_bytes(engage_lines() + bad_lines())
        return [str(path)]

    one, three = both_ways(talon_emulator_factory, tmp_path, inputs, "--engage-audiences",
                           "both", allow=["email", "plan"])
    assert one == three
    assert one["report"]["memberships"]["added"] + one["report"]["memberships"]["removed"] > 0
    assert one["talon"]["audiences"] and one["talon"]["audiences"][0][1]


@pytest.mark.timeout(180)
def test_replayed_dead_letters_and_typed_events_come_out_the_same(talon_emulator_factory,
                                                                  tmp_path: Path) -> None:
    vectors = [json.loads(line) for line in TYPED.read_text().splitlines()]
    settings = vectors[0]["settings"]
    schema = tmp_path / "attributes.json"
    schema.write_text(json.dumps(settings["schema"]))

    def inputs(where: Path) -> list[str]:
        where.mkdir()
        path = where / "dead-letters.jsonl"  # as a dead-letter file holds them
        path.write_bytes(b"".join(
            json.dumps({"event": {**v["event"], "userId": f"typed-{i % 9}"},
                        "reason": "rejected", "error": "x", "input": f"a.jsonl:{i}"}).encode()
            + b"\n" for i, v in enumerate(vectors)) + bad_lines())
        return [str(path)]

    one, three = both_ways(talon_emulator_factory, tmp_path, inputs, "--replay-dead-letters",
                           "--schema", str(schema), allow=settings["customAttributes"])
    assert one == three
    assert one["report"]["kept"] > 20 and one["report"]["dropped"]


@pytest.mark.timeout(180)
def test_compacted_profiles_come_out_the_same(talon_emulator_factory, tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_bytes(SAMPLES.read_bytes())
    settings = tmp_path / "compact-settings.json"
    settings.write_text(json.dumps({"customAttributes": _allowlist()}))
    compacted = tmp_path / "profiles.jsonl"
    done = CliRunner().invoke(main, ["compact", str(source), "--settings", str(settings),
                                     "-o", str(compacted), "--workers", "1", "--quiet"])
    assert done.exit_code == 0, done.output

    def inputs(where: Path) -> list[str]:
        where.mkdir()
        path = where / "profiles.jsonl"
        path.write_bytes(compacted.read_bytes() + b'{"integrationId": "x"}\n{not json\n')
        return [str(path)]

    one, three = both_ways(talon_emulator_factory, tmp_path, inputs, "--profiles")
    assert one == three
    assert one["report"]["skipped"] == {"invalid_json": 1, "invalid_profile": 1}


def test_a_dry_run_writes_the_same_requests(tmp_path: Path) -> None:
    outputs = []
    for workers in ("1", "3"):
        out = tmp_path / f"requests-{workers}.jsonl"
        result = CliRunner().invoke(main, [
            "identify", str(SAMPLES), "--dry-run", "--api-key", "k" * 16,
            "--application-domain", "https://x.talon.one", "--custom-attribute", "email",
            "--custom-attribute", "plan", "--batch-size", "10", "--no-state", "--quiet",
            "--workers", workers, "-o", str(out)])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1] and outputs[0].count("\n") > 10


def test_workers_below_one_is_a_usage_error_of_one_line(tmp_path: Path) -> None:
    for value in ("0", "-2"):
        result = CliRunner().invoke(main, ["identify", str(SAMPLES), "--emulator",
                                           "--workers", value])
        assert result.exit_code == 2
        assert result.output.strip() == (f"Error: --workers is {value}; give 1 (everything in "
                                          "this process) or more (processes that parse and "
                                          "transform)")


def test_identify_help_lists_workers() -> None:
    result = CliRunner().invoke(main, ["identify", "--help"])
    assert "--workers N" in result.output
    text = " ".join(result.output.split())
    assert "Processes that parse and transform events" in text and "[default: 1]" in text


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "talon_classic.cli", "identify", *args]


def _events(n: int, users: int) -> str:
    return "".join(json.dumps({"userId": f"user{i % users}", "traits": {"plan": f"p{i}"},
                               "timestamp": f"2024-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:"
                                            f"{i % 60:02d}Z"})
                   + "\n" for i in range(n))


def _workers_of(pid: int) -> list[int]:
    """The worker processes of a run: its spawned children (not multiprocessing's resource
    tracker)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    spawned = b"spawn_main" in fh.read()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid and spawned:
                out.append(int(entry))
    return out


def _wait_for(what, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("never happened")


@pytest.mark.timeout(120)
def test_a_run_started_in_one_process_resumes_with_workers(talon_emulator_factory,
                                                           tmp_path: Path) -> None:
    emu = talon_emulator_factory(latency_ms=30)
    src = tmp_path / "big.jsonl"
    src.write_text(_events(8000, 3000))
    settings = settings_file(tmp_path / "s.json", emu, ["plan"])
    ckpt = tmp_path / "run.checkpoint.json"
    common = [str(src), "--settings", settings, "--checkpoint", str(ckpt), "--quiet"]
    proc = subprocess.Popen(_cli(*common, "--batch-size", "40", "--concurrency", "1",
                                 "--rate-limit", "50", "--workers", "1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: ckpt.exists() and json.loads(ckpt.read_text())["watermark"] >= 10)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads(ckpt.read_text())
    acked = state["watermark"] + 1 + len(state["done"])
    assert state["options"]["workers"] == 1
    time.sleep(0.3)  # requests the killed process had in flight finish on the server side
    # the rest without the latency: batches share users, so each waits for the one before
    emu.configure(latency_ms=0)
    before = len(emu.requests())
    report = resume(_cli(*common, "--resume", "--json", "--workers", "3",
                         "--rate-limit", "0", "--read-timeout", "2"))
    assert report["batches_resumed"] == acked
    total = 200  # 8,000 events over 3,000 users, 40 distinct per batch
    resent = before_repairs(emu.requests()[before:], report)
    assert len(resent) == total - acked  # nothing acknowledged again
    last = {f"user{i % 3000}": f"p{i}" for i in range(8000)}  # timestamps rise with i
    assert emu.stats()["profiles"] == 3000
    for iid in ("user0", "user2999", "user1234"):
        assert emu.profile(iid)["attributes"] == {"plan": last[iid]}
    assert json.loads(ckpt.read_text())["options"]["workers"] == 3


def _sending_with_two_workers(talon_emulator_factory, tmp_path: Path
                              ) -> tuple[subprocess.Popen, list[int]]:
    """``identify --workers 2`` in a subprocess, slowed by the emulator's latency; returned
    once it has delivered and its worker processes are up (their pids)."""
    emu = talon_emulator_factory(latency_ms=50)
    src = tmp_path / "in.jsonl"
    src.write_text(_events(20_000, 20_000))
    settings = settings_file(tmp_path / "s.json", emu, ["plan"])
    proc = subprocess.Popen(_cli(str(src), "--settings", settings, "--batch-size", "10",
                                 "--concurrency", "1", "--workers", "2", "--quiet",
                                 "--checkpoint", str(tmp_path / "c.json")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = _wait_for(lambda: emu.stats()["profiles"] >= 20 and _workers_of(proc.pid))
    return proc, workers


@pytest.mark.timeout(120)
def test_ctrl_c_with_workers_stops_cleanly(talon_emulator_factory, tmp_path: Path) -> None:
    proc, workers = _sending_with_two_workers(talon_emulator_factory, tmp_path)
    for pid in [proc.pid, *workers]:  # as a terminal does: the whole process group
        os.kill(pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped early: interrupted (Ctrl-C); rerun with --resume to continue" in out
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    _wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in workers))  # none left


@pytest.mark.timeout(120)
def test_a_killed_worker_is_one_line_and_a_nonzero_exit(talon_emulator_factory,
                                                        tmp_path: Path) -> None:
    proc, workers = _sending_with_two_workers(talon_emulator_factory, tmp_path)
    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, out + err
    assert "Traceback" not in err
    lines = [line for line in (out + err).splitlines() if "ended unexpectedly" in line]
    assert len(lines) == 1, out + err
    assert f"(pid {victim}) ended unexpectedly (killed by SIGKILL)" in lines[0]
    assert "stopped early: a worker process failed; rerun with --resume to continue" in out


def test_compacted_profiles_keep_each_attributes_own_timestamp(talon_emulator_factory,
                                                                tmp_path: Path) -> None:
    """With workers as in one process: c's email is at 50 and its plan at 70; an email at
    60 is newer than the ledger's (the attribute's own key, not the profile's newest)."""
    def line(iid: str, attributes: dict[str, Any], stamps: dict[str, list[Any]]) -> bytes:
        return json.dumps({"integrationId": iid, "attributes": attributes,
                           "timestamps": stamps}).encode() + b"\n"

    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(line("c", {"email": "c@x.io", "plan": "x"},
                           {"email": [50.0, 3], "plan": [70.0, 4]}))
    second.write_bytes(line("c", {"email": "c2@x.io", "plan": "old"},
                            {"email": [60.0, 1], "plan": [60.0, 1]}))
    for workers in ("1", "3"):
        emu = talon_emulator_factory()
        settings = settings_file(tmp_path / f"s{workers}.json", emu, ["email", "plan"])
        for path in (first, second):
            code, report, _ = identify(str(path), "--profiles", "--settings", settings,
                                       "--state", str(tmp_path / f"state{workers}.db"),
                                       "--workers", workers)
            assert code == 0, report
        assert report["dropped"]["superseded"]["top"] == {"plan": 1}, workers
        assert emu.profiles()[0]["attributes"] == {"email": "c2@x.io", "plan": "x"}, workers
