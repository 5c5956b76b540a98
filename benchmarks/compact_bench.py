"""Backfills: compaction throughput and memory, sending compacted profiles, Spark vs DuckDB.

Every figure comes from ``talon-classic`` run as a user would (a separate
process per command; the emulator in its own process with ``--rate-limit
60 --latency-ms 50`` where something is sent):

* ``compact`` events/s with ``--workers 1`` and with every core, on the
  same input, and that both outputs are byte-identical;
* (full run) peak resident memory of ``compact --memory-limit 500MB`` on a
  big input: the whole process tree (main process with DuckDB, workers),
  sampled from /proc;
* ``identify OUT --profiles``: profiles/s against Talon.One's 60,000
  profiles/s ceiling (60 requests/s x 1000 profiles), the CPU time per
  profile of ``identify`` and of the emulator (they share this machine's
  cores), and the same send against an emulator with no rate limit or
  latency (what this machine's CPU allows);
* ``identify --compact`` against the streaming ``identify`` on one file:
  unique profiles delivered per second of wall time, and total profile
  writes (the emulator's count);
* ``compact --engine spark`` (local[*]) against the DuckDB engine on the
  same input: time, and whether the outputs are identical;
* the streaming ``identify`` with ``--workers 1`` (everything in one
  process) and with every core, on the same file: profiles/s, and the CPU
  it cost (user + system of the run and its worker processes, per event),
  so the figure means something on a machine others share.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.data import ALLOWLIST, line_templates, write  # noqa: E402
from benchmarks.e2e_bench import CEILING, KEY, _cli, _env, _stats, emulator, emulator_process  # noqa: E402, E501

RSS_LIMIT_MB = 1024


def _settings(tmp: str, name: str, url: str = "https://bench.talon.one") -> str:
    path = os.path.join(tmp, name)
    with open(path, "w") as fh:
        json.dump({"apiKey": KEY, "applicationDomain": url, "customAttributes": ALLOWLIST}, fh)
    return path


def _run(*args: str, env: dict[str, str] | None = None, cwd: str | None = None,
         ok: tuple[int, ...] = (0, 1)) -> tuple[dict, float]:
    """Run a talon-classic command with --json; return its report and wall seconds (an
    exit status outside ``ok`` stops the benchmark with the command's error)."""
    start = time.monotonic()
    done = subprocess.run(_cli(*args, "--json", "--quiet"), capture_output=True, text=True,
                          env=env, cwd=cwd)
    elapsed = time.monotonic() - start
    if done.returncode not in ok:
        raise SystemExit(f"{args[0]} failed ({done.returncode}): {done.stderr[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), elapsed


def _timed(*args: str, env: dict[str, str] | None = None, cwd: str | None = None,
           ok: tuple[int, ...] = (0, 1)) -> tuple[dict, float, float]:
    """Like :func:`_run`, and the CPU seconds (user + system) of the command and every
    process it waited for (its workers)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    report, elapsed = _run(*args, env=env, cwd=cwd, ok=ok)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return report, elapsed, cpu


def _cpu_s(pid: int) -> float:
    """User and system seconds of a running process."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send(tmp: str, profiles: str, name: str, *flags: str) -> dict:
    """``identify PROFILES --profiles`` against an emulator started with ``flags``: profiles/s,
    requests, and CPU µs per profile of identify and of the emulator."""
    with emulator_process(*flags) as (url, pid):
        emulator_before = _cpu_s(pid)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        report, elapsed = _run("identify", profiles, "--profiles", "--settings",
                               _settings(tmp, f"{name}.json", url), "--dead-letter",
                               os.path.join(tmp, f"dead-{name}.jsonl"), env=_env(tmp))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        emulator_cpu = _cpu_s(pid) - emulator_before
    sent = max(1, report["profiles_upserted"])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"rate": report["profiles_upserted"] / elapsed, "profiles": report["profiles_upserted"],
            "requests": report["requests"], "seconds": elapsed,
            "identify_us": cpu / sent * 1e6, "emulator_us": emulator_cpu / sent * 1e6}


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            with open(f"/proc/{current}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def _peak_tree(args: list[str]) -> tuple[dict, float, float]:
    """Run a command sampling its process tree's RSS; return report, wall s, peak MB."""
    proc = subprocess.Popen(_cli(*args, "--json", "--quiet"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss_mb(proc.pid))
            stop.wait(0.2)

    start = time.monotonic()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    elapsed = time.monotonic() - start
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"compact failed ({proc.returncode}): {err[-800:]}")
    return json.loads(out), elapsed, peak


def _template_file(path: str, events: int, users: int) -> str:
    """A big input fast: real event templates with the user and message swapped in."""
    templates = [t + b"\n" for t in line_templates(10)]
    with open(path, "wb") as fh:
        for start in range(0, events, 10_000):
            fh.write(b"".join(templates[i % 10] % (i % users, i)
                              for i in range(start, min(events, start + 10_000))))
    return path


def run(events: int = 2_000_000, users: int = 1_000_000, compare: tuple[int, int] = (200_000,
        130_000), big_events: int = 10_000_000, spark: bool = True,
        send_only: bool = False) -> dict:
    """Every figure of this benchmark; ``big_events`` 0 skips the memory run; ``send_only``
    compacts once (every core) and measures only the sending."""
    with tempfile.TemporaryDirectory(prefix="talon-compact-bench-") as tmp:
        fig: dict = {"events": events, "users": users, "cores": os.cpu_count() or 1}
        src = write(os.path.join(tmp, "events.jsonl"), events, users)
        settings = _settings(tmp, "settings.json")

        outs = {}
        for workers in ((fig["cores"],) if send_only else (1, fig["cores"])):
            out = os.path.join(tmp, f"profiles-{workers}.jsonl")
            report, elapsed = _run("compact", src, "--settings", settings, "-o", out,
                                   "--workers", str(workers))
            fig[f"compact_{workers}"] = events / elapsed
            fig["profiles"] = report["profiles_written"]
            outs[workers] = out
        if send_only:
            fig["send"] = send(tmp, outs[fig["cores"]], "send", "--rate-limit", "60",
                               "--latency-ms", "50")
            fig["send_free"] = send(tmp, outs[fig["cores"]], "free", "--rate-limit", "0")
            return fig
        fig["workers_identical"] = filecmp.cmp(outs[1], outs[fig["cores"]], shallow=False)

        if big_events:
            big = _template_file(os.path.join(tmp, "big.jsonl"), big_events, big_events // 2)
            report, elapsed, peak = _peak_tree(["compact", big, "--settings", settings, "-o",
                                                os.path.join(tmp, "big-profiles.jsonl"),
                                                "--memory-limit", "500MB"])
            fig.update(big_events=big_events, big_seconds=elapsed, big_peak_mb=peak,
                       big_main_peak_mb=report["peak_rss_mb"], big_profiles=report["profiles_written"])
            os.unlink(big)
            os.unlink(os.path.join(tmp, "big-profiles.jsonl"))

        fig["send"] = send(tmp, outs[fig["cores"]], "send", "--rate-limit", "60", "--latency-ms", "50")
        fig["send_free"] = send(tmp, outs[fig["cores"]], "free", "--rate-limit", "0")

        cmp_src = write(os.path.join(tmp, "compare.jsonl"), *compare)
        fig["compare_events"] = compare[0]
        for mode, flags in (("stream", ()), ("compact", ("--compact",))):
            with emulator("--rate-limit", "60", "--latency-ms", "50") as url:
                report, elapsed = _run("identify", cmp_src, *flags, "--settings",
                                       _settings(tmp, f"{mode}.json", url), "--dead-letter",
                                       os.path.join(tmp, f"dead-{mode}.jsonl"), env=_env(tmp))
                stats = _stats(url)
            fig[f"{mode}_users"] = stats["profiles"]
            fig[f"{mode}_writes"] = stats["profile_updates"]
            fig[f"{mode}_seconds"] = elapsed
            fig[f"{mode}_users_rate"] = stats["profiles"] / elapsed

        for workers in (1, fig["cores"]):
            with emulator("--rate-limit", "60", "--latency-ms", "50") as url:
                report, elapsed, cpu = _timed("identify", cmp_src, "--workers", str(workers),
                                              "--settings", _settings(tmp, f"w{workers}.json", url),
                                              "--dead-letter",
                                              os.path.join(tmp, f"dead-w{workers}.jsonl"))
            fig[f"workers_{workers}_rate"] = report["profiles_upserted"] / elapsed
            fig[f"workers_{workers}_events_rate"] = report["events_read"] / elapsed
            fig[f"workers_{workers}_cpu_us"] = cpu / report["events_read"] * 1e6
            fig[f"workers_{workers}_seconds"] = elapsed
            fig[f"workers_{workers}_writes"] = report["profiles_upserted"]

        if spark:
            out = os.path.join(tmp, "profiles-spark.jsonl")
            start = time.monotonic()
            done = subprocess.run(_cli("compact", src, "--settings", settings, "-o", out,
                                       "--engine", "spark", "--quiet"), capture_output=True,
                                  text=True)
            fig["spark_seconds"] = time.monotonic() - start
            fig["spark_ok"] = done.returncode == 0
            fig["spark_error"] = done.stderr.strip().splitlines()[-1:] if done.returncode else []
            fig["spark_identical"] = fig["spark_ok"] and filecmp.cmp(out, outs[fig["cores"]],
                                                                     shallow=False)
            fig["duckdb_seconds"] = events / fig[f"compact_{fig['cores']}"]
        return fig


def report(fig: dict) -> str:
    """The figures as printed lines."""
    cores = fig["cores"]
    lines = [
        f"compact: {fig['events']:,} events over {fig['users']:,} users -> "
        f"{fig['profiles']:,} profiles (local engine, DuckDB)",
    ]
    if "compact_1" in fig:
        lines.append(f"  1 worker  {fig['compact_1']:>10,.0f} events/s")
    lines.append(f"  {cores} workers {fig[f'compact_{cores}']:>10,.0f} events/s"
                 + (f"  (outputs identical: {'yes' if fig['workers_identical'] else 'NO'})"
                    if "workers_identical" in fig else ""))
    if "big_events" in fig:
        lines.append(
            f"  memory    {fig['big_peak_mb']:>10,.0f} MB peak RSS, whole process tree, "
            f"--memory-limit 500MB on {fig['big_events']:,} events ({fig['big_profiles']:,} "
            f"profiles, {fig['big_seconds']:.0f}s; main process {fig['big_main_peak_mb']:,.0f} "
            f"MB; target < {RSS_LIMIT_MB:,} MB: {'ok' if fig['big_peak_mb'] < RSS_LIMIT_MB else 'OVER'})")
    sent, free = fig["send"], fig["send_free"]
    both = sent["identify_us"] + sent["emulator_us"]
    lines += [
        f"  send      {sent['rate']:>10,.0f} profiles/s  identify --profiles, "
        f"{sent['profiles']:,} profiles in {sent['requests']:,} requests = "
        f"{sent['rate'] / CEILING:.1%} of the 60,000 profiles/s ceiling (target 90%)",
        f"            CPU {sent['identify_us']:.1f} µs per profile in identify, "
        f"{sent['emulator_us']:.1f} in the emulator (same {cores} cores): at most "
        f"{min(1e6 / sent['identify_us'], cores * 1e6 / both):,.0f} profiles/s here",
        f"            {free['rate']:>10,.0f} profiles/s with no rate limit or latency "
        f"(what this CPU allows; identify {free['identify_us']:.1f} µs, emulator "
        f"{free['emulator_us']:.1f} µs per profile)",
    ]
    if "compare_events" not in fig:
        return "\n".join(lines)
    lines += [
        f"identify on {fig['compare_events']:,} events, emulator --rate-limit 60 --latency-ms 50:",
        f"  streaming {fig['stream_users_rate']:>10,.0f} users/s  ({fig['stream_users']:,} users, "
        f"{fig['stream_writes']:,} profile writes, {fig['stream_seconds']:.1f}s)",
        f"  --compact {fig['compact_users_rate']:>10,.0f} users/s  ({fig['compact_users']:,} users, "
        f"{fig['compact_writes']:,} profile writes, {fig['compact_seconds']:.1f}s)",
    ]
    lines.append(f"streaming identify on the same {fig['compare_events']:,} events, by worker "
                 "processes (--workers):")
    for workers in (1, cores):
        lines.append(
            f"  {workers} worker{'s' if workers > 1 else ' '} {fig[f'workers_{workers}_rate']:>10,.0f} "
            f"profiles/s  ({fig[f'workers_{workers}_events_rate']:,.0f} events/s, "
            f"{fig[f'workers_{workers}_seconds']:.1f}s; CPU {fig[f'workers_{workers}_cpu_us']:.1f} "
            f"µs per event, workers included)")
    if "spark_seconds" in fig:
        if fig["spark_ok"]:
            lines.append(
                f"spark local[*] {fig['spark_seconds']:>7.1f}s vs DuckDB {fig['duckdb_seconds']:.1f}s "
                f"on the same {fig['events']:,} events (outputs identical: "
                f"{'yes' if fig['spark_identical'] else 'NO'})")
        else:
            lines.append(f"spark local[*] did not run: {' '.join(fig['spark_error'])}")
    return "\n".join(lines)


def main() -> None:
    """Run with the issue's sizes and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--big-events", type=int, default=10_000_000,
                        help="input of the memory run (0: skip it)")
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--compare-events", type=int, default=200_000,
                        help="input of the streaming runs (users: 65%% of it)")
    parser.add_argument("--send-only", action="store_true",
                        help="compact once and measure only identify --profiles")
    args = parser.parse_args()
    print(report(run(args.events, args.users, big_events=args.big_events,
                     spark=not args.no_spark, send_only=args.send_only,
                     compare=(args.compare_events, args.compare_events * 13 // 20))))


if __name__ == "__main__":
    main()
