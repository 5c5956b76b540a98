"""Audience mirror: 1,000,000 members with 10% churn against the 60 requests/s emulator.

The emulator runs in its own process. The audience is first filled with
``--members`` ids by a mirror with no rate limit (setup, not measured);
then the emulator is set to Talon.One's 60 requests/s (``--latency-ms
50``) and a second mirror runs, in which 10% of the members left and as
many new ones joined: ``members / 5`` actions (half adds, half removes).

Measured on that second run (``talon-classic audience sync --mode mirror``
in its own process): the seconds spent reading the list, then the diff
and the delivery, whose rate is compared with the 60,000 actions/s
ceiling (60 requests/s x 1000 actions; target 90%), and the process's
peak RSS, which must not grow with the list (the diff is done by SQLite,
on disk).

The emulator runs with Python's cyclic garbage collector off: holding a
million members and as many profiles (millions of dicts), each of its full
collections stops every request in flight for about half a second, a pause
of the emulator that Talon.One does not have and talon-classic cannot
influence. Its objects hold no cycles, so nothing is lost by it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.e2e_bench import KEY, _cli, serving  # noqa: E402

CEILING = 60 * 1000  # requests/s x actions per request
TARGET = 0.9


@contextmanager
def emulator(*flags: str) -> Iterator[str]:
    """``talon-classic emulator`` in its own process, its cyclic GC off (see above); its URL."""
    launcher = ("import gc, sys; gc.disable(); from talon_classic.cli import main; "
                "sys.argv = ['talon-classic', *sys.argv[1:]]; main()")
    with serving([sys.executable, "-c", launcher, "emulator", "--port", "0", "--api-key", KEY,
                  "--threads", "16", *flags], "audience bench: the emulator") as url:
        yield url


def _write(path: str, ids: range | list[int]) -> str:
    with open(path, "w") as fh:
        fh.writelines(f"user-{i:08d}\n" for i in ids)
    return path


def _sync(members: str, settings: str, state: str, *extra: str) -> dict:
    done = subprocess.run(_cli("audience", "sync", members, "--settings", settings,
                               "--audience-id", "1", "--mode", "mirror", "--state", state,
                               "--json", "--quiet", *extra), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"audience sync failed ({done.returncode}): {done.stderr[-500:]}")
    return json.loads(done.stdout)


def run(members: int = 1_000_000, churn: float = 0.10) -> dict:
    """Fill an audience with ``members``, then mirror a list with ``churn`` of them replaced."""
    with tempfile.TemporaryDirectory(prefix="talon-audience-bench-") as tmp:
        state = os.path.join(tmp, "state.db")
        left = int(members * churn)
        first = _write(os.path.join(tmp, "first.txt"), range(members))
        # every 1/churn-th member leaves; as many new ids join after the last
        step = max(1, round(1 / churn)) if churn else members + 1
        second_ids = [i for i in range(members) if i % step] + list(range(members,
                                                                         members + left))
        second = _write(os.path.join(tmp, "second.txt"), second_ids)
        out: dict = {"members": members, "churn": churn}
        with emulator("--rate-limit", "0") as url:
            settings = os.path.join(tmp, "settings.json")
            with open(settings, "w") as fh:
                json.dump({"apiKey": KEY, "applicationDomain": url}, fh)
            http = requests.Session()
            http.post(f"{url}/v2/audiences", json={"name": "bench"}, timeout=10,
                      headers={"Authorization": f"ApiKey-v1 {KEY}"}).raise_for_status()
            seed = _sync(first, settings, state, "--rate-limit", "0")
            out["seed_seconds"] = seed["elapsed_s"]
            out["seed_rss_mb"] = seed["peak_rss_mb"]
            http.post(f"{url}/_emulator/config", json={"rate_limit": 60, "latency_ms": 50},
                      timeout=10).raise_for_status()
            start = time.monotonic()
            report = _sync(second, settings, state)
            out["wall_seconds"] = time.monotonic() - start
            stats = http.get(f"{url}/_emulator/audiences", timeout=60).json()["audiences"]
        actions = report["added"] + report["removed"]
        out.update(
            actions=actions, added=report["added"], removed=report["removed"],
            unchanged=report["unchanged"], requests=report["requests"],
            read_seconds=report["read_s"], delivery_seconds=report["delivery_s"],
            rate=actions / report["delivery_s"] if report["delivery_s"] else 0.0,
            rss_mb=report["peak_rss_mb"], members_after=stats[0]["members"],
        )
        out["ceiling_fraction"] = out["rate"] / CEILING
        expected = len(second_ids)
        if out["members_after"] != expected or out["added"] != left or out["removed"] != left:
            raise SystemExit(f"audience bench: wrong result ({out})")
        return out


def report(fig: dict) -> str:
    """The figures as printed lines."""
    if fig["actions"] < 60 * CEILING // 1000:  # under a second of requests: startup dominates
        verdict = "too small to judge"
    else:
        verdict = "ok" if fig["ceiling_fraction"] >= TARGET else "BELOW TARGET"
    return "\n".join([
        f"audience: mirror of {fig['members']:,} members, {fig['churn']:.0%} churn, emulator "
        "--rate-limit 60 --latency-ms 50 (separate process)",
        f"  actions   {fig['actions']:>10,}  ({fig['added']:,} added, {fig['removed']:,} "
        f"removed, {fig['unchanged']:,} unchanged, {fig['requests']:,} requests)",
        f"  read      {fig['read_seconds']:>10.2f}s the list (into the state database)",
        f"  diff+send {fig['delivery_seconds']:>10.2f}s at {fig['rate']:,.0f} actions/s = "
        f"{fig['ceiling_fraction']:.1%} of 60,000 actions/s (target {TARGET:.0%}: {verdict})",
        f"  peak RSS  {fig['rss_mb']:>10,.0f} MB (talon-classic audience sync; the fill of "
        f"{fig['members']:,}: {fig['seed_rss_mb']:,.0f} MB in {fig['seed_seconds']:.1f}s "
        "unlimited)",
    ])


def main() -> None:
    """Run with the defaults of the issue and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--churn", type=float, default=0.10)
    args = parser.parse_args()
    print(report(run(args.members, args.churn)))


if __name__ == "__main__":
    main()
