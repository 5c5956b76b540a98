"""`talon-classic identify` end to end against the emulator, over real loopback HTTP."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from resume_helpers import before_repairs, kill_after, resume

from talon_classic.bulk import parse_timestamp
from talon_classic.cli import main
from talon_classic.transform import Engine

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "identifies.jsonl"
ALLOW = ["email", "name", "plan", "address_city", "tags", "consent_*"]


def write_settings(path: Path, emu, allow=ALLOW) -> Path:
    path.write_text(json.dumps(
        {"apiKey": emu.api_key, "applicationDomain": emu.url, "customAttributes": allow}
    ))
    return path


def write_jsonl(path: Path, events) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(main, ["identify", "--quiet", *args], input=input,
                              catch_exceptions=False)


def expected_profiles(lines: list[str], allow: list[str], prefix: str = "") -> dict[str, dict]:
    """An independent model of the merge: sort each user's events, apply in order."""
    engine = Engine(allow)
    per_user: dict[str, list] = {}
    for n, line in enumerate(lines):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        result = engine.transform(event)
        if not result.kept:
            continue
        ts = parse_timestamp(event.get("timestamp"))
        per_user.setdefault(prefix + result.integration_id, []).append(
            ((ts is not None, ts or 0.0, n), result.attributes)
        )
    out = {}
    for iid, items in per_user.items():
        attrs: dict = {}
        for _, a in sorted(items, key=lambda x: x[0]):
            attrs.update(a)
        out[iid] = attrs
    return out


@pytest.fixture()
def emu(talon_emulator):
    return talon_emulator


def test_samples_land_with_the_engine_attributes(emu, tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    sample_settings = json.loads((ROOT / "samples" / "settings.json").read_text())
    allow = sample_settings["customAttributes"]
    write_settings(settings, emu, allow)
    result = run(str(SAMPLES), "--settings", str(settings), "--json",
                 "--dead-letter", str(tmp_path / "dead.jsonl"))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    lines = [ln for ln in SAMPLES.read_text().splitlines() if ln.strip()]
    want = expected_profiles(lines, allow)
    assert report["events_read"] == len(lines)
    assert report["profiles_upserted"] == len(want)
    assert report["skipped"]["invalid_json"] == 2
    assert report["skipped"]["invalid_event"] == 1  # the JSON array line
    for iid, attrs in want.items():
        got = emu.profile(iid)
        assert got is not None, iid
        assert got["attributes"] == attrs, iid


def test_merge_order_with_out_of_order_timestamps(emu, tmp_path: Path) -> None:
    events = [
        {"userId": "u1", "timestamp": "2024-01-03T00:00:00Z", "traits": {"plan": "gold"}},
        {"userId": "u1", "timestamp": "2024-01-01T00:00:00Z",
         "traits": {"plan": "free", "email": "old@x.io"}},
        {"userId": "u1", "timestamp": "2024-01-02T00:00:00+00:00", "traits": {"name": "N"}},
    ]
    # batch size 1 with u2 in between puts u1's events in different batches
    spaced = [events[0], {"userId": "u2"}, events[1], {"userId": "u3"}, events[2]]
    for batch_size, data in (("1000", events), ("1", spaced)):
        emu.reset()
        src = write_jsonl(tmp_path / f"in{batch_size}.jsonl", data)
        result = run(str(src), "--settings", str(write_settings(tmp_path / "s.json", emu)),
                     "--batch-size", batch_size, "--concurrency", "3")
        assert result.exit_code == 0, result.output
        assert emu.profile("u1")["attributes"] == {"plan": "gold", "email": "old@x.io", "name": "N"}


def test_dry_run_sends_nothing_and_prints_requests(emu, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"userId": f"u{i}", "traits": {"email": f"{i}@x.io"}} for i in range(2500)
    ])
    settings = write_settings(tmp_path / "s.json", emu)
    result = run(str(src), "--settings", str(settings), "--dry-run")
    assert result.exit_code == 0, result.output
    requests_ = [json.loads(line) for line in result.stdout.splitlines()]
    assert [len(r["body"]["customerProfiles"]) for r in requests_] == [1000, 1000, 500]
    assert all(r["method"] == "PUT" for r in requests_)
    assert requests_[0]["url"] == f"{emu.url}/v2/customer_profiles?silent=yes"
    assert emu.api_key not in result.output
    assert emu.stats()["requests"] == {}
    assert "dry run: nothing was sent" in result.stderr


def test_poison_profile_is_dead_lettered_and_the_rest_delivered(emu, tmp_path: Path) -> None:
    emu.configure(reject_ids=["poison"])
    events = [{"userId": f"u{i}", "traits": {"plan": "p"}} for i in range(999)]
    events.insert(500, {"userId": "poison", "traits": {"plan": "bad"}})
    src = write_jsonl(tmp_path / "in.jsonl", events)
    dead = tmp_path / "dead.jsonl"
    result = run(str(src), "--settings", str(write_settings(tmp_path / "s.json", emu)),
                 "--dead-letter", str(dead), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["profiles_upserted"] == 999
    assert report["dead_lettered"] == 1
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert len(letters) == 1
    assert letters[0]["event"] == {"userId": "poison", "traits": {"plan": "bad"}}
    assert letters[0]["reason"] == "rejected"
    assert letters[0]["input"] == f"{src}:501"
    assert letters[0]["error"]
    assert emu.stats()["profiles"] == 999


def test_default_dead_letter_path_and_skipped_listing(emu, tmp_path: Path) -> None:
    emu.configure(reject_ids=["bad"])
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"userId": "bad"}, {"type": "track", "userId": "t"}, {"anonymousId": "a"},
    ])
    result = run(str(src), "--settings", str(write_settings(tmp_path / "s.json", emu)),
                 "--dead-letter-skipped")
    assert result.exit_code == 1
    letters = [json.loads(x) for x in (tmp_path / "in.jsonl.dead.jsonl").read_text().splitlines()]
    assert sorted(x["reason"] for x in letters) == ["no_user_id", "not_identify", "rejected"]


def test_gzip_stdin_and_multiple_inputs(emu, tmp_path: Path) -> None:
    packed = tmp_path / "a.jsonl.gz"
    packed.write_bytes(gzip.compress(b'{"userId": "g1", "traits": {"plan": "gz"}}\n'))
    plain = write_jsonl(tmp_path / "b.ndjson", [{"userId": "p1", "traits": {"plan": "plain"}}])
    stdin = b'{"userId": "s1", "traits": {"plan": "stdin"}}\n'
    result = run(str(packed), "-", str(plain), "--settings",
                 str(write_settings(tmp_path / "s.json", emu)), input=stdin)
    assert result.exit_code == 0, result.output
    assert {i: emu.profile(i)["attributes"]["plan"] for i in ("g1", "p1", "s1")} == {
        "g1": "gz", "p1": "plain", "s1": "stdin"
    }


def test_bad_input_kinds_are_reported_and_the_run_goes_on(emu, tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_bytes(
        b'{"userId": "a", "traits": {"plan": "1"}}\n'
        b"{not json\n"
        + b'{"userId": "big", "traits": {"name": "' + b"x" * (10 * 1024 * 1024) + b'"}}\n'
        + b'{"userId": "u\xff"}\n'
        b'{"userId": "b", "traits": {"plan": "2"}}\n'
    )
    body = b"".join(b'{"userId": "z%d"}\n' % i for i in range(3000))
    packed = gzip.compress(body)
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(packed[: len(packed) // 2])
    tail = write_jsonl(tmp_path / "tail.jsonl", [{"userId": "c"}])
    result = CliRunner().invoke(main, [
        "identify", str(src), str(truncated), str(tail), "--json",  # default limit: 8 MiB
        "--settings", str(write_settings(tmp_path / "s.json", emu)),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["skipped"] == {"invalid_json": 2, "line_too_long": 1, "truncated_input": 1}
    err = result.stderr.splitlines()
    assert f"{src}:2: invalid_json: Expecting property name enclosed in double quotes: column 2" in err
    assert any(line.startswith(f"{src}:3: line_too_long:") for line in err)
    assert any(line.startswith(f"{src}:4: invalid_json: not valid UTF-8") for line in err)
    assert any(line.startswith(f"{truncated}:") and "truncated_input" in line for line in err)
    for iid in ("a", "b", "c", "z0"):
        assert emu.profile(iid) is not None


def test_auth_failure_stops_with_exit_3(emu, tmp_path: Path) -> None:
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"apiKey": "wrong-key-0000", "applicationDomain": emu.url}))
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": f"u{i}"} for i in range(50)])
    result = run(str(src), "--settings", str(settings), "--batch-size", "10")
    assert result.exit_code == 3
    assert "API key" in result.output
    assert "wrong-key-0000" not in result.output
    assert emu.stats()["profiles"] == 0


def test_settings_error_exit_2_sends_nothing(emu, tmp_path: Path) -> None:
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"apiKey": "k", "applicationDomain": "http://example.com"}))
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": "u"}])
    result = run(str(src), "--settings", str(settings))
    assert result.exit_code == 2
    assert "s.json: applicationDomain: must use https://" in result.output
    assert emu.stats()["requests"] == {}


def test_id_prefix_and_single_mode(emu, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": "u1", "traits": {"plan": "x"}}])
    result = run(str(src), "--settings", str(write_settings(tmp_path / "s.json", emu)),
                 "--single", "--id-prefix", "shop1-")
    assert result.exit_code == 0, result.output
    assert emu.profile("shop1-u1")["attributes"] == {"plan": "x"}
    assert [r["path"] for r in emu.requests()] == ["/v2/customer_profiles/shop1-u1"]


def test_emulator_flag_runs_without_an_account(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "identify", str(SAMPLES), "--settings", str(ROOT / "samples" / "settings.json"),
        "--emulator", "--json", "--dead-letter", str(tmp_path / "d.jsonl"),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["profiles_upserted"] > 0
    assert "emulator:" in result.stderr


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "talon_classic.cli", "identify", *args]


@pytest.mark.timeout(120)
def test_sigkill_then_resume_delivers_everything_once(talon_emulator_factory, tmp_path: Path):
    emu = talon_emulator_factory(rate_limit=0, latency_ms=40)
    events = [
        {"userId": f"user{i % 4000}", "timestamp": f"2024-01-01T00:00:{i % 60:02d}Z",
         "traits": {"plan": f"p{i}", "email": f"{i}@x.io"}}
        for i in range(10_000)
    ]
    src = write_jsonl(tmp_path / "big.jsonl", events)
    settings = write_settings(tmp_path / "s.json", emu)
    ckpt = tmp_path / "run.checkpoint.json"
    common = [str(src), "--settings", str(settings), "--checkpoint", str(ckpt), "--quiet"]
    acked = kill_after(_cli(*common, "--batch-size", "50", "--concurrency", "2",
                            "--rate-limit", "80"), ckpt)
    total_batches = 200  # 10,000 events cycling over 4,000 users, 50 distinct per batch
    assert 20 < acked < total_batches
    before = len(emu.requests(limit=100000))

    # a bare --resume takes the run's options (--batch-size 50) from the checkpoint;
    # --concurrency and --rate-limit may change
    report = resume(_cli(*common, "--resume", "--json", "--concurrency", "4",
                         "--rate-limit", "0", "--read-timeout", "2"))
    assert report["batches_resumed"] == acked
    assert report["profiles_repaired"] > 0
    after = before_repairs(emu.requests(limit=100000)[before:], report)
    statuses = sorted({r["status"] for r in after})
    assert len(after) == total_batches - acked, statuses  # nothing acknowledged is sent again
    want = expected_profiles([json.dumps(e) for e in events], ALLOW)
    assert emu.stats()["profiles"] == len(want)
    for iid in ("user0", "user3999", "user1234"):
        assert emu.profile(iid)["attributes"] == want[iid]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_request_a_killed_run_left_in_flight_cannot_have_the_last_word(
        talon_emulator_factory, tmp_path: Path) -> None:
    """kill -9 while Talon.One is still working on a request; the next run sends a newer
    value, then the killed run's request lands with the older one. Before, the older value
    stayed for good; now the next run repairs what it delivered in its first 2 x read
    timeout, once that has passed."""
    emu = talon_emulator_factory(rate_limit=0, hang_next=1, hang_seconds=2.5)
    settings = write_settings(tmp_path / "s.json", emu, ["plan"])
    common = ["--settings", str(settings), "--state", str(tmp_path / "state.db"),
              "--read-timeout", "2"]
    old = write_jsonl(tmp_path / "old.jsonl", [
        {"userId": "u4", "timestamp": "2026-01-01T00:00:00Z", "traits": {"plan": "old"}}])
    new = write_jsonl(tmp_path / "new.jsonl", [
        {"userId": "u4", "timestamp": "2026-02-01T00:00:00Z", "traits": {"plan": "new"}}])
    proc = subprocess.Popen(_cli(str(old), *common), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while emu.configure()["hang_next"] and time.monotonic() < deadline:
        time.sleep(0.02)  # the request is in Talon.One's hands
    proc.kill()
    proc.wait()
    finish = subprocess.run(_cli(str(new), *common, "--json"), capture_output=True, text=True)
    assert finish.returncode == 0, finish.stderr
    assert "says a run before this one was killed (or crashed)" in finish.stderr
    assert json.loads(finish.stdout)["profiles_repaired"] == 1
    assert emu.stats()["profile_updates"] == 3  # new, old (late), new again (repaired)
    assert emu.profile("u4")["attributes"] == {"plan": "new"}


def test_dead_letters_can_be_replayed_after_the_fix(emu, tmp_path: Path) -> None:
    emu.configure(attributes=["email"])
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"userId": "u1", "traits": {"email": "a@x.io"}},
        {"userId": "u2", "traits": {"email": "b@x.io", "plan": "gold"}},
    ])
    settings = write_settings(tmp_path / "s.json", emu)
    dead = tmp_path / "dead.jsonl"
    assert run(str(src), "--settings", str(settings), "--dead-letter", str(dead)).exit_code == 1
    emu.configure(attributes=["email", "plan"])  # the user creates the attribute
    again = run(str(dead), "--replay-dead-letters", "--settings", str(settings),
                "--dead-letter", str(tmp_path / "dead2.jsonl"))
    assert again.exit_code == 0, again.output
    assert emu.profile("u2")["attributes"] == {"email": "b@x.io", "plan": "gold"}


def test_an_unretryable_answer_dead_letters_the_batch_and_goes_on(emu, tmp_path: Path) -> None:
    emu.configure(fail_next=1, fail_status=501)
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": f"u{i}"} for i in range(4)])
    dead = tmp_path / "dead.jsonl"
    result = run(str(src), "--settings", str(write_settings(tmp_path / "s.json", emu)),
                 "--batch-size", "2", "--concurrency", "1", "--dead-letter", str(dead), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert (report["profiles_upserted"], report["failed"], report["dead_lettered"]) == (2, 2, 2)
    letters = [json.loads(x) for x in dead.read_text().splitlines()]
    assert {x["reason"] for x in letters} == {"failed"}
    assert all("501" in x["error"] for x in letters)


# -- hardening: resume, pipes, interrupts, messages, file modes ---------------------------

def _events(n: int, users: int | None = None) -> list[dict]:
    return [{"userId": f"u{i % (users or n)}", "timestamp": "2024-01-01T00:00:00Z",
             "traits": {"email": f"{i}@x.io"}} for i in range(n)]


def test_dry_run_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", _events(3000))
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"apiKey": "k" * 16, "applicationDomain": "https://x.talon.one",
                                    "customAttributes": ["email"]}))
    proc = subprocess.Popen(_cli(str(src), "--settings", str(settings), "--dry-run",
                                 "--batch-size", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 0
    assert json.loads(first)["method"] == "PUT"
    assert err == ""  # no traceback, no "internal error", no summary


def test_ctrl_c_without_checkpoint_says_nothing_was_recorded(talon_emulator_factory,
                                                            tmp_path: Path) -> None:
    emu = talon_emulator_factory(latency_ms=50)
    src = write_jsonl(tmp_path / "in.jsonl", _events(20_000))
    settings = write_settings(tmp_path / "s.json", emu)
    proc = subprocess.Popen(_cli(str(src), "--settings", str(settings), "--batch-size", "10",
                                 "--concurrency", "1", "--quiet"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while emu.stats()["profiles"] < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert ("stopped early: interrupted (Ctrl-C); nothing was recorded (no --checkpoint), "
            "so a rerun starts over") in out
    assert "--resume to continue" not in out + err
    again = run(str(src), "--settings", str(settings), "--resume")
    assert again.exit_code == 2
    assert again.output.strip() == (
        f"Error: {src}.checkpoint.json: no checkpoint to resume (was the run started with "
        "--checkpoint? without it nothing is recorded); run again without --resume")


@pytest.mark.slow
@pytest.mark.parametrize("gap", [0.0, 0.03, 0.15])
def test_two_ctrl_c_then_resume_delivers_everything(talon_emulator_factory, tmp_path: Path,
                                                     gap: float) -> None:
    """Two SIGINTs (a user pressing Ctrl-C twice, or ``timeout -s INT`` signalling the child
    and then its group) while batches are in flight: the status a shell shows as 130, the
    summary says how to go on, the state file is not blamed,
    and ``--resume`` delivers every profile with its value. The gaps put the second signal
    before, while and after the in-flight batches finish."""
    emu = talon_emulator_factory(latency_ms=60)
    events = _events(400)
    src = write_jsonl(tmp_path / "in.jsonl", events)
    settings = write_settings(tmp_path / "s.json", emu)
    common = [str(src), "--settings", str(settings), "--checkpoint", str(tmp_path / "run.ckpt"),
              "--batch-size", "10", "--concurrency", "4", "--quiet"]
    proc = subprocess.Popen(_cli(*common), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 30
    while emu.stats()["profiles"] < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    time.sleep(gap)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    shown = out + err
    # 130; or, when the second signal lands after the summary, while Python exits, killed
    # by SIGINT: what a shell shows as 130 as well, with everything already closed
    assert proc.returncode in (130, -signal.SIGINT), shown
    assert "Traceback" not in shown and "usable state file" not in shown, shown
    assert "move it away" not in shown and "the state file failed" not in shown, shown
    assert "stopped early: interrupted (Ctrl-C); rerun with --resume to continue" in shown
    again = run(*common, "--resume")
    assert again.exit_code == 0, again.output
    for event in events:
        profile = emu.profile(event["userId"])
        assert profile is not None and profile["attributes"] == event["traits"], event


def test_ctrl_c_before_the_run_is_one_line_and_130(emu, tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C while the input is fingerprinted (seconds on a big file): before, click's
    "Aborted!" and exit 1."""
    cli_identify = sys.modules["talon_classic.cli.identify"]  # the name is the command's

    def interrupted(paths):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_identify, "input_identity", interrupted)
    src = write_jsonl(tmp_path / "in.jsonl", _events(3))
    result = run(str(src), "--settings", str(write_settings(tmp_path / "s.json", emu)),
                 "--checkpoint", str(tmp_path / "run.ckpt"))
    assert (result.exit_code, result.output) == (130, "interrupted (Ctrl-C)\n")
    assert emu.stats()["profiles"] == 0


def test_ctrl_c_while_the_state_file_closes_still_reports(emu, tmp_path: Path,
                                                          monkeypatch) -> None:
    """Ctrl-C as the run ends, while the state file commits: the summary is still printed,
    says so, and --resume has nothing left to lose. Before: "Aborted!", exit 1."""
    from talon_classic.ledger import Ledger

    real = Ledger.close

    def close(self):
        real(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Ledger, "close", close)
    src = write_jsonl(tmp_path / "in.jsonl", _events(30))
    common = [str(src), "--settings", str(write_settings(tmp_path / "s.json", emu)),
              "--checkpoint", str(tmp_path / "run.ckpt")]
    result = run(*common)
    assert result.exit_code == 130, result.output
    assert result.output.splitlines()[-1] == (
        "stopped early: interrupted (Ctrl-C); rerun with --resume to continue")
    monkeypatch.setattr(Ledger, "close", real)
    assert run(*common, "--resume").exit_code == 0
    assert emu.stats()["profiles"] == 30


def _checkpointed(emu, tmp_path: Path, *extra: str) -> tuple[Path, Path, list[str]]:
    src = write_jsonl(tmp_path / "in.jsonl", _events(30))
    ckpt = tmp_path / "run.ckpt"
    common = [str(src), "--settings", str(write_settings(tmp_path / "s.json", emu)),
              "--checkpoint", str(ckpt)]
    first = run(*common, "--batch-size", "10", *extra)
    assert first.exit_code == 0, first.output
    return src, ckpt, common


def test_resume_refuses_options_that_shape_batches(emu, tmp_path: Path) -> None:
    src, ckpt, common = _checkpointed(emu, tmp_path)
    for flags, named in ((["--batch-size", "5"], "--batch-size 5 (the run used 10)"),
                         (["--id-prefix", "x-"], "--id-prefix 'x-' (the run used '')"),
                         (["--max-line-bytes", "2048"], "--max-line-bytes 2048"),
                         (["--single"], "--single True (the run used False)")):
        result = run(*common, "--resume", *flags)
        assert result.exit_code == 2, flags
        line = result.output.strip()
        assert "\n" not in line and named in line and "delete" in line, line
    # the same values, or none at all, continue the run; concurrency may change
    ok = run(*common, "--resume", "--batch-size", "10", "--concurrency", "3", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["batches_resumed"] == 3


def test_resume_notices_an_edited_input_of_the_same_size(emu, tmp_path: Path) -> None:
    src, ckpt, common = _checkpointed(emu, tmp_path)
    text = src.read_text()
    src.write_text(text.replace("0@x.io", "9@x.io", 1))
    assert len(src.read_text()) == len(text)
    result = run(*common, "--resume")
    assert result.exit_code == 2
    assert f"{src} (its content changed)" in result.output


def test_a_dry_run_checkpoint_never_counts_as_delivered(emu, tmp_path: Path) -> None:
    src, ckpt, common = _checkpointed(emu, tmp_path, "--dry-run", "-o",
                                      str(tmp_path / "req.jsonl"))
    assert emu.stats()["profiles"] == 0
    # resuming continues the dry run it recorded: it still sends nothing
    resumed = run(*common, "--resume", "--json")
    assert resumed.exit_code == 0 and emu.stats()["profiles"] == 0
    # a real run over the same checkpoint file starts over and delivers everything
    real = run(*common, "--batch-size", "10", "--json")
    assert real.exit_code == 0 and json.loads(real.stdout)["batches_resumed"] == 0
    assert emu.stats()["profiles"] == 30


@pytest.mark.parametrize("content", ["[]", "null", "{}", '{"version": 2}', "{oops"])
def test_a_checkpoint_of_the_wrong_shape_is_one_line_exit_2(emu, tmp_path: Path,
                                                           content: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", _events(3))
    ckpt = tmp_path / "run.ckpt"
    ckpt.write_text(content)
    result = run(str(src), "--settings", str(write_settings(tmp_path / "s.json", emu)),
                 "--checkpoint", str(ckpt), "--resume")
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {ckpt}: ") and result.output.count("\n") == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize("section, name, value, problem", [
    ("fingerprint", "inputs", 5, "fingerprint.inputs: expected an array"),
    ("fingerprint", "inputs", [5], "fingerprint.inputs[0]: expected an object"),
    ("fingerprint", "inputs", [{"size": 1}], "fingerprint.inputs[0].path: missing"),
    ("options", "batch_size", "x", "options.batch_size: expected a whole number"),
    ("options", "settings_path", 5, "options.settings_path: expected a string or null"),
    # these two ran, and ended in a TypeError or ValueError traceback
    ("options", "batch_size", 50.0, "options.batch_size: expected a whole number"),
    ("options", "concurrency", 0, "options.concurrency: expected 1 or more"),
])
def test_a_hand_edited_checkpoint_names_the_field_exit_2(emu, tmp_path: Path, section: str,
                                                         name: str, value: object,
                                                         problem: str) -> None:
    """A checkpoint of the right shape whose fields hold the wrong kinds (an adversarial
    tester's edits): before, a TypeError or KeyError traceback and exit 1."""
    src = write_jsonl(tmp_path / "in.jsonl", _events(3))
    ckpt = tmp_path / "run.ckpt"
    common = [str(src), "--settings", str(write_settings(tmp_path / "s.json", emu)),
              "--checkpoint", str(ckpt)]
    assert run(*common).exit_code == 0
    state = json.loads(ckpt.read_text())
    state[section][name] = value
    ckpt.write_text(json.dumps(state))
    result = run(*common, "--resume")
    assert result.exit_code == 2, result.output
    assert result.output == (f"Error: {ckpt}: not a talon-classic checkpoint ({problem}); "
                             "delete it to start over\n")


def test_files_with_users_data_are_created_0600(emu, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        emu.configure(attributes=["email"])
        src = write_jsonl(tmp_path / "in.jsonl", [{"userId": "u1", "traits": {"email": "a@x"}},
                                                 {"userId": "u2", "traits": {"plan": "p"}}])
        settings = write_settings(tmp_path / "s.json", emu, ["email", "plan"])
        dead, ckpt, out = tmp_path / "d.jsonl", tmp_path / "c.json", tmp_path / "req.jsonl"
        assert run(str(src), "--settings", str(settings), "--dead-letter", str(dead),
                   "--checkpoint", str(ckpt)).exit_code == 1
        assert run(str(src), "--settings", str(settings), "--dry-run", "-o", str(out)
                   ).exit_code == 0
    finally:
        os.umask(old)
    for path in (dead, ckpt, out):
        assert (path.stat().st_mode & 0o777) == 0o600, path


def test_a_directory_as_input_is_named_as_one(emu, tmp_path: Path) -> None:
    result = run(str(tmp_path), "--settings", str(write_settings(tmp_path / "s.json", emu)))
    assert result.exit_code == 2
    assert result.output == (f"Error: {tmp_path}: is a directory; give a .jsonl file, a .gz of "
                             "one, or '-'\n")


def test_summary_counts_dead_letters_in_events_and_says_the_file_is_appended(
        emu, tmp_path: Path) -> None:
    emu.configure(attributes=["email"])
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"userId": "u1", "traits": {"email": "a@x"}},
        {"userId": "u2", "traits": {"plan": "p"}},
        {"userId": "u2", "traits": {"plan": "q"}},  # one profile, two events
    ])
    settings = write_settings(tmp_path / "s.json", emu, ["email", "plan"])
    dead = tmp_path / "d.jsonl"
    for _ in range(2):
        result = run(str(src), "--settings", str(settings), "--dead-letter", str(dead))
        assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "dead-lettered                 2  events (rejected 2, failed 0)" in lines
    assert f"dead letters in    {dead}  (appended; earlier runs' lines are kept)" in lines
    assert len(dead.read_text().splitlines()) == 4  # both runs' letters


def test_identify_help_lists_every_exit_status() -> None:
    out = CliRunner().invoke(main, ["identify", "--help"]).output
    for code in ("0 all delivered", "1 some events", "2 usage", "3 stopped by an "
                 "authentication", "4 an unexpected error", "130 interrupted"):
        assert code in " ".join(out.split()), code


# -- issue 12: newest value wins across runs, replays and timeouts (the ledger) ----------------
def at(seconds: int) -> str:
    return f"2024-01-01T00:00:{seconds:02d}Z"


def test_replaying_dead_letters_never_undoes_newer_values(emu, tmp_path: Path,
                                                          state_home: Path) -> None:
    """Reproduction 1: u1 "old" (ts 10) fails with a 501 and is dead-lettered, u1 "new"
    (ts 20) is delivered; replaying the dead letters used to set u1 back to "old"."""
    emu.configure(fail_next=1, fail_status=501)
    src = write_jsonl(tmp_path / "run.jsonl", [
        {"userId": "u1", "timestamp": at(10), "traits": {"plan": "old"}},
        {"userId": "u2", "timestamp": at(10), "traits": {"plan": "x"}},
        {"userId": "u1", "timestamp": at(20), "traits": {"plan": "new"}},
    ])
    settings = write_settings(tmp_path / "s.json", emu)
    first = run(str(src), "--settings", str(settings), "--batch-size", "1")
    assert first.exit_code == 1, first.output  # u1 "old" dead-lettered
    assert emu.profile("u1")["attributes"] == {"plan": "new"}
    ledger = next((state_home / "talon-classic").glob("127.0.0.1_*.db"))
    assert f"state file         {ledger}\n" in first.output
    replay = run(str(tmp_path / "run.jsonl.dead.jsonl"), "--replay-dead-letters",
                 "--settings", str(settings))
    assert replay.exit_code == 0, replay.output
    assert emu.profile("u1")["attributes"] == {"plan": "new"}
    assert "  superseded                  1  top: plan 1\n" in replay.output
    assert "up to date                    1  profiles not sent" in replay.output
    assert emu.stats()["profile_updates"] == 2  # u2, u1 "new"; the replay sent nothing


def test_a_resumed_run_goes_through_the_ledger(talon_emulator_factory, tmp_path: Path) -> None:
    """A newer value delivered by another run is not overwritten by --resume."""
    emu = talon_emulator_factory()
    settings = write_settings(tmp_path / "s.json", emu)
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"userId": f"u{n}", "timestamp": at(10), "traits": {"plan": "old"}} for n in range(4)])
    ckpt = tmp_path / "in.ckpt.json"
    emu.configure(fail_next=1, fail_status=401)  # the first batch stops the run
    stopped = run(str(src), "--settings", str(settings), "--batch-size", "2", "--concurrency",
                  "1", "--checkpoint", str(ckpt))
    assert stopped.exit_code == 3, stopped.output
    newer = write_jsonl(tmp_path / "newer.jsonl", [
        {"userId": "u0", "timestamp": at(20), "traits": {"plan": "new"}}])
    assert run(str(newer), "--settings", str(settings)).exit_code == 0
    resumed = run(str(src), "--resume", "--checkpoint", str(ckpt))
    assert resumed.exit_code == 0, resumed.output
    assert emu.profile("u0")["attributes"] == {"plan": "new"}
    assert emu.profile("u3")["attributes"] == {"plan": "old"}


@pytest.mark.timeout(60)
def test_a_request_that_lands_late_cannot_have_the_last_word(emu, tmp_path: Path) -> None:
    """Reproduction 3: the first request hangs past the read timeout and is retried (the
    retry succeeds), u1's newer value is delivered after it, then the hung request is
    carried out: u1 was left with the older value. The run now sends u1's newest value
    once more, once the hung request can no longer land (twice the read timeout)."""
    emu.configure(hang_next=1, hang_seconds=2.4)
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"userId": "u1", "timestamp": at(10), "traits": {"plan": "old"}},
        {"userId": "u2", "timestamp": at(10), "traits": {"plan": "x"}},
        {"userId": "u1", "timestamp": at(20), "traits": {"plan": "new"}},
    ])
    result = run(str(src), "--settings", str(write_settings(tmp_path / "s.json", emu)),
                 "--batch-size", "1", "--read-timeout", "1.5")
    assert result.exit_code == 0, result.output
    assert emu.profile("u1")["attributes"] == {"plan": "new"}
    assert "repaired                      1  profiles" in result.output
    log = [r for r in emu.requests() if r["path"].startswith("/v2/customer_profiles")]
    assert log[-1]["profiles"] == 1 and len(log) == 5  # hung, retried, u2, u1 new, repair


def test_state_file_options(emu, tmp_path: Path, state_home: Path) -> None:
    settings = write_settings(tmp_path / "s.json", emu)
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": "u1", "traits": {"plan": "a"}}])
    mine = tmp_path / "mine.db"
    chosen = run(str(src), "--settings", str(settings), "--state", str(mine))
    assert chosen.exit_code == 0 and f"state file         {mine}\n" in chosen.output
    none = run(str(src), "--settings", str(settings), "--no-state")
    assert none.exit_code == 0 and "state file         none  (--no-state)" in none.output
    emulated = run(str(src), "--settings", str(settings), "--emulator")
    assert "state file         none  (--emulator without --emulator-db" in emulated.output
    dry = run(str(src), "--settings", str(settings), "--state", str(mine), "--dry-run")
    assert "state file         " + str(mine) + "  (dry run: read, not written)" in dry.output
    assert not list(state_home.glob("*/*.db"))  # none of these used the default file
    fresh = run(str(src), "--settings", str(settings), "--state", str(tmp_path / "no.db"),
                "--dry-run", "--skip-unchanged")  # nothing to compare with yet: sends all
    assert fresh.exit_code == 0 and '"attributes":{"plan":"a"}' in fresh.output
    assert not (tmp_path / "no.db").exists()
    for flags, message in [
        (("--state", str(mine), "--no-state"), "--state and --no-state exclude each other"),
        (("--no-state", "--skip-unchanged"), "--skip-unchanged compares with the state file"),
        (("--emulator", "--skip-unchanged"), "--skip-unchanged compares with the state file"),
        (("--emulator", "--state", str(mine)), "--state needs --emulator-db with --emulator"),
    ]:
        refused = run(str(src), "--settings", str(settings), *flags)
        assert refused.exit_code == 2 and message in refused.output


def test_an_unusable_state_file_is_one_line_with_the_way_out(emu, tmp_path: Path,
                                                             monkeypatch) -> None:
    settings = write_settings(tmp_path / "s.json", emu)
    src = write_jsonl(tmp_path / "in.jsonl", [{"userId": "u1", "traits": {"plan": "a"}}])
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\x00garbage" * 1000)
    way_out = "give --state FILE (another state file) or --no-state (none)"
    result = run(str(src), "--settings", str(settings), "--state", str(corrupt))
    assert result.exit_code == 2
    assert result.output == (f"Error: {corrupt}: not a usable state file (file is not a "
                             f"database); move it away to start over, or {way_out}\n")
    other = tmp_path / "other.db"
    assert run(str(src), "--settings", str(settings), "--state", str(other),
               "--id-prefix", "eu-").exit_code == 0
    result = run(str(src), "--settings", str(settings), "--state", str(other))
    assert result.exit_code == 2
    assert result.output == (f"Error: {other}: holds the ordering of {emu.url} with id prefix "
                             f"'eu-', not of {emu.url}; {way_out}\n")
    real = os.access  # tests may run as root, for whom permissions change nothing
    monkeypatch.setattr(os, "access", lambda p, m: os.fspath(p) != os.fspath(other)
                        and real(p, m))
    result = run(str(src), "--settings", str(settings), "--state", str(other),
                 "--id-prefix", "eu-")
    assert result.exit_code == 2
    assert result.output == (f"Error: {other}: cannot open the state file: permission denied; "
                             f"{way_out}\n")
    assert emu.stats()["profile_updates"] == 1  # nothing was sent by the refused runs


def test_skip_unchanged_leaves_out_what_talon_one_has(emu, tmp_path: Path) -> None:
    settings = write_settings(tmp_path / "s.json", emu)
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"userId": "u1", "timestamp": at(10), "traits": {"plan": "a", "email": "e"}}])
    assert run(str(src), "--settings", str(settings), "--skip-unchanged").exit_code == 0
    again = write_jsonl(tmp_path / "again.jsonl", [
        {"userId": "u1", "timestamp": at(20), "traits": {"plan": "a", "email": "f"}}])
    result = run(str(again), "--settings", str(settings), "--skip-unchanged")
    assert result.exit_code == 0 and "  unchanged                   1  top: plan 1" in result.output
    assert emu.requests()[-1]["profiles"] == 1
    assert emu.profile("u1")["attributes"] == {"plan": "a", "email": "f"}
    # without the option everything goes again (someone may have edited the profile)
    plain = run(str(again), "--settings", str(settings))
    assert plain.exit_code == 0 and "unchanged" not in plain.output


def test_a_dead_letter_file_that_cannot_be_written_is_refused_before_sending(
        emu, tmp_path: Path) -> None:
    """Found by an adversarial pass: the file is created when the first event fails, so a
    bad --dead-letter was found then, reported as a bug (exit 4), its events not kept."""
    src = write_jsonl(tmp_path / "in.jsonl", _events(3))
    settings = str(write_settings(tmp_path / "s.json", emu))
    result = run(str(src), "--settings", settings, "--dead-letter",
                 str(tmp_path / "nowhere" / "x.dead.jsonl"))
    assert result.exit_code == 2
    assert result.output == (f"Error: {tmp_path / 'nowhere' / 'x.dead.jsonl'}: no such "
                             f"directory {tmp_path / 'nowhere'}; give --dead-letter FILE\n")
    assert emu.requests() == []  # nothing was sent


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_dead_letter_file_on_a_full_disk_stops_the_run_in_one_line(emu, tmp_path: Path) -> None:
    """Found by an adversarial pass: a traceback from closing the file, after a summary
    that counted dead letters never written."""
    emu.configure(reject_ids=["u1"])
    src = write_jsonl(tmp_path / "in.jsonl", _events(3))
    settings = str(write_settings(tmp_path / "s.json", emu))
    ckpt = tmp_path / "run.ckpt"
    result = run(str(src), "--settings", settings, "--dead-letter", "/dev/full", "--json",
                 "--checkpoint", str(ckpt))
    assert result.exit_code == 4 and "Traceback" not in result.output
    report = json.loads(result.output)
    assert report["dead_lettered"] == 0  # none was written
    assert report["stopped"].startswith("cannot record batch 0 (/dev/full: cannot write dead "
                                        "letters (No space left on device)); its events are "
                                        "not marked delivered: rerun with --resume")
    assert json.loads(ckpt.read_text())["watermark"] == -1  # so --resume sends it again
