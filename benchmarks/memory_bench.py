"""Memory while streaming: peak RSS must stay flat as the input grows.

Streams ``--events`` (default 2,000,000) generated identify events into
``talon-classic identify - --dry-run --output /dev/null`` through a pipe
and reads the child's resident set size from /proc at 0.5 M, 1 M and 2 M
events written, and its peak (VmHWM) at the end. Target: under 300 MB and
not growing with the input.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.data import ALLOWLIST, line_templates  # noqa: E402

LIMIT_MB = 300


def _status(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _lines(n: int, users: int):
    """Fast event lines: a few real templates with the user and message id swapped in."""
    templates = [t + b"\n" for t in line_templates(10)]
    for i in range(n):
        yield templates[i % 10] % (i % users, i)


def run(events: int = 2_000_000, users: int = 1_000_000) -> dict:
    """Stream and sample; return RSS figures in MB."""
    marks = sorted({events // 4, events // 2, events})
    tmp = tempfile.mkdtemp(prefix="talon-mem-")
    settings = os.path.join(tmp, "settings.json")
    with open(settings, "w") as fh:
        json.dump({"apiKey": "k", "applicationDomain": "https://bench.talon.one",
                   "customAttributes": ALLOWLIST}, fh)
    proc = subprocess.Popen(
        [sys.executable, "-m", "talon_classic.cli", "identify", "-", "--settings", settings,
         "--dry-run", "--output", os.devnull, "--quiet", "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    samples = {}
    start = time.monotonic()
    chunk: list[bytes] = []
    for i, line in enumerate(_lines(events, users), 1):
        chunk.append(line)
        if len(chunk) == 5000 or i in marks:
            proc.stdin.write(b"".join(chunk))
            chunk = []
        if i in marks:
            samples[i] = _status(proc.pid, "VmRSS")
    proc.stdin.write(b"".join(chunk))
    peak = _status(proc.pid, "VmHWM")
    proc.stdin.close()
    out = proc.stdout.read()
    proc.wait()
    elapsed = time.monotonic() - start
    peak = max(peak, *samples.values())
    report = json.loads(out)
    return {"events": events, "samples": samples, "peak_mb": peak, "elapsed": elapsed,
            "events_read": report["events_read"], "ok": peak < LIMIT_MB}


def report(fig: dict) -> str:
    """Printed lines."""
    parts = ", ".join(f"{n / 1e6:g} M: {mb:,.0f} MB" for n, mb in fig["samples"].items())
    return (f"memory: {fig['events']:,} events streamed through --dry-run in {fig['elapsed']:.0f}s "
            f"({fig['events_read']:,} read)\n  RSS at {parts}; peak {fig['peak_mb']:,.0f} MB "
            f"(limit {LIMIT_MB} MB: {'ok' if fig['ok'] else 'OVER'})")


def main() -> None:
    """Run with the issue's defaults and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    args = parser.parse_args()
    print(report(run(args.events, args.users)))


if __name__ == "__main__":
    main()
