"""The DuckDB engine's calls: Ctrl-C during a query is a KeyboardInterrupt, as anywhere else."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from talon_classic.compact import duckdb_engine


def test_ctrl_c_during_a_query_is_a_keyboard_interrupt(tmp_path) -> None:
    """DuckDB takes Python's pending KeyboardInterrupt and raises RuntimeError("Query
    interrupted"): before, ``compact`` showed that as a traceback and exited 1."""
    con = duckdb_engine.connect(None, str(tmp_path), 1)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt), duckdb_engine.interruptible():
            con.execute("SELECT count(*) FROM range(1000000000000) a WHERE a.range % 7 = 3")
    finally:
        timer.cancel()
        con.close()


def test_other_errors_are_left_as_they_are(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="other"), duckdb_engine.interruptible():
        raise RuntimeError("other")
