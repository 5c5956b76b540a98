"""The smaller commands: transform, check-config, emulator, and the help text."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import requests
from click.testing import CliRunner

from talon_classic.cli import main

KEY = "cli-secret-key-987654321"


def invoke(*args: str, input: str | bytes | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def test_help_lists_every_command_with_a_purpose() -> None:
    out = invoke("--help").output
    for command in ("transform", "identify", "check-config", "emulator"):
        line = next(x for x in out.splitlines() if x.strip().startswith(command + " "))
        assert len(line.split(None, 1)[1]) > 10


def test_transform_output_format(tmp_path: Path) -> None:
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"customAttributes": ["email"]}))
    src = tmp_path / "in.jsonl.gz"
    src.write_bytes(gzip.compress(
        b'{"userId": "u1", "traits": {"email": "a@b.c", "x": 1}}\n\n{oops\n{"type": "track"}\n'
    ))
    result = invoke("transform", "--settings", str(settings), str(src))
    assert result.exit_code == 0
    lines = [json.loads(x) for x in result.output.splitlines()]
    assert lines == [
        {"line": 1, "input": str(src), "integrationId": "u1", "attributes": {"email": "a@b.c"},
         "dropped": [{"name": "x", "reason": "not_allowlisted"}]},
        {"line": 3, "input": str(src), "skipped": "invalid_json",
         "error": "Expecting property name enclosed in double quotes: column 2"},
        {"line": 4, "input": str(src), "skipped": "not_identify",
         "error": "type is 'track'; only identify events are sent"},
    ]


def test_transform_reads_stdin_and_needs_no_key() -> None:
    result = invoke("transform", "--custom-attribute", "plan",
                    input='{"userId": 7, "traits": {"plan": "p"}}\n')
    assert json.loads(result.output) == {"line": 1, "input": "<stdin>", "integrationId": "7",
                                         "attributes": {"plan": "p"}, "dropped": []}


def test_transform_settings_error_exits_2(tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text('{"customAttributes": [1]}')
    result = invoke("transform", "--settings", str(settings), "-")
    assert result.exit_code == 2
    assert result.output == "Error: settings.json: customAttributes[0]: expected a string\n"
    missing = invoke("transform", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2 and "nope.jsonl: no such file" in missing.output


def test_check_config_ok_and_wrong_key(talon_emulator, tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"apiKey": talon_emulator.api_key,
                                "applicationDomain": talon_emulator.url,
                                "customAttributes": ["email", "consent_*"]}))
    result = invoke("check-config", "--settings", str(good))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("ok   apiKey")
    assert "2 entries (1 patterns)" in result.output
    bad = invoke("check-config", "--settings", str(good), "--api-key", KEY)
    assert bad.exit_code == 1
    assert "FAIL apiKey ****4321: Talon.One rejected the API key (401" in bad.output
    assert KEY not in bad.output


def test_check_config_unreachable_and_invalid(tmp_path: Path) -> None:
    result = invoke("check-config", "--api-key", KEY, "--application-domain",
                    "http://127.0.0.1:9", "--timeout", "1")
    assert result.exit_code == 1
    assert "FAIL applicationDomain: cannot reach http://127.0.0.1:9" in result.output
    result = invoke("check-config", "--api-key", KEY)
    assert result.exit_code == 1 and "applicationDomain: missing" in result.output


def test_emulator_help_documents_every_flag() -> None:
    out = invoke("emulator", "--help").output
    for flag in ("--port", "--api-key", "--attribute", "--attributes-file", "--db",
                 "--rate-limit", "--latency-ms", "--fail-rate", "--fail-status", "--seed"):
        assert flag in out


def test_emulator_command_serves(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "talon_classic.cli", "emulator", "--port", "0", "--api-key", KEY,
         "--attribute", "email", "--db", str(tmp_path / "e.db")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stdout.readline()
        url = re.search(r"http://\S+", first).group(0)
        assert KEY not in first
        ok = requests.put(f"{url}/v2/customer_profiles/u1", json={"attributes": {"email": "e"}},
                          headers={"Authorization": f"ApiKey-v1 {KEY}"}, timeout=5)
        assert ok.status_code == 200
        unknown = requests.put(f"{url}/v2/customer_profiles/u1", json={"attributes": {"x": 1}},
                               headers={"Authorization": f"ApiKey-v1 {KEY}"}, timeout=5)
        assert unknown.status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_progress_line_shows_rate_and_eta(capsys) -> None:
    """The TTY progress line (drawn only on a terminal, so tested directly)."""
    from types import SimpleNamespace

    from talon_classic.cli.identify import Progress
    from talon_classic.summary import Summary

    clock = iter([0.0, 10.0, 10.0, 10.0])
    summary = Summary(clock=lambda: next(clock))
    summary.events_read, summary.profiles_upserted = 5000, 4000
    source = SimpleNamespace(name="big.jsonl", size=1000, consumed=250)
    progress = Progress(enabled=True)
    progress(SimpleNamespace(summary=summary, current_input=source))
    progress.close()
    err = capsys.readouterr().err
    assert "5,000 events read  4,000 profiles sent  500 events/s  big.jsonl 25%, ETA 30s" in err
    Progress(enabled=False)(SimpleNamespace(summary=summary, current_input=source))
    assert capsys.readouterr().err == ""


def test_emulator_mode_creates_engage_attributes_as_they_appear() -> None:
    """--emulator: the allowlist exists from the start, Engage names before their batch."""
    from talon_classic.cli.identify import register_engage_names as _register_engage_names
    from talon_classic.emulator import Emulator, EmulatorConfig
    from talon_classic.transform import Engine

    app = Emulator(EmulatorConfig(attributes=frozenset({"email", "consent_*"})))
    engine = Engine(["email", "consent_*"])
    before_send = _register_engage_names(engine, app)
    engine.transform({"userId": "u", "traits": {"VIP Customers": True},
                      "context": {"personas": {"computation_class": "audience",
                                               "computation_key": "VIP Customers"}}})
    before_send(None)
    assert app.config.attributes == {"email", "consent_*", "vip_customers"}


def test_transform_without_an_allowlist_warns_once() -> None:
    result = CliRunner().invoke(main, ["transform"], input='{"userId": "u1", "traits": {"a": 1}}\n'
                                '{"userId": "u2", "traits": {"b": 2}}\n')
    assert result.exit_code == 0
    warnings = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
    assert warnings == ["warning: customAttributes is empty, so every attribute but Engage "
                        "audiences and computed traits is dropped as not_allowlisted (give "
                        "--settings FILE or --custom-attribute NAME)"]
    assert len(result.stdout.splitlines()) == 2


def test_transform_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"userId": "u1", "traits": {"email": "a@b"}}\n' * 50_000)
    proc = subprocess.Popen([sys.executable, "-m", "talon_classic", "transform",
                             "--custom-attribute", "email", str(src)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=30) == 0
    assert proc.stderr.read() == b""


def test_every_option_has_help() -> None:
    """Each command's --help gives every option a purpose (deadletter list --limit had none)."""
    from talon_classic.cli import main as group

    def walk(command, path):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, command

    for path, command in walk(group, []):
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{' '.join(path)} {param.opts[0]} has no help"


@pytest.mark.parametrize("args, env, source", [
    (["serve", "--spool", "x.db", "--write-key", "wk\nXYZZY"], {}, "--write-key"),
    (["serve", "--spool", "x.db"], {"TALON_WRITE_KEYS": "good,wk\x1bXYZZY"}, "TALON_WRITE_KEYS"),
    (["serve", "--spool", "x.db", "--write-key", "ok", "--webhook-secret", "s\rXYZZY"], {},
     "--webhook-secret"),
    (["emulator"], {"TALON_EMULATOR_API_KEY": "k\x7fXYZZY"}, "TALON_EMULATOR_API_KEY"),
])
def test_every_secret_is_checked_and_never_echoed(tmp_path: Path, args, env, source) -> None:
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {source}: ") and "control character" in result.output
    assert "XYZZY" not in result.output
    assert not (tmp_path / "x.db").exists()


def test_emulator_key_from_the_environment_stays_out_of_ps(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "talon_classic", "emulator", "--port", "0"],
                            env={**os.environ, "TALON_EMULATOR_API_KEY": "env-only-key-123456"},
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = re.search(r"http://\S+", proc.stdout.readline()).group(0)
        ok = requests.get(url + "/v2/authping",
                          headers={"Authorization": "ApiKey-v1 env-only-key-123456"}, timeout=5)
        assert ok.status_code == 204
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"env-only-key" not in cmdline
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("command", [["emulator"], ["serve", "--spool", "{tmp}/s.db",
                                                  "--write-key", "wk", "--emulator"]])
def test_a_port_in_use_is_one_line_exit_2(tmp_path: Path, command: list[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [a.replace("{tmp}", str(tmp_path)) for a in command]
        result = CliRunner().invoke(main, [*args, "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == (
        f"Error: 127.0.0.1:{port} is already in use: stop the program using it or choose "
        "another --port (0 picks a free one)")
    assert "Traceback" not in result.output


def _hostile_file(tmp_path: Path) -> tuple[Path, list[str]]:
    import hostile

    lines = [hostile.good("good-1"), *(line for _, line, _ in hostile.dropped_events()),
             hostile.SURROGATE_USER, hostile.TOO_DEEP,
             hostile.good("ctx-1", **hostile.HOSTILE_CONTEXT)]
    src = tmp_path / "hostile.jsonl"
    src.write_text("\n".join(lines) + "\n")
    return src, lines


def _allow_args() -> list[str]:
    import hostile

    return [arg for name in hostile.ALLOW for arg in ("--custom-attribute", name)]


def test_transform_reports_values_json_cannot_send(tmp_path: Path) -> None:
    """Lone surrogates, huge integers, deep nesting: one line each, dropped or skipped.

    Before: 10**400 or a lone surrogate raised a traceback; 5000 digits a ValueError.
    """
    import hostile

    src, lines = _hostile_file(tmp_path)
    result = CliRunner().invoke(main, ["transform", *_allow_args(), str(src)])
    assert result.exit_code == 0, result.output
    out = [json.loads(x) for x in result.output.splitlines()]
    assert [o["line"] for o in out] == list(range(1, len(lines) + 1))
    kinds = hostile.dropped_events()
    for o, (uid, _, name) in zip(out[1:], kinds, strict=False):
        assert o["integrationId"] == uid
        assert o["attributes"] == {"email": hostile.email(uid)}
        assert o["dropped"] == [{"name": name, "reason": "unsupported_value"}]
    after = out[1 + len(kinds):]
    assert after[0]["skipped"] == "invalid_user_id" and "lone surrogate" in after[0]["error"]
    assert after[1] == {"line": len(lines) - 1, "input": str(src), "skipped": "invalid_json",
                        "error": "nested too deeply (more than 512 levels)"}
    assert after[2]["attributes"] == {"email": hostile.email("ctx-1")}


def test_identify_dry_run_prints_every_request_and_exits_0(tmp_path: Path) -> None:
    """Before: the first bad value crashed the sender and the run exited 3."""
    import hostile

    src, _ = _hostile_file(tmp_path)
    result = CliRunner().invoke(main, [
        "identify", "--quiet", "--dry-run", "--api-key", KEY, "--application-domain",
        "https://x.talon.one", "--batch-size", "2", "--json", *_allow_args(), str(src)])
    assert result.exit_code == 0, result.output
    requests_ = [json.loads(x) for x in result.stdout.splitlines()]
    profiles = [p for r in requests_ for p in r["body"]["customerProfiles"]]
    want = ["good-1", *(uid for uid, _, _ in hostile.dropped_events()), "ctx-1"]
    assert sorted(p["integrationId"] for p in profiles) == sorted(want)
    assert all(p["attributes"] == {"email": hostile.email(p["integrationId"])} for p in profiles)
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report["exit_code"] == 0 and report["stopped"] is None
    assert report["skipped"] == {"invalid_json": 1, "invalid_user_id": 1}
    assert report["dropped"]["unsupported_value"]["count"] == len(hostile.dropped_events())


@pytest.mark.parametrize("command", [
    ["serve", "--write-key", "wk_0123456789abcdef", "--port", "0", "--spool"],
    ["emulator", "--port", "0", "--db"],
])
@pytest.mark.parametrize("kind", ["directory", "not a database"])
def test_a_spool_or_database_that_cannot_be_used_is_one_line_exit_2(
        talon_emulator, tmp_path: Path, command: list[str], kind: str) -> None:
    """Before: an sqlite3 traceback and exit 1 (found by an adversarial pass)."""
    path = tmp_path / "x.db"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"not a database, just some text" * 100)
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"apiKey": talon_emulator.api_key,
                                    "applicationDomain": talon_emulator.url}))
    args = [*command, str(path)] + (["--settings", str(settings)]
                                    if command[0] == "serve" else [])
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {path}: ") and result.output.count("\n") == 1
    assert ("is a directory" if kind == "directory" else "file is not a database") \
        in result.output


def test_the_program_ignores_ctrl_c_once_it_has_answered(tmp_path: Path) -> None:
    """Only the interpreter's shutdown is left then: a Ctrl-C there printed "Exception
    ignored ... KeyboardInterrupt" after the summary, or changed the exit status (an
    adversarial pass saw both with two quick Ctrl-C)."""
    code = ("import atexit, signal, sys\n"
            "atexit.register(lambda: print('ignored', signal.getsignal(signal.SIGINT)"
            " is signal.SIG_IGN))\n"
            "sys.argv = ['talon-classic', '--version']\n"
            "from talon_classic.cli import run\n"
            "run()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["talon-classic, version 0.1.0", "ignored True"]
    from importlib.metadata import entry_points

    (command,) = entry_points(group="console_scripts", name="talon-classic")
    assert command.value == "talon_classic.console:run"  # the installed command is run


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_transform_into_a_full_stdout_is_one_line_exit_1(tmp_path: Path) -> None:
    events = tmp_path / "in.jsonl"
    events.write_text('{"type": "identify", "userId": "u1"}\n')
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "talon_classic.cli", "transform",
                                 str(events)], stdout=full, stderr=subprocess.PIPE, text=True,
                                timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: cannot write to standard output (No space left on device)")
