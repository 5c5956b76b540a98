"""``talon-classic serve``: acknowledged events/s for /v1/batch, and delivery rate.

Starts the emulator (``--rate-limit 60``) and ``talon-classic serve`` (spool
on local disk) as separate processes, then posts ``/v1/batch`` requests of
100 identify events from several threads for a fixed time. Prints events/s
acknowledged (target >= 20,000 on a 2-core machine) and profiles/s
delivered to the emulator while and after sending.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.data import ALLOWLIST, line_templates  # noqa: E402
from benchmarks.e2e_bench import KEY, emulator  # noqa: E402

WRITE_KEY = "bench-write-key"
TARGET = 20_000


def filesystem(path: str) -> str:
    """The filesystem type under ``path`` (from /proc/mounts; "?" elsewhere).

    The figure means something only on a real disk: on tmpfs an fsync is free.
    """
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                _, point, fstype = line.split()[:3]
                if os.path.realpath(path).startswith(point) and len(point) > len(best):
                    best, kind = point, fstype
    except OSError:
        pass
    return kind


def run(seconds: float = 5.0, senders: int = 4, spool_dir: str | None = None) -> dict:
    """Send for ``seconds``; return acknowledged and delivered rates."""
    with tempfile.TemporaryDirectory(prefix="talon-serve-", dir=spool_dir) as tmp:
        with emulator("--rate-limit", "60") as emu_url:
            settings = os.path.join(tmp, "settings.json")
            with open(settings, "w") as fh:
                json.dump({"apiKey": KEY, "applicationDomain": emu_url,
                           "customAttributes": ALLOWLIST}, fh)
            proc = subprocess.Popen(
                [sys.executable, "-m", "talon_classic.cli", "serve", "--settings", settings,
                 "--spool", os.path.join(tmp, "spool.db"), "--port", "0", "--write-key", WRITE_KEY,
                 "--threads", "8"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                url = re.search(r"http://\S+", proc.stdout.readline()).group(0)
                # every request gets fresh messageIds (no duplicates)
                templates = line_templates(100)
                acked = [0] * senders
                stop = time.monotonic() + seconds

                host, port = url.removeprefix("http://").rsplit(":", 1)
                auth = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()

                def send(n: int) -> None:
                    # plain http.client with keep-alive: the sender should cost little CPU
                    conn = http.client.HTTPConnection(host, int(port), timeout=30)
                    k = n
                    while time.monotonic() < stop:
                        base = k * 100
                        body = b'{"batch":[' + b",".join(
                            t % ((base + i) % 150_000, base + i) for i, t in enumerate(templates)
                        ) + b"]}"
                        conn.request("POST", "/v1/batch", body=body,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": auth})
                        r = conn.getresponse()
                        r.read()
                        if r.status == 200:
                            acked[n] += 100
                        k += senders

                start = time.monotonic()
                threads = [threading.Thread(target=send, args=(n,)) for n in range(senders)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                sent_for = time.monotonic() - start
                total = sum(acked)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    health = requests.get(f"{url}/health").json()
                    if health["spool_depth"] == 0:
                        break
                    time.sleep(0.2)
                drained = time.monotonic() - start
                stats = requests.get(f"{emu_url}/_emulator/stats").json()
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        return {"acked": total, "ack_rate": total / sent_for, "seconds": sent_for,
                "delivered_profiles": stats["profile_updates"],
                "delivery_rate": stats["profile_updates"] / drained, "drained": drained,
                "filesystem": filesystem(tmp)}


def report(fig: dict) -> str:
    """Printed lines."""
    return (f"serve: {fig['acked']:,} events acknowledged in {fig['seconds']:.1f}s = "
            f"{fig['ack_rate']:,.0f} events/s (target {TARGET:,}; spool on "
            f"{fig.get('filesystem', '?')}); "
            f"{fig['delivered_profiles']:,} profile updates delivered, spool empty after "
            f"{fig['drained']:.1f}s ({fig['delivery_rate']:,.0f} profiles/s)")


def main() -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--spool-dir", metavar="DIR",
                        help="where the spool goes (default: the temporary directory)")
    args = parser.parse_args()
    print(report(run(args.seconds, args.senders, args.spool_dir)))


if __name__ == "__main__":
    main()
