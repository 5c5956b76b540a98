"""The Spark engine: exact against the oracle, and byte-identical to the DuckDB engine.

One local Spark session for the module (UI off, two shuffle partitions), so
the Spark tests stay fast; they are marked ``spark`` and skipped, with the
reason, only where no Java runtime is installed.
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from compact_oracle import fold, read_output
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from talon_classic import spark as spark_engine
from talon_classic.cli import main
from talon_classic.compact import compact
from talon_classic.compact.output import ProfileWriter
from talon_classic.exceptions import CompactError, MissingDependency

#: One worker runs this file, so the Spark session starts once (``--dist loadfile``,
#: see pyproject.toml); a JVM makes the tests slow, so they run with ``-m slow``
#: (CI runs both).
pytestmark = pytest.mark.slow

ALLOW = ["a", "b", "c", "plan", "email"]
STAMPS = [None, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "2026-01-02T00:00:00Z",
          "2026-01-01T01:00:00+01:00", "not a time"]


@pytest.fixture(scope="module")
def spark():
    if not spark_engine.java_available():
        pytest.skip("no Java runtime (java on PATH or JAVA_HOME): the Spark engine needs Java 17")
    session = spark_engine.session("local[2]", shuffle_partitions=2)
    yield session
    session.stop()


def spark_file(spark, paths: list[str], out: Path, **kwargs) -> spark_engine.Compaction:
    """Compact on the module's session and write ``out`` with the local writer."""
    result = spark_engine.compaction(spark, paths, ALLOW, **kwargs)
    writer = ProfileWriter(str(out))
    for row in result.profiles.toLocalIterator():
        attributes, stamps = spark_engine.row_profile(row)
        writer.write(row.integrationId, attributes, stamps)
    writer.close()
    return result


def random_inputs(tmp: Path, seed: int, files: int = 3, lines: int = 400) -> list[Path]:
    """Random events over few users and timestamps, with every kind of bad line."""
    rng = random.Random(seed)
    paths = []
    for f in range(files):
        out = []
        for _ in range(lines):
            roll = rng.random()
            if roll < 0.03:
                out.append(b"{not json")
            elif roll < 0.05:
                out.append(b"   \t")
            elif roll < 0.06:
                out.append(b'{"userId": "u1", "traits": {"a": "\xff\xfe"}}')  # not UTF-8
            elif roll < 0.07:
                out.append(b"x" * 3000)  # longer than max_line_bytes below
            else:
                event = {"userId": f"u{rng.randrange(12)}",
                         "traits": {k: rng.choice([1, 2, "x", True, None, [1, "y"], 1.5])
                                    for k in rng.sample(["a", "b", "c", "zz"], rng.randint(0, 3))}}
                stamp = rng.choice(STAMPS)
                if stamp is not None:
                    event["timestamp"] = stamp
                if rng.random() < 0.05:
                    event["type"] = "track"
                out.append(json.dumps(event).encode())
        data = b"\n".join(out) + (b"\n" if f % 2 == 0 else b"")  # last line unterminated
        if f == 1:
            data = b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n")
        path = tmp / (f"in{f}.jsonl.gz" if f == 2 else f"in{f}.jsonl")
        path.write_bytes(gzip.compress(data) if f == 2 else data)
        paths.append(path)
    return paths


@pytest.mark.spark
def test_spark_equals_duckdb_byte_for_byte_and_the_oracle(spark, tmp_path: Path) -> None:
    paths = random_inputs(tmp_path, seed=11)
    spark.conf.set("spark.sql.files.maxPartitionBytes", "8k")  # many splits per file
    spark.conf.set("spark.sql.files.openCostInBytes", "1k")
    try:
        result = spark_file(spark, [str(p) for p in paths], tmp_path / "spark.jsonl",
                            max_line_bytes=2048)
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
        spark.conf.unset("spark.sql.files.openCostInBytes")
    local = compact([str(p) for p in paths], ALLOW, str(tmp_path / "duckdb.jsonl"), workers=2,
                    max_line_bytes=2048)
    assert (tmp_path / "spark.jsonl").read_bytes() == (tmp_path / "duckdb.jsonl").read_bytes()
    got = {r["integrationId"]: {"attributes": r["attributes"], "timestamps": r["timestamps"]}
           for r in read_output(tmp_path / "spark.jsonl")}
    assert got == fold(paths, ALLOW)
    summary = result.summary()
    assert (summary.events_read, summary.kept, summary.skipped, summary.dropped_names) == (
        local.events_read, local.kept, local.skipped, local.dropped_names)
    assert local.skipped["line_too_long"] > 0 and local.skipped["invalid_json"] > 0
    assert len(result.warnings) == sum(local.skipped[r] for r in ("invalid_json",
                                                                  "line_too_long"))


@pytest.mark.spark
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.lists(st.fixed_dictionaries(
    {"userId": st.sampled_from(["u0", "u1", "u2"]),
     "traits": st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2)},
    optional={"timestamp": st.sampled_from(STAMPS)}), max_size=30), min_size=1, max_size=3))
def test_spark_equals_the_oracle(spark, tmp_path_factory, files) -> None:
    tmp = tmp_path_factory.mktemp("sparkprop")
    paths = []
    for i, events in enumerate(files):
        path = tmp / f"in{i}.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        paths.append(path)
    out = tmp / "out.jsonl"
    spark_file(spark, [str(p) for p in paths], out)
    got = {r["integrationId"]: {"attributes": r["attributes"], "timestamps": r["timestamps"]}
           for r in read_output(out)}
    assert got == fold(paths, ALLOW)


@pytest.mark.spark
def test_globs_directories_and_profile_lines(spark, tmp_path: Path) -> None:
    (tmp_path / "day").mkdir()
    for n in range(3):
        (tmp_path / "day" / f"part-{n}.jsonl").write_text(json.dumps(
            {"userId": "u1", "timestamp": f"2026-01-0{n + 1}T00:00:00Z",
             "traits": {"plan": f"p{n}"}}) + "\n")
    (tmp_path / "day" / "_SUCCESS").write_text("")
    by_glob = spark_engine.compact(spark, str(tmp_path / "day" / "part-*.jsonl"), ALLOW)
    by_dir = spark_engine.compact(spark, [str(tmp_path / "day")], ALLOW)
    lines = [r.value for r in spark_engine.profile_lines(by_glob).collect()]
    assert lines == [r.value for r in spark_engine.profile_lines(by_dir).collect()]
    assert [json.loads(x) for x in lines] == [
        {"integrationId": "u1", "attributes": {"plan": "p2"},
         "timestamps": {"plan": [1767398400.0, 2]}}]


@pytest.mark.spark
def test_a_truncated_gz_fails_the_job_in_one_line(spark, tmp_path: Path) -> None:
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(b'{"userId": "u1"}\n' * 5000)[:-30])
    with pytest.raises(CompactError, match=r"^Spark job failed: a \.gz input ends early"):
        spark_engine.compaction(spark, [str(cut)], ALLOW)


@pytest.mark.spark
def test_a_missing_input_is_named(spark, tmp_path: Path) -> None:
    from talon_classic.exceptions import InputError

    with pytest.raises(InputError, match="gone.jsonl: no such file"):
        spark_engine.compaction(spark, [str(tmp_path / "gone.jsonl")], ALLOW)


def test_without_pyspark_one_line_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(MissingDependency, match=r"pip install 'talon-classic\[spark\]'"):
        spark_engine.require_spark()
    src = tmp_path / "in.jsonl"
    src.write_text('{"userId": "u1"}\n')
    result = CliRunner().invoke(main, ["compact", str(src), "-o", str(tmp_path / "o.jsonl"),
                                       "--engine", "spark", "--custom-attribute", "a"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "Error: the Spark engine needs pyspark: pip install 'talon-classic[spark]'")
    assert not (tmp_path / "o.jsonl").exists()


def test_without_java_one_line_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    assert not spark_engine.java_available()
    src = tmp_path / "in.jsonl"
    src.write_text('{"userId": "u1"}\n')
    result = CliRunner().invoke(main, ["compact", str(src), "-o", str(tmp_path / "o.jsonl"),
                                       "--engine", "spark", "--custom-attribute", "a"])
    assert result.exit_code == 2
    assert "Error: the Spark engine needs a Java 17 runtime" in result.output
    assert "Traceback" not in result.output


@pytest.mark.spark
def test_the_cli_on_spark_writes_what_duckdb_writes(spark, tmp_path: Path) -> None:
    """``compact --engine spark`` (the session already running is used, and kept)."""
    paths = random_inputs(tmp_path, seed=5, files=2, lines=200)
    args = ["compact", *map(str, paths), "--custom-attribute", "a", "--custom-attribute", "b",
            "--max-line-bytes", "2048", "--json"]
    on_spark = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "s.parquet"),
                                         "--engine", "spark"])
    assert on_spark.exit_code == 0, on_spark.output
    local = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "d.parquet")])
    assert local.exit_code == 0, local.output
    assert read_output(tmp_path / "s.parquet") == read_output(tmp_path / "d.parquet")
    report, other = (json.loads(r.output.strip().splitlines()[-1]) for r in (on_spark, local))
    assert report["engine"] == "spark" and report["skipped"] == other["skipped"]
    assert report["dropped"] == other["dropped"] and report["kept"] == other["kept"]
    assert spark.range(1).count() == 1  # still running
