"""Side by side with an earlier revision: is anything slower than it was?

``python benchmarks/baseline_bench.py [--rev REV] [--rounds N] [--events N]``

The revision's ``talon_classic`` package (default :data:`ROUND_ONE`, the
code round one ended with) is taken out of git with ``git archive`` into a
temporary directory; this file's code drives both packages the same way.
Figures taken at different times on a shared machine differ by 10% or more,
so each round measures the earlier revision, then this one, back to back,
and the change reported is the median of the rounds' ratios (the best
figure of each side is shown too):

* ``Engine.transform`` alone, and JSON line -> transform -> JSON line, in
  CPU time on one core, each package with its own JSON module
  (``talon_classic.jsonio``, or ``talon_classic.reader`` before it existed);
* ``identify --dry-run --output /dev/null``: events/s and CPU µs per event;
* ``identify`` in bulk to this tree's emulator in its own process
  (``--rate-limit 60 --latency-ms 50``, a fresh one per run): events/s and
  the CPU µs per event of ``identify`` (user + system; the emulator's
  own is not counted). This revision runs twice, with its ordering
  ledger (a state file, the default) and with ``--no-state``, since the
  earlier revision kept no state between runs.

Each package runs from its own directory (``PYTHONPATH``, and a working
directory that holds no ``talon_classic``), so neither can import the other.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.compact_bench import _timed  # noqa: E402
from benchmarks.data import ALLOWLIST, write  # noqa: E402
from benchmarks.e2e_bench import KEY, _cli, emulator  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The last commit of round one: the figures this project promised not to lose.
ROUND_ONE = "57e13bf"
#: A figure this much below the earlier revision's is reported as slower.
TOLERANCE = 0.03

#: What a child process starts with, run as ``python -c CODE TREE EVENTS ROOT ...``: one
#: package's engine and JSON module (``TREE``), and ``EVENTS`` events both decoded and as
#: lines (``ROOT``'s benchmarks data module), as ``decoded`` and ``raw``.
CHILD_PRELUDE = r"""
import json, sys, time
tree, events = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, tree)
sys.path.insert(1, sys.argv[3])  # the benchmarks' own data module
import talon_classic
assert talon_classic.__file__.startswith(tree), talon_classic.__file__
try:
    from talon_classic.jsonio import dumps, loads
except ImportError:  # before one JSON module for the whole package
    from talon_classic.reader import dumps, loads
from talon_classic.transform import Engine
from benchmarks.data import ALLOWLIST, events as make_events, lines

engine = Engine(ALLOWLIST)
transform = engine.transform
try:  # as the package reads a line: quickly, again exactly only when the result needs it
    from talon_classic.intake import reread
    from talon_classic.jsonio import loads_quick

    def from_line(line):
        result = transform(loads_quick(line))
        return reread(engine, line) if result.approximate else result
except ImportError:  # before that (round one): exactly, every line
    def from_line(line):
        return transform(loads(line))
decoded = list(make_events(events))
raw = list(lines(events))
"""

# The child: one package's transform figures, in CPU time.
_CHILD = CHILD_PRELUDE + r"""
def alone():
    for event in decoded:
        transform(event)

def line_to_line():
    for line in raw:
        dumps(from_line(line).as_dict())

def cpu_rate(fn):
    start = time.process_time()
    fn()
    return events / (time.process_time() - start)

print(json.dumps({"transform": max(cpu_rate(alone) for _ in range(3)),
                  "line_to_line": max(cpu_rate(line_to_line) for _ in range(3))}))
"""


class NoBaseline(Exception):
    """The earlier revision cannot be had here (no git, or a clone without that history)."""


def extract(rev: str, into: str) -> str:
    """``talon_classic`` of ``rev`` under ``into`` (by ``git archive``); return ``into``."""
    try:
        archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "talon_classic"],
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or str(exc).encode()
        first = (detail.decode(errors="replace").strip().splitlines() or [""])[0][:200]
        raise NoBaseline(f"cannot take revision {rev} out of git ({first}); a clone with the "
                         "project's history is needed") from None
    os.makedirs(into, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def _transform(tree: str, events: int, workdir: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _CHILD, tree, str(events), ROOT],
                          capture_output=True, text=True, cwd=workdir,
                          env=package_env(None, workdir))
    if done.returncode != 0:
        raise SystemExit(f"baseline: transform of {tree} failed: {done.stderr[-600:]}")
    return json.loads(done.stdout)


def package_env(tree: str | None, workdir: str) -> dict[str, str]:
    """The environment of a run of ``tree``'s package (only it on ``PYTHONPATH``), its
    bytecode cached under ``workdir`` as an installed package's is, even where
    ``PYTHONDONTWRITEBYTECODE`` is set (as on the project's machine): otherwise every run
    compiles the package from source first, the bigger one for longer."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(workdir, "pycache")
    if tree is not None:
        env["PYTHONPATH"] = tree
    return env


def compile_package(tree: str, workdir: str) -> None:
    """Write ``tree``'s bytecode where :func:`package_env` runs find it, before any is timed."""
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    os.path.join(tree, "talon_classic")],
                   env=package_env(tree, workdir), check=True, stdout=subprocess.DEVNULL)


def warm(tree: str, workdir: str, tiny: str, dry: str) -> None:
    """A dry run and a bulk send of ``tree``'s package on ``tiny`` input (``dry``: settings of
    a dry run), before anything is measured. The first run in a fresh bytecode cache
    compiles every module it imports, the standard library's too (about a second, billions
    of instructions), which would otherwise land in whichever measured run came first."""
    env = {**package_env(tree, workdir), "XDG_STATE_HOME": os.path.join(workdir, "warm-state")}
    dead = ("--dead-letter", os.path.join(workdir, "warm-dead.jsonl"))
    with emulator("--rate-limit", "0") as url:
        settings = os.path.join(workdir, "warm.json")
        with open(settings, "w") as fh:
            json.dump({"apiKey": KEY, "applicationDomain": url, "customAttributes": ALLOWLIST},
                      fh)
        for flags in (("--settings", dry, "--dry-run", "--output", os.devnull),
                      ("--settings", settings)):
            subprocess.run(_cli("identify", tiny, "--quiet", *dead, *flags), env=env,
                           cwd=workdir, check=True, capture_output=True)


def _identify(tree: str, workdir: str, *args: str) -> dict[str, float]:
    """One ``identify`` run of ``tree``'s package: events/s and CPU µs per event."""
    env = {**package_env(tree, workdir), "XDG_STATE_HOME": os.path.join(workdir, "state-home")}
    report, seconds, cpu = _timed("identify", *args, env=env, cwd=workdir, ok=(0,))
    events = report["events_read"]
    return {"rate": events / seconds, "cpu_us": cpu / events * 1e6}


def run(rev: str = ROUND_ONE, rounds: int = 3, events: int = 200_000,
        users: int = 150_000) -> dict:
    """Every round's figures for ``rev`` (``base``) and this tree (``now``, and
    ``now_no_state``), in ``seen``: one dict per round."""
    tmp = tempfile.mkdtemp(prefix="talon-baseline-bench-")
    try:
        base = extract(rev, os.path.join(tmp, "base"))
        work = os.path.join(tmp, "work")
        os.makedirs(work)
        src = write(os.path.join(tmp, "events.jsonl"), events, users)
        dry = os.path.join(tmp, "dry.json")
        with open(dry, "w") as fh:
            json.dump({"apiKey": KEY, "applicationDomain": "https://bench.talon.one",
                       "customAttributes": ALLOWLIST}, fh)
        trees = {"base": base, "now": ROOT}
        tiny = write(os.path.join(tmp, "tiny.jsonl"), 10, 10)
        for tree in trees.values():
            compile_package(tree, work)
            warm(tree, work, tiny, dry)
        rounds_seen: list[dict[str, dict[str, float]]] = []
        for n in range(rounds):
            seen: dict[str, dict[str, float]] = {"base": {}, "now": {}, "now_no_state": {}}
            for name, tree in trees.items():
                seen[name].update(_transform(tree, events // 2, work))
                dry_run = _identify(tree, work, src, "--settings", dry, "--dry-run", "--output",
                                    os.devnull, "--dead-letter", os.path.join(work, "dead.jsonl"))
                seen[name].update(dry_rate=dry_run["rate"], dry_cpu_us=dry_run["cpu_us"])
            for name, tree, flags in (("base", base, ()), ("now", ROOT, ()),
                                      ("now_no_state", ROOT, ("--no-state",))):
                with emulator("--rate-limit", "60", "--latency-ms", "50") as url:
                    settings = os.path.join(work, f"settings-{name}-{n}.json")
                    with open(settings, "w") as fh:
                        json.dump({"apiKey": KEY, "applicationDomain": url,
                                   "customAttributes": ALLOWLIST}, fh)
                    bulk = _identify(tree, work, src, "--settings", settings, "--dead-letter",
                                     os.path.join(work, f"dead-{name}-{n}.jsonl"), *flags)
                seen[name].update(bulk_rate=bulk["rate"], bulk_cpu_us=bulk["cpu_us"])
            rounds_seen.append(seen)
        return {"rev": rev, "rounds": rounds, "events": events, "users": users,
                "seen": rounds_seen}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _lower_is_better(key: str) -> bool:
    return key.endswith("_us")


def best(fig: dict, name: str, key: str) -> float | None:
    """The best of the rounds' figures of ``name`` (``base``, ``now``, ``now_no_state``)."""
    values = [seen[name][key] for seen in fig["seen"] if key in seen[name]]
    if not values:
        return None
    return min(values) if _lower_is_better(key) else max(values)


def change(fig: dict, name: str, key: str) -> float | None:
    """How much better ``name`` is than the earlier revision (+0.05: 5% better, -0.05: 5%
    worse): the median over the rounds of each round's ratio, the two measured back to back
    (a slow spell of the machine slows both sides of a round alike)."""
    gains = []
    for seen in fig["seen"]:
        base, mine = seen["base"].get(key), seen[name].get(key)
        if base and mine:
            gains.append(base / mine - 1 if _lower_is_better(key) else mine / base - 1)
    return statistics.median(gains) if gains else None


def report(fig: dict) -> str:
    """The figures as printed lines: each of this tree's beside the earlier revision's."""
    rows = [
        ("transform alone", "transform", "events/s", "now"),
        ("line -> transform -> line", "line_to_line", "events/s", "now"),
        ("identify --dry-run", "dry_rate", "events/s", "now"),
        ("  CPU", "dry_cpu_us", "µs/event", "now"),
        ("bulk, state file", "bulk_rate", "events/s", "now"),
        ("  CPU", "bulk_cpu_us", "µs/event", "now"),
        ("bulk, --no-state", "bulk_rate", "events/s", "now_no_state"),
        ("  CPU", "bulk_cpu_us", "µs/event", "now_no_state"),
    ]
    lines = [f"against {fig['rev']}: side by side, {fig['rounds']} rounds of "
             f"{fig['events']:,} events, best figure of each, change = median of the rounds' "
             "ratios (CPU: this machine's work, not the wait)",
             f"  {'':27s}{fig['rev']:>12s}{'now':>12s}"]
    for label, key, unit, name in rows:
        base, mine, gain = best(fig, "base", key), best(fig, name, key), change(fig, name, key)
        if base is None or mine is None or gain is None:
            continue
        fmt = ",.1f" if _lower_is_better(key) else ",.0f"
        lines.append(f"  {label:27s}{base:>12{fmt}}{mine:>12{fmt}} {unit:9s}{gain:+.1%}"
                     + ("  slower" if gain < -TOLERANCE else ""))
    return "\n".join(lines)


def main() -> None:
    """Run against ``--rev`` and print."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default=ROUND_ONE, help="the earlier revision (a git commit)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    try:
        print(report(run(args.rev, args.rounds, args.events, args.events * 3 // 4)))
    except NoBaseline as exc:
        raise SystemExit(f"baseline: {exc}") from None


if __name__ == "__main__":
    main()
