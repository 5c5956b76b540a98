"""Transform throughput: (a) Engine.transform alone, (b) JSON line -> transform -> JSON line.

Run: ``python benchmarks/transform_bench.py [--events 100000]``. Single core,
best of three. Targets: (a) >= 200,000 events/s, (b) >= 80,000 events/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.data import ALLOWLIST, events, lines  # noqa: E402
from talon_classic.reader import HAVE_ORJSON, dumps, loads  # noqa: E402
from talon_classic.transform import Engine  # noqa: E402

TARGET_ALONE = 200_000
TARGET_LINES = 80_000


def _best(fn, n: int, rounds: int = 3) -> float:
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - start))
    return best


def run(n: int = 100_000) -> dict[str, float]:
    """Return events/s for both measures."""
    engine = Engine(ALLOWLIST)
    decoded = list(events(n))
    raw = list(lines(n))
    transform = engine.transform

    def alone() -> None:
        for event in decoded:
            transform(event)

    def line_to_line() -> None:
        for line in raw:
            dumps(transform(loads(line)).as_dict())

    return {"transform": _best(alone, n), "line_to_line": _best(line_to_line, n)}


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo, when there is one."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    """Print the figures next to their targets."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    n = parser.parse_args().events
    figures = run(n)
    print(f"Python {sys.version.split()[0]}, {cpu_model()}, orjson {'on' if HAVE_ORJSON else 'off'}")
    print(f"(a) transform alone          {figures['transform']:>10,.0f} events/s  "
          f"(target {TARGET_ALONE:,})")
    print(f"(b) line -> transform -> line {figures['line_to_line']:>9,.0f} events/s  "
          f"(target {TARGET_LINES:,})")


if __name__ == "__main__":
    main()
