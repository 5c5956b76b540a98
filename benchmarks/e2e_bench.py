"""End to end: bulk vs --single against the emulator in its own process.

The emulator runs as Talon.One would limit us: ``--rate-limit 60
--latency-ms 50``. The bulk run delivers the whole file; the ``--single``
run (one request per profile, the classic destination's way) is stopped
after a fixed time and its rate reported. Prints profiles/s for both, the
ratio, the fraction of the 60,000 profiles/s ceiling reached, peak RSS of
the talon-classic process, and the emulator's own ingest rate (so it is
visible when the emulator, not talon-classic, is the limit).

The ordering ledger's cost, side by side: the same bulk run with
``--no-state`` and with a fresh state file, alternating (the best of two
each, so a busy machine's noise hurts both alike), then once more with that
state file full (every profile known: most are up to date, not sent), and
the state file's size per million profiles. State files live in the
benchmark's temporary directory, never in the user's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.data import ALLOWLIST, write  # noqa: E402

CEILING = 60 * 1000  # requests/s x profiles per request
KEY = "bench-key-0000"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "talon_classic.cli", *args]


def _env(tmp: str) -> dict[str, str]:
    """The environment of a talon-classic run here: state files under ``tmp``."""
    return {**os.environ, "XDG_STATE_HOME": os.path.join(tmp, "state-home")}


def _bulk(src: str, settings: str, tmp: str, name: str, *flags: str) -> dict:
    """One bulk ``identify`` run; its JSON summary plus ``seconds`` and ``cpu_s`` (its user and
    system time: what the run cost this machine, whatever else runs on it)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(_cli("identify", src, "--settings", settings, "--json", "--quiet",
                               "--dead-letter", os.path.join(tmp, f"dead-{name}.jsonl"), *flags),
                          capture_output=True, text=True, env=_env(tmp))
    seconds = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"bulk run {name} failed ({done.returncode}): {done.stderr[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {**json.loads(done.stdout), "seconds": seconds, "cpu_s": cpu}


def ledger_cost(src: str, settings: str, tmp: str, rounds: int = 2) -> dict:
    """The bulk run with --no-state and with a fresh state file, alternating; then again
    with the full state file. Profiles/s are profiles delivered or found up to date, per
    second of the run not spent waiting to repair (a request that timed out or lost its
    connection makes a run wait twice the read timeout before its end: counted apart)."""
    waits: list[float] = []

    def rate(report: dict) -> float:
        waits.append(report.get("repair_wait_s", 0.0))
        return ((report["profiles_upserted"] + report["profiles_current"])
                / max(0.001, report["seconds"] - waits[-1]))

    none: list[float] = []
    kept: list[float] = []
    cpu: dict[str, list[float]] = {"none": [], "state": []}
    state = ""
    for n in range(rounds):
        report = _bulk(src, settings, tmp, f"none{n}", "--no-state")
        none.append(rate(report))
        cpu["none"].append(report["cpu_s"] / max(1, report["profiles_upserted"]
                                                 + report["profiles_current"]))
        state = os.path.join(tmp, f"state-{n}.db")
        report = _bulk(src, settings, tmp, f"state{n}", "--state", state)
        kept.append(rate(report))
        cpu["state"].append(report["cpu_s"] / max(1, report["profiles_upserted"]
                                                  + report["profiles_current"]))
    profiles = report["profiles_upserted"] + report["profiles_current"]
    size = sum(os.path.getsize(state + suffix) for suffix in ("", "-wal")
               if os.path.exists(state + suffix))
    again = _bulk(src, settings, tmp, "again", "--state", state)
    return {"none_rate": max(none), "state_rate": max(kept),
            "cost": 1 - max(kept) / max(none), "again_rate": rate(again),
            "cpu_none_us": min(cpu["none"]) * 1e6, "cpu_state_us": min(cpu["state"]) * 1e6,
            "again_sent": again["profiles_upserted"], "again_current": again["profiles_current"],
            "bytes_per_million": size / profiles * 1e6 if profiles else 0.0,
            "repair_waits": sum(1 for w in waits if w > 0), "repair_wait_s": sum(waits)}


@contextmanager
def emulator(*flags: str) -> Iterator[str]:
    """Start ``talon-classic emulator`` in its own process; yield its URL."""
    with emulator_process(*flags) as (url, _pid):
        yield url


@contextmanager
def emulator_process(*flags: str) -> Iterator[tuple[str, int]]:
    """:func:`emulator`, yielding its URL and pid (for its CPU time)."""
    with serving_process(_cli("emulator", "--port", "0", "--api-key", KEY, "--threads", "8",
                              *flags)) as found:
        yield found


@contextmanager
def serving(argv: list[str], name: str = "the emulator") -> Iterator[str]:
    """Run ``argv``, a server that prints its URL first; yield the URL, then Ctrl-C it."""
    with serving_process(argv, name) as (url, _pid):
        yield url


@contextmanager
def serving_process(argv: list[str], name: str = "the emulator") -> Iterator[tuple[str, int]]:
    """:func:`serving`, yielding the URL and the server's pid."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        found = re.search(r"http://\S+", proc.stdout.readline())
        if found is None:
            raise SystemExit(f"{name} did not start")
        yield found.group(0), proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _stats(url: str) -> dict:
    return requests.get(f"{url}/_emulator/stats", timeout=10).json()


def emulator_ingest(seconds: float = 3.0) -> float:
    """Profiles/s the emulator takes in with no limit, 1000 per request, 4 senders."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = [json.dumps({"customerProfiles": [
        {"integrationId": f"t{t}-u{i}", "attributes": {"email": "e@x.io", "plan": "pro", "age": 3}}
        for i in range(1000)]}).encode() for t in range(4)]  # one id range per sender: no 409
    with emulator("--rate-limit", "0") as url:
        session = requests.Session()
        headers = {"Authorization": f"ApiKey-v1 {KEY}", "Content-Type": "application/json"}

        def hammer(sender: int) -> int:
            body = bodies[sender]
            done = 0
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                session.put(f"{url}/v2/customer_profiles", data=body, headers=headers,
                            timeout=30).raise_for_status()
                done += 1000
            return done

        start = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            total = sum(pool.map(hammer, range(4)))
        return total / (time.monotonic() - start)


def run(events: int = 200_000, users: int = 150_000, single_seconds: float = 10.0,
        ledger_rounds: int = 2) -> dict:
    """Deliver ``events`` in bulk, then --single for a while, then the ledger's side by side
    (``ledger_rounds`` runs each way); return the figures."""
    with tempfile.TemporaryDirectory(prefix="talon-bench-") as tmp:
        src = write(os.path.join(tmp, "events.jsonl"), events, users)
        out: dict = {"events": events, "users": users}
        with emulator("--rate-limit", "60", "--latency-ms", "50") as url:
            settings = os.path.join(tmp, "settings.json")
            with open(settings, "w") as fh:
                json.dump({"apiKey": KEY, "applicationDomain": url, "customAttributes": ALLOWLIST}, fh)
            report = _bulk(src, settings, tmp, "bulk")
            elapsed = report["seconds"] - report.get("repair_wait_s", 0.0)
            out["bulk_profiles"] = report["profiles_upserted"]
            out["bulk_requests"] = report["requests"]
            out["bulk_seconds"] = elapsed
            out["bulk_rate"] = report["profiles_upserted"] / elapsed
            out["bulk_events_rate"] = events / elapsed
            out["bulk_rss_mb"] = report["peak_rss_mb"]

            before = _stats(url)["profile_updates"]
            proc = subprocess.Popen(_cli("identify", src, "--settings", settings, "--single",
                                         "--quiet", "--no-state", "--dead-letter",
                                         os.path.join(tmp, "dead-single.jsonl")),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env=_env(tmp))
            time.sleep(single_seconds)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
            sent = _stats(url)["profile_updates"] - before
            out["single_rate"] = sent / single_seconds
            out["ledger"] = ledger_cost(src, settings, tmp, ledger_rounds)
        # The same bulk run against an emulator with no rate limit and no latency:
        # what this machine's CPU allows end to end (talon-classic + emulator).
        with emulator("--rate-limit", "0") as url:
            settings = os.path.join(tmp, "settings-free.json")
            with open(settings, "w") as fh:
                json.dump({"apiKey": KEY, "applicationDomain": url, "customAttributes": ALLOWLIST}, fh)
            start = time.monotonic()
            done = subprocess.run(_cli("identify", src, "--settings", settings, "--json", "--quiet",
                                       "--rate-limit", "0", "--dead-letter",
                                       os.path.join(tmp, "dead-free.jsonl")),
                                  capture_output=True, text=True, env=_env(tmp))
            out["cpu_rate"] = json.loads(done.stdout)["profiles_upserted"] / (time.monotonic() - start)
        out["cpu_fraction"] = out["bulk_rate"] / out["cpu_rate"]
        out["ratio"] = out["bulk_rate"] / out["single_rate"] if out["single_rate"] else float("inf")
        out["ceiling_fraction"] = out["bulk_rate"] / CEILING
        out["emulator_ingest"] = emulator_ingest()
        return out


def report(fig: dict) -> str:
    """The figures as printed lines."""
    limit = ("the emulator" if fig["emulator_ingest"] < CEILING else "talon-classic / this CPU")
    return "\n".join([
        f"end to end: {fig['events']:,} events over {fig['users']:,} users, "
        "emulator --rate-limit 60 --latency-ms 50 (separate process)",
        f"  bulk      {fig['bulk_rate']:>10,.0f} profiles/s  ({fig['bulk_profiles']:,} profiles, "
        f"{fig['bulk_requests']:,} requests, {fig['bulk_seconds']:.1f}s, "
        f"{fig['bulk_events_rate']:,.0f} events/s)",
        f"  single    {fig['single_rate']:>10,.1f} profiles/s",
        f"  ratio     {fig['ratio']:>10,.0f}x bulk/single",
        f"  ceiling   {fig['ceiling_fraction']:>10.1%} of 60,000 profiles/s (Talon.One's limit)",
        f"  CPU       {fig['cpu_fraction']:>10.1%} of {fig['cpu_rate']:,.0f} profiles/s, the same "
        "run with no rate limit or latency (what this CPU allows)",
        f"  peak RSS  {fig['bulk_rss_mb']:>10,.0f} MB (talon-classic identify)",
        ledger_report(fig["ledger"]),
        f"  emulator alone takes {fig['emulator_ingest']:,.0f} profiles/s unlimited: "
        f"limit here is {limit}",
    ])


def ledger_report(led: dict) -> str:
    """The ledger's side-by-side lines."""
    return "\n".join([
        f"  ledger    {led['none_rate']:>10,.0f} profiles/s with --no-state, "
        f"{led['state_rate']:,.0f} with a fresh state file: costs {led['cost']:.1%} (budget 10%)",
        f"            CPU of identify {led['cpu_none_us']:,.1f} µs per profile with --no-state, "
        f"{led['cpu_state_us']:,.1f} with the state file "
        f"({led['cpu_state_us'] / led['cpu_none_us'] - 1:+.1%})",
        f"            {led['again_rate']:>10,.0f} profiles/s again with it full "
        f"({led['again_sent']:,} sent, {led['again_current']:,} up to date); "
        f"{led['bytes_per_million'] / 1e6:,.0f} MB per million profiles"
        + (f"; {led['repair_waits']} runs waited {led['repair_wait_s']:.0f}s to repair after "
           "a lost connection (not counted)" if led["repair_waits"] else ""),
    ])


def main() -> None:
    """Run with the defaults of the performance issue and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=150_000)
    parser.add_argument("--single-seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(report(run(args.events, args.users, args.single_seconds)))


if __name__ == "__main__":
    main()
