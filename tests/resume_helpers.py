"""What the kill -9 + ``--resume`` tests share: a run killed once its checkpoint holds batches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path


def kill_after(argv: list[str], checkpoint: Path, batches: int = 20,
               timeout: float = 60.0) -> int:
    """Start ``argv``, kill it with SIGKILL once ``checkpoint``'s watermark reaches
    ``batches``, and return how many batches the checkpoint acknowledges (up to the
    watermark and those done beyond it). Then wait a moment, so the requests the killed
    process had in flight finish on the server's side before anything is counted."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if checkpoint.exists() and json.loads(checkpoint.read_text())["watermark"] >= batches:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads(checkpoint.read_text())
    time.sleep(0.3)
    return int(state["watermark"]) + 1 + len(state["done"])


def resume(argv: list[str]) -> dict:
    """Run ``argv`` (a ``--resume --json`` run) to its end; its report.

    Give it a short ``--read-timeout``: the state file tells a run resumed after kill -9
    that a request of the killed run may still land, so what it delivers in its first
    2 x read timeout is repaired before it exits (:func:`before_repairs`)."""
    finish = subprocess.run(argv, capture_output=True, text=True)
    assert finish.returncode == 0, finish.stderr
    return dict(json.loads(finish.stdout))


def before_repairs(requests: list[dict], report: dict) -> list[dict]:
    """The requests a resumed run sent before its repairs (see ``profiles_repaired``).

    The state file tells a run resumed after kill -9 that a request of the killed run may
    still land, so what it delivers in its first 2 x read timeout goes once more at the end:
    those repair requests are the last ones, and carry ``profiles_repaired`` profiles."""
    repaired, cut = 0, len(requests)
    while repaired < report["profiles_repaired"] and cut:
        cut -= 1
        repaired += requests[cut]["profiles"]
    assert repaired == report["profiles_repaired"], (repaired, report["profiles_repaired"])
    return requests[:cut]
