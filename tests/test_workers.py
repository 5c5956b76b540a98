"""The ordered, bounded worker pool: order, bounds, failures, closing, defaults."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from talon_classic.exceptions import WorkerError
from talon_classic.workers import WorkerPool, describe_exit, ignore_sigint, sigint_held


def slow_for_odd(chunk: list[int]) -> list[int]:
    """Squares; odd chunks take longer, so workers finish out of order."""
    if chunk and chunk[0] % 2:
        time.sleep(0.05)
    return [x * x for x in chunk]


def explode(chunk: str) -> str:
    if chunk == "boom":
        raise ValueError("no such thing as boom")
    if chunk == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return chunk.upper()


def test_results_come_back_in_the_order_of_the_chunks() -> None:
    chunks = [[i, i + 100] for i in range(30)]
    with WorkerPool(slow_for_odd, 3) as pool:
        assert list(pool.map(chunks)) == [[a * a, b * b] for a, b in chunks]


def test_map_keeps_at_most_depth_chunks_in_flight() -> None:
    given = []

    def chunks():
        for i in range(20):
            given.append(i)
            yield [i]

    with WorkerPool(slow_for_odd, 2, depth=3) as pool:
        for taken, _ in enumerate(pool.map(chunks()), 1):
            assert len(given) - taken <= 3  # read ahead of what was taken: at most depth
            assert pool.in_flight <= 3


def test_a_failing_job_is_one_line_naming_the_worker() -> None:
    with WorkerPool(explode, 2) as pool, pytest.raises(WorkerError) as caught:
        list(pool.map(["a", "b", "boom", "c"]))
    assert str(caught.value) == ("worker process 1 of 2 failed: ValueError: no such thing "
                                 "as boom")


def test_a_killed_worker_is_one_line_and_the_watcher_says_so_at_once() -> None:
    deaths: list[str] = []
    with WorkerPool(explode, 2, on_death=deaths.append) as pool:
        pool.submit("a")
        pool.submit("die")
        assert pool.take() == "A"
        with pytest.raises(WorkerError) as caught:
            pool.take()
    message = str(caught.value)
    assert message.startswith("worker process 2 of 2 (pid ")
    assert message.endswith(") ended unexpectedly (killed by SIGKILL)")
    assert deaths == [message]


def test_closing_ends_every_worker_and_a_closed_pool_refuses_work() -> None:
    pool = WorkerPool(explode, 2)
    pool.submit("x")  # in flight: closing terminates instead of waiting for it
    procs = list(pool._procs)
    pool.close()
    assert not any(p.is_alive() for p in procs)
    with pytest.raises(ValueError):
        pool.submit("y")
    pool.close()  # idempotent


def test_workers_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from talon_classic.workers import WorkerPool\n"
        "from test_workers import explode\n"
        "if __name__ == '__main__':\n"
        "    pool = WorkerPool(explode, 2)\n"
        "    print(*[p.pid for p in pool._procs], flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.05)
    assert not any(_running(p) for p in pids)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def sigint_state(conn: Connection) -> None:
    """A child process: tell whether SIGINT was blocked and pending when it began, and
    whether :func:`ignore_sigint` leaves it ignored and unblocked."""
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    pending = signal.SIGINT in signal.sigpending()
    ignore_sigint()
    ignored = (signal.getsignal(signal.SIGINT) == signal.SIG_IGN
               and signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
               and signal.SIGINT not in signal.sigpending())
    conn.send((blocked, pending, ignored))


class InterruptedWhenPickled:
    """A job that sends this process SIGINT while a worker starts (its pickling): a Ctrl-C
    pressed then."""

    def __call__(self, chunk: str) -> str:
        return chunk

    def __reduce__(self) -> tuple[type, tuple[()]]:
        os.kill(os.getpid(), signal.SIGINT)
        return (InterruptedWhenPickled, ())


def test_a_child_starts_with_sigint_blocked_until_it_ignores_it() -> None:
    """A Ctrl-C reaching a worker still importing (a terminal signals the whole process
    group) stays pending, never a KeyboardInterrupt traceback, until the worker ignores it."""
    ctx = multiprocessing.get_context("spawn")
    read, write = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=sigint_state, args=(write,))
    with sigint_held():
        proc.start()
    write.close()
    os.kill(proc.pid, signal.SIGINT)  # at once: it has not even imported this module yet
    assert read.recv() == (True, True, True)
    proc.join()
    assert proc.exitcode == 0


def test_a_ctrl_c_reaching_a_starting_worker_does_not_stop_it() -> None:
    with WorkerPool(explode, 1) as pool:
        os.kill(pool._procs[0].pid, signal.SIGINT)
        pool.submit("a")
        assert pool.take() == "A"


def test_a_ctrl_c_while_workers_start_is_raised_after_not_lost() -> None:
    with pytest.raises(KeyboardInterrupt):
        WorkerPool(InterruptedWhenPickled(), 2)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


def test_sigint_held_holds_a_ctrl_c_then_raises_it() -> None:
    reached = False
    with pytest.raises(KeyboardInterrupt), sigint_held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # held: nothing is raised here
        reached = True
    assert reached


def test_describe_exit() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exit status 1"
