"""Side by side with an earlier revision, in instructions: the same figure on every run.

``python benchmarks/instructions_bench.py [--rev REV] [--events N]``

Timings on a shared VM move by 10-25% from one run to the next, which hides
a change of a few percent however many rounds are taken
(:mod:`benchmarks.baseline_bench` takes the median of five). The number of
machine instructions a run executes hardly moves (with a fixed hash seed,
``PYTHONHASHSEED=0``: 0.01% between two dry runs, 0.5% for transform alone,
up to 3% between bulk sends, whose threads, HTTP and timing vary): it is counted here with valgrind's
cachegrind (``--cache-sim=no``), for the earlier revision's package (default
round one's, :data:`benchmarks.baseline_bench.ROUND_ONE`, taken out of git)
and this tree's, per event:

* ``Engine.transform`` alone, and JSON line -> transform -> JSON line
  (each package with its own JSON module): a child process run with and
  without the loop over ``N`` events, the difference divided by ``N``;
* ``identify --dry-run`` and ``identify`` in bulk to the emulator (with the
  state file and, for this tree, ``--no-state``): runs of ``N`` and ``3N``
  events, the difference divided by ``2N``, so start-up does not count.

Every kind of run goes once, uncounted, on a tiny input before any is
counted: each package runs from bytecode compiled into the benchmark's own
cache, and the first run there compiles every module it imports, the
standard library's too (billions of instructions, which would otherwise
land in whichever run came first and make its difference meaningless).

What instructions do not show: cache misses and waiting (memory traffic,
the GIL handed between threads, SQLite's fsync). A change that only moves
memory around (freeing a batch's events earlier, say) shows in the timings,
not here; one that does less work shows here first. Under valgrind a run
takes 20-50 times as long: the default 10,000 events take about five minutes
in all. Without valgrind on PATH the benchmark says so and measures nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.baseline_bench import (  # noqa: E402
    CHILD_PRELUDE,
    ROOT,
    ROUND_ONE,
    NoBaseline,
    compile_package,
    extract,
    package_env,
    warm,
)
from benchmarks.data import ALLOWLIST, write  # noqa: E402
from benchmarks.e2e_bench import KEY, emulator  # noqa: E402

#: A change smaller than this is within what the counts move between runs.
TOLERANCE = 0.01

# The child, run as ``-c CODE TREE EVENTS ROOT MODE``; MODE ``setup`` builds everything the
# others use and stops there, so (MODE - setup) / EVENTS is the loop's own work per event.
_CHILD = CHILD_PRELUDE + r"""
mode = sys.argv[4]
if mode == "transform":
    for event in decoded:
        transform(event)
elif mode == "line_to_line":
    for line in raw:
        dumps(from_line(line).as_dict())
"""

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def valgrind() -> str | None:
    """The valgrind program, or None when it is not installed."""
    return shutil.which("valgrind")


def counted(argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
            ok: tuple[int, ...] = (0,)) -> int:
    """Instructions ``argv`` executes, counted by cachegrind (all its threads)."""
    tool = valgrind()
    if tool is None:
        raise NoBaseline("valgrind is not installed (apt install valgrind)")
    done = subprocess.run([tool, "--tool=cachegrind", "--cache-sim=no",
                           "--cachegrind-out-file=/dev/null", *argv],
                          capture_output=True, text=True, env=env, cwd=cwd)
    found = _REFS.search(done.stderr)
    if done.returncode not in ok or found is None:
        raise SystemExit(f"instructions: {' '.join(argv[:6])} failed "
                         f"(exit {done.returncode}): {done.stderr[-600:]}")
    return int(found.group(1).replace(",", ""))


def _env(tree: str, work: str, state: str) -> dict[str, str]:
    # a fixed hash seed: dicts and sets laid out the same way in every run (0.7% otherwise)
    return {**package_env(tree, work), "XDG_STATE_HOME": state, "PYTHONHASHSEED": "0"}


def _identify(tree: str, work: str, src: str, settings: str, *flags: str) -> int:
    """Instructions of one ``identify`` of ``tree``'s package, with a fresh state home."""
    state = tempfile.mkdtemp(prefix="state-", dir=work)
    try:
        return counted([sys.executable, "-m", "talon_classic.cli", "identify", src,
                        "--settings", settings, "--quiet", "--dead-letter",
                        os.path.join(work, "dead.jsonl"), *flags],
                       env=_env(tree, work, state), cwd=work)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _warm(tree: str, work: str, tiny: str, dry: str) -> None:
    """Every kind of run once on ``tiny`` input, uncounted (see :func:`warm`)."""
    child = [sys.executable, "-c", _CHILD, tree, "10", ROOT, "line_to_line"]
    subprocess.run(child, env=_env(tree, work, work), cwd=work, check=True, capture_output=True)
    warm(tree, work, tiny, dry)


def _settings(work: str, name: str, url: str) -> str:
    path = os.path.join(work, name)
    with open(path, "w") as fh:
        json.dump({"apiKey": KEY, "applicationDomain": url, "customAttributes": ALLOWLIST}, fh)
    return path


def run(rev: str = ROUND_ONE, events: int = 10_000) -> dict:
    """Instructions per event of ``rev``'s package (``base``) and this tree's (``now``, and
    ``now_no_state`` for the bulk send), under ``per_event``."""
    if valgrind() is None:
        raise NoBaseline("valgrind is not installed (apt install valgrind)")
    tmp = tempfile.mkdtemp(prefix="talon-instructions-bench-")
    try:
        base = extract(rev, os.path.join(tmp, "base"))
        work = os.path.join(tmp, "work")
        os.makedirs(work)
        small = write(os.path.join(tmp, "small.jsonl"), events, events * 3 // 4)
        big = write(os.path.join(tmp, "big.jsonl"), 3 * events, events * 9 // 4)
        dry = _settings(work, "dry.json", "https://bench.talon.one")
        tiny = write(os.path.join(tmp, "tiny.jsonl"), 10, 10)
        per: dict[str, dict[str, float]] = {"base": {}, "now": {}, "now_no_state": {}}
        for tree in (base, ROOT):
            compile_package(tree, work)
            _warm(tree, work, tiny, dry)
        for name, tree in (("base", base), ("now", ROOT)):
            child = [sys.executable, "-c", _CHILD, tree, str(events)]
            setup = counted([*child, ROOT, "setup"], env=_env(tree, work, work), cwd=work)
            for mode in ("transform", "line_to_line"):
                loop = counted([*child, ROOT, mode], env=_env(tree, work, work), cwd=work)
                per[name][mode] = (loop - setup) / events
            runs = [_identify(tree, work, src, dry, "--dry-run", "--output", os.devnull)
                    for src in (small, big)]
            per[name]["dry_run"] = (runs[1] - runs[0]) / (2 * events)
        for name, tree, flags in (("base", base, ()), ("now", ROOT, ()),
                                  ("now_no_state", ROOT, ("--no-state",))):
            runs = []
            for src in (small, big):
                with emulator("--rate-limit", "60", "--latency-ms", "50") as url:
                    runs.append(_identify(tree, work, src, _settings(work, "bulk.json", url),
                                          *flags))
            per[name]["bulk"] = (runs[1] - runs[0]) / (2 * events)
        return {"rev": rev, "events": events, "per_event": per}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(fig: dict) -> str:
    """The counts as printed lines, each of this tree's beside the earlier revision's."""
    per = fig["per_event"]
    rows = [("transform alone", "transform", "now"),
            ("line -> transform -> line", "line_to_line", "now"),
            ("identify --dry-run", "dry_run", "now"),
            ("bulk, state file", "bulk", "now"),
            ("bulk, --no-state", "bulk", "now_no_state")]
    lines = [f"instructions per event against {fig['rev']} (valgrind, {fig['events']:,} and "
             f"{3 * fig['events']:,} events; dry runs and transform within 0.5% from run "
             "to run, bulk sends within 3%)",
             f"  {'':27s}{fig['rev']:>12s}{'now':>12s}"]
    for label, key, name in rows:
        base, mine = per["base"].get(key), per[name].get(key)
        if not base or not mine:
            continue
        gain = base / mine - 1  # fewer instructions: better
        lines.append(f"  {label:27s}{base:>12,.0f}{mine:>12,.0f} instr.   {gain:+.1%}"
                     + ("  more" if gain < -TOLERANCE else ""))
    return "\n".join(lines)


def main() -> None:
    """Count against ``--rev`` and print."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default=ROUND_ONE, help="the earlier revision (a git commit)")
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    try:
        print(report(run(args.rev, args.events)))
    except NoBaseline as exc:
        raise SystemExit(f"instructions: {exc}") from None


if __name__ == "__main__":
    main()
