"""Memory while streaming: peak RSS must stay flat as the input grows.

Streams ``--events`` (default 2,000,000) generated identify events into
``talon-classic identify - --dry-run --output /dev/null`` through a pipe
and reads the child's resident set size from /proc at 0.5 M, 1 M and 2 M
events written, and its peak (VmHWM) at the end. Target: under 300 MB and
not growing with the input.

Then the same stream is delivered for real, with the ordering ledger, to a
stand-in Talon.One in this process that reads each request and answers 204
(so only talon-classic's memory is measured, not a store of a million
profiles): the same RSS samples, and the state file's size per million
profiles.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class _Discard(BaseHTTPRequestHandler):
    """A stand-in Talon.One: reads the body, answers 204, remembers nothing."""

    protocol_version = "HTTP/1.1"

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def run(events: int = 2_000_000, users: int = 1_000_000, deliver: bool = False) -> dict:
    """Stream and sample; return RSS figures in MB (``deliver``: for real, with a ledger)."""
    marks = sorted({events // 4, events // 2, events})
    with tempfile.TemporaryDirectory(prefix="talon-mem-") as tmp:
        settings = os.path.join(tmp, "settings.json")
        server = None
        domain = "https://bench.talon.one"
        flags = ["--dry-run", "--output", os.devnull]
        state = os.path.join(tmp, "state.db")
        if deliver:
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Discard)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            domain = f"http://127.0.0.1:{server.server_address[1]}"
            flags = ["--state", state, "--rate-limit", "0", "--dead-letter",
                     os.path.join(tmp, "dead.jsonl")]
        with open(settings, "w") as fh:
            json.dump({"apiKey": "k", "applicationDomain": domain,
                       "customAttributes": ALLOWLIST}, fh)
        proc = subprocess.Popen(
            [sys.executable, "-m", "talon_classic.cli", "identify", "-", "--settings", settings,
             *flags, "--quiet", "--json"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={**os.environ, "XDG_STATE_HOME": os.path.join(tmp, "state-home")},
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
        if server is not None:
            server.shutdown()
        peak = max(peak, *samples.values())
        report = json.loads(out)
        fig = {"events": events, "samples": samples, "peak_mb": peak, "elapsed": elapsed,
               "events_read": report["events_read"], "ok": peak < LIMIT_MB, "deliver": deliver}
        if deliver:
            profiles = report["profiles_upserted"] + report["profiles_current"]
            from talon_classic.ledger import Ledger

            with Ledger(state, domain) as ledger:  # its own count of what it holds
                known = ledger.count()
            fig.update(profiles=profiles, known=known,
                       bytes_per_million=os.path.getsize(state) / max(1, known) * 1e6)
        return fig


def report(fig: dict) -> str:
    """Printed lines."""
    parts = ", ".join(f"{n / 1e6:g} M: {mb:,.0f} MB" for n, mb in fig["samples"].items())
    how = ("delivered with the ordering ledger" if fig.get("deliver") else "streamed through "
           "--dry-run")
    text = (f"memory: {fig['events']:,} events {how} in {fig['elapsed']:.0f}s "
            f"({fig['events_read']:,} read)\n  RSS at {parts}; peak {fig['peak_mb']:,.0f} MB "
            f"(limit {LIMIT_MB} MB: {'ok' if fig['ok'] else 'OVER'})")
    if fig.get("deliver"):
        text += (f"\n  state file: {fig['known']:,} profiles, "
                 f"{fig['bytes_per_million'] / 1e6:,.0f} MB per million profiles")
    return text


def main() -> None:
    """Run with the issue's defaults and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    args = parser.parse_args()
    print(report(run(args.events, args.users)))
    print(report(run(args.events, args.users, deliver=True)))


if __name__ == "__main__":
    main()
