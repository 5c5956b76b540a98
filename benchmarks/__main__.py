"""``python -m benchmarks``: every benchmark, one table.

Options: ``--quick`` runs small inputs (a smoke run of the same code).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

from benchmarks import (
    audience_bench,
    baseline_bench,
    compact_bench,
    e2e_bench,
    instructions_bench,
    memory_bench,
    serve_bench,
    transform_bench,
)


def main() -> None:
    """Run transform (without and with a schema), end-to-end, memory, serve, audience and
    compaction benchmarks, then the main figures side by side with round one's code (timed,
    and in instructions counted by valgrind); print their figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny inputs, to check it runs")
    quick = parser.parse_args().quick
    start = time.monotonic()
    print(f"talon-classic benchmarks on {platform.node() or 'this machine'}: "
          f"Python {sys.version.split()[0]}, {transform_bench.cpu_model()}, "
          f"{__import__('os').cpu_count()} CPUs")
    t = transform_bench.run(5_000 if quick else 100_000)
    print(f"transform alone              {t['transform']:>10,.0f} events/s  "
          f"(target {transform_bench.TARGET_ALONE:,})")
    print(f"line -> transform -> line    {t['line_to_line']:>10,.0f} events/s  "
          f"(target {transform_bench.TARGET_LINES:,})")
    typed = transform_bench.run_typed(5_000 if quick else 100_000)
    print(f"transform, no schema         {typed['untyped']:>10,.0f} events/s")
    print(f"transform, with a schema     {typed['typed']:>10,.0f} events/s  "
          f"(typing costs {typed['cost']:.1%}, at most {transform_bench.TYPED_MAX_COST:.0%})")
    e = e2e_bench.run(*((3_000, 2_000, 1.0, 1) if quick else (200_000, 150_000, 10.0, 2)))
    print(e2e_bench.report(e))
    m = memory_bench.run(*((20_000, 10_000) if quick else (2_000_000, 1_000_000)))
    print(memory_bench.report(m))
    m = memory_bench.run(*((20_000, 10_000) if quick else (2_000_000, 1_000_000)), deliver=True)
    print(memory_bench.report(m))
    print(serve_bench.report(serve_bench.run(1.0 if quick else 5.0)))
    print(audience_bench.report(audience_bench.run(5_000 if quick else 1_000_000)))
    print(compact_bench.report(
        compact_bench.run(20_000, 10_000, (3_000, 2_000), big_events=0) if quick
        else compact_bench.run()))
    try:
        print(baseline_bench.report(baseline_bench.run(
            rounds=1 if quick else 5, events=4_000 if quick else 200_000,
            users=3_000 if quick else 150_000)))
    except baseline_bench.NoBaseline as exc:
        print(f"against {baseline_bench.ROUND_ONE}: skipped, {exc}")
    try:
        print(instructions_bench.report(instructions_bench.run(
            events=500 if quick else 10_000)))
    except baseline_bench.NoBaseline as exc:
        print(f"instructions per event against {baseline_bench.ROUND_ONE}: skipped, {exc}")
    print(f"total {time.monotonic() - start:.0f}s")


if __name__ == "__main__":
    main()
