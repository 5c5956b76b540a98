"""Transform throughput: (a) Engine.transform alone, (b) JSON line -> transform -> JSON line.

Run ``python benchmarks/transform_bench.py [--events 100000] [--profile] [--schema]``,
or import it and call :func:`run`. The events are generated in memory by
:mod:`benchmarks.data` (about twelve traits each, a nested address, a list,
an Engage audience identify in every tenth). Single core, best of three
runs. Targets: (a) >= 200,000 events/s, (b) >= 80,000 events/s.

(b) reads each line as ``talon-classic transform`` does
(:func:`talon_classic.jsonio.loads_quick`, and again with
:func:`talon_classic.intake.reread` when the result says ``approximate``) and writes the result with
:func:`talon_classic.jsonio.dumps` (orjson when installed).
``--profile`` adds a cProfile of ``Engine.transform`` over the same events.
``--schema`` adds (a) with :data:`SCHEMA`, a typed schema of every allowlisted
attribute (issue 13: typing may cost at most 15% of (a)), side by side.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import os
import pstats
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.data import ALLOWLIST, events, lines  # noqa: E402
from talon_classic.intake import reread  # noqa: E402
from talon_classic.jsonio import dumps, loads_quick  # noqa: E402
from talon_classic.schema import Schema  # noqa: E402
from talon_classic.transform import Engine  # noqa: E402

#: What reads and writes the lines of (b).
CODEC = "talon_classic.jsonio with " + (
    "orjson" if importlib.util.find_spec("orjson") else "the standard library")

#: Talon.One's types for the benchmark's allowlist (and its Engage audience).
SCHEMA = Schema({
    "email": "string", "name": "string", "first_name": "string", "plan": "string",
    "age": "number", "tags": "(list string)", "address_city": "string",
    "address_country": "string", "address_geo_lat": "number", "company_name": "string",
    "newsletter": "boolean", "high_value_customers": "boolean",
}, source="benchmark")
#: Typed (a) may be at most this much slower than untyped (a).
TYPED_MAX_COST = 0.15
TARGET_ALONE = 200_000
TARGET_LINES = 80_000
ROUNDS = 3


def _best(fn: Callable[[], None], n: int, rounds: int = ROUNDS) -> float:
    """Events/s of the fastest of ``rounds`` calls of ``fn`` over ``n`` events."""
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - start))
    return best


def run(events: int = 100_000) -> dict[str, float]:
    """Return events/s for ``transform`` (alone) and ``line_to_line``."""
    n = events
    engine = Engine(ALLOWLIST)
    decoded = list(_events(n))
    raw = list(lines(n))
    transform = engine.transform

    def alone() -> None:
        for event in decoded:
            transform(event)

    def line_to_line() -> None:
        for line in raw:
            result = transform(loads_quick(line))
            if result.approximate:
                result = reread(engine, line)
            dumps(result.as_dict())

    return {"transform": _best(alone, n), "line_to_line": _best(line_to_line, n)}


def run_typed(events: int = 100_000, chunk: int = 2_000) -> dict[str, float]:
    """Events/s of ``transform`` alone without and with :data:`SCHEMA`, side by side.

    The events are timed in chunks of ``chunk``, each chunk by one engine then
    the other, and each figure is its engine's fastest chunk over
    :data:`ROUNDS` passes, in CPU time (a process waiting for the CPU is not
    slower): a busy neighbour slows both alike, and a burst of it spoils a
    few chunks, not a whole figure.
    """
    decoded = list(_events(events))
    parts = [decoded[i:i + chunk] for i in range(0, len(decoded), chunk)]
    engines = {"untyped": Engine(ALLOWLIST).transform,
               "typed": Engine(ALLOWLIST, SCHEMA).transform}
    fastest = dict.fromkeys(engines, float("inf"))  # seconds per event
    clock = time.process_time
    for _ in range(ROUNDS):
        for part in parts:
            for name, transform in engines.items():
                start = clock()
                for event in part:
                    transform(event)
                fastest[name] = min(fastest[name], (clock() - start) / len(part))
    best = {name: 1 / seconds for name, seconds in fastest.items()}
    best["cost"] = 1 - best["typed"] / best["untyped"]
    return best


_events = events  # ``run``'s parameter shadows the generator's name


def profile(events: int = 100_000, top: int = 15) -> str:
    """cProfile ``Engine.transform`` over the benchmark events; the top rows by own time."""
    engine = Engine(ALLOWLIST)
    decoded = list(_events(events))
    transform = engine.transform
    profiler = cProfile.Profile()
    profiler.enable()
    for event in decoded:
        transform(event)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


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


def main(argv: list[str] | None = None) -> None:
    """Print the figures next to their targets (and a profile with ``--profile``)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events per run")
    parser.add_argument("--profile", action="store_true", help="also cProfile Engine.transform")
    parser.add_argument("--schema", action="store_true",
                        help="also (a) with a typed schema, side by side")
    args = parser.parse_args(argv)
    figures = run(args.events)
    print(f"Python {sys.version.split()[0]}, {cpu_model()}, JSON via {CODEC}, "
          f"{args.events:,} events, best of {ROUNDS}")
    print(f"(a) transform alone           {figures['transform']:>10,.0f} events/s  "
          f"(target {TARGET_ALONE:,})")
    print(f"(b) line -> transform -> line {figures['line_to_line']:>10,.0f} events/s  "
          f"(target {TARGET_LINES:,})")
    if args.schema:
        typed = run_typed(args.events)
        print(f"(a) without a schema          {typed['untyped']:>10,.0f} events/s")
        print(f"(a) with a schema             {typed['typed']:>10,.0f} events/s  "
              f"(cost {typed['cost']:.1%}, at most {TYPED_MAX_COST:.0%})")
    if args.profile:
        print(profile(args.events))


if __name__ == "__main__":
    main()
