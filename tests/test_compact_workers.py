"""`talon-classic compact --workers N`: its worker processes and the signals that end a run.

Each test runs a real ``compact`` reading stdin that never ends, so the run
stays in its transform stage, with its worker processes started, for as
long as the test needs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

#: Seconds a test waits for the worker processes to appear, or to end: a second or two,
#: unless the machine is very busy.
PATIENCE = 30.0


def start_compact(tmp_path: Path, **popen: object) -> subprocess.Popen[bytes]:
    """``compact - --workers 2``: stdin is a pipe this test keeps open."""
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"customAttributes": ["plan"]}))
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "talon_classic.cli", "compact", "-", "--settings", str(settings),
         "-o", str(tmp_path / "o.jsonl"), "--workers", "2", "-q"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, **popen)


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and parent pid, or ``None`` once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _running(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def worker_pids(parent: int, count: int = 2) -> list[int]:
    """The pids of ``parent``'s ``count`` spawned worker processes, once all have started."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            stat = _stat(int(entry))
            if stat is None or stat[1] != parent:
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:  # not the resource tracker
                found.append(int(entry))
        if len(found) >= count:
            return found
        time.sleep(0.01)
    raise AssertionError(f"{count} worker processes of {parent} never started")


def test_workers_end_when_compact_is_killed(tmp_path: Path) -> None:
    """kill -9 of the main process: its workers end within seconds (none waits for work
    forever, reparented to init)."""
    proc = start_compact(tmp_path)
    pids: list[int] = []
    try:
        pids = worker_pids(proc.pid)
        time.sleep(0.5)  # past their start-up: waiting for blocks
        assert all(_running(p) for p in pids)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline and any(_running(p) for p in pids):
            time.sleep(0.05)
        assert not any(_running(p) for p in pids)
    finally:
        proc.kill()
        for pid in filter(_running, pids):  # a failed test leaves no process behind
            os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=PATIENCE)


def test_ctrl_c_while_the_workers_start_is_one_line_and_130(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while the workers
    are still importing: no worker traceback, the one "interrupted" line, exit 130, no hang."""
    proc = start_compact(tmp_path, start_new_session=True)
    try:
        worker_pids(proc.pid)
        time.sleep(0.1)  # the workers' interpreters are up, their imports under way
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=PATIENCE)
    finally:
        try:  # a failed test leaves no process behind
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.communicate(timeout=PATIENCE)
    text = err.decode()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert text.strip().splitlines() == ["interrupted (Ctrl-C): nothing was written"], text
    assert proc.returncode == 130
