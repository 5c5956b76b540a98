"""Smoke test: the benchmark entry point runs on tiny inputs (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # every benchmark, Spark included: a minute or two
@pytest.mark.timeout(400)
def test_benchmarks_run_quick() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "identical: yes" in proc.stdout and "identical: NO" not in proc.stdout
    for label in ("transform alone", "with a schema", "typing costs", "bulk", "single", "ratio",
                  "memory:", "serve:", "audience:", "compact:", "1 worker", "send", "--compact",
                  "by worker processes (--workers)",
                  "spark local[*]", "against 57e13bf",
                  "instructions per event against 57e13bf"):
        assert label in proc.stdout
