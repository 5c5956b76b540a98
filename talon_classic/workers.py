"""An ordered, bounded pool of worker processes: chunks of work in, results out in order.

``identify --workers N`` parses and transforms input lines in ``N``
processes while the main process reads, merges and sends. The pool knows
nothing of lines: it applies one picklable callable (``job``, given to every
worker once, when it starts) to each chunk it is handed, and gives the
results back in the order the chunks went in, whatever order the workers
finish in.

* **Order without a reordering buffer.** Chunk *i* goes to worker *i mod N*
  and every worker does its chunks in turn, so result *i* is the next one
  from worker *i mod N*. Chunks of equal size keep the workers equally busy.
* **Bounded memory.** :meth:`WorkerPool.map` keeps at most ``depth``
  chunks in flight (sent, result not yet taken), whatever the input's size.
  A sender thread writes them to the workers, so the main process never
  waits for a worker to read a chunk while that worker waits for its result
  to be read.
* **Safe to start anywhere.** Workers are spawned (a fresh interpreter:
  safe whatever threads this process runs) with SIGINT blocked
  (:func:`sigint_held`) until they ignore it (:func:`ignore_sigint`), so
  Ctrl-C is the main process's to handle, even one pressed while a worker
  is still importing; and one pressed while they start is not lost to the
  main process. A worker ends when its task pipe closes, so none outlives
  this process, even one killed with ``kill -9``.
* **Failures are one line.** A worker that dies (killed, out of memory) or
  whose job raises ends :meth:`WorkerPool.take` with :class:`WorkerError`
  naming the worker and what happened; never a hang, never a traceback.
  A watcher thread notices a death at once and tells ``on_death`` (with
  the same line, once, even when :meth:`WorkerPool.take` sees it first),
  for a caller that may be waiting on something else.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

from talon_classic.exceptions import WorkerError, logged

T = TypeVar("T")
R = TypeVar("R")

#: Chunks in flight per worker: one being worked on, one waiting, so no worker idles.
DEPTH_PER_WORKER = 2
#: Seconds a worker gets to end on its own when the pool closes, before it is terminated.
JOIN_SECONDS = 5.0


@contextmanager
def sigint_held() -> Iterator[None]:
    """Start worker processes inside this: none can be hit by a Ctrl-C before it ignores it.

    SIGINT is blocked in this thread, and a child process inherits the
    block through fork and exec, so a Ctrl-C (sent to the whole process
    group) stays pending in a child still importing, until
    :func:`ignore_sigint` discards it: no ``KeyboardInterrupt`` traceback
    from its start-up. (Ignoring SIGINT here instead would lose a Ctrl-C
    pressed meanwhile.) A Ctrl-C meant for this process is held too, then
    raised again when the block is over, to whatever handler is in place
    (``KeyboardInterrupt``, usually): never lost, never in the middle of
    starting a process.
    """
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            yield
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        return
    # Started on first use, the tracker unblocks SIGINT when it is up: start it first.
    resource_tracker.ensure_running()
    caught: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    # Another thread may take a Ctrl-C meant for the process: it is noted, not raised mid-start.
    previous = signal.signal(signal.SIGINT, lambda n, _: caught.append(n)) if main else None
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one pending runs the handler now
        if main:
            signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
            if caught:
                signal.raise_signal(signal.SIGINT)  # KeyboardInterrupt, as if pressed now


def ignore_sigint() -> None:
    """In a worker process: ignore Ctrl-C (the main process's to handle), then take back the
    block it started with (:func:`sigint_held`), dropping a Ctrl-C pressed while it started."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _work(job: Callable[[Any], Any], tasks: Connection, results: Connection) -> None:
    """A worker process: apply ``job`` to every chunk until the task pipe closes."""
    ignore_sigint()
    import gc

    gc.set_threshold(50_000, 20, 20)  # many small acyclic objects per chunk
    while True:
        try:
            chunk = tasks.recv()
        except (EOFError, OSError):  # the pool closed (or its process is gone)
            return
        try:
            answer: tuple[bool, Any] = (True, job(chunk))
            data = pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # a bug: the main process stops the run with one line
            data = pickle.dumps((False, logged(exc)), pickle.HIGHEST_PROTOCOL)
        try:
            results.send_bytes(data)
        except OSError:  # the main process is gone
            return


def describe_exit(code: int | None) -> str:
    """How a process ended, in words: ``killed by SIGKILL``, ``exit status 1``."""
    if code is None:
        return "closed its pipe while still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit status {code}"


class WorkerPool(Generic[T, R]):
    """``workers`` processes applying ``job`` to chunks, results in the order of the chunks.

    Use it as a context manager (the processes end when it closes), with
    :meth:`map`, or :meth:`submit` and :meth:`take` for finer control.
    """

    def __init__(self, job: Callable[[T], R], workers: int, *, depth: int | None = None,
                 name: str = "talon-worker",
                 on_death: Callable[[str], None] | None = None) -> None:
        if workers < 1:
            raise ValueError("a worker pool needs at least 1 worker")
        self.workers = workers
        self.depth = max(1, depth if depth is not None else DEPTH_PER_WORKER * workers)
        ctx = multiprocessing.get_context("spawn")
        self._procs: list[Any] = []
        self._started: list[Any] = []
        self._tasks: list[Connection] = []
        self._results: list[Connection] = []
        self._sent = 0
        self._taken = 0
        self._closed = False
        self._outbox: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._on_death = on_death
        #: How each dead worker ended, said once: the watcher and take() may both ask, and
        #: two threads reaping one child at once leave the loser without its exit status.
        self._deaths: dict[int, str] = {}
        self._deaths_lock = threading.Lock()
        self._death_told = False
        self._wake_read, self._wake_write = os.pipe()  # closing wakes the watcher
        try:
            with sigint_held():
                self._start(ctx, job, name)
        except BaseException:
            self.close(graceful=False)
            raise
        self._sender = threading.Thread(target=self._send_loop, name=f"{name}-sender",
                                        daemon=True)
        self._sender.start()
        self._watcher = threading.Thread(target=self._watch, name=f"{name}-watcher",
                                         daemon=True)
        self._watcher.start()

    def _start(self, ctx: Any, job: Callable[[T], R], name: str) -> None:
        """Start every worker, each with its own task and result pipe."""
        for number in range(self.workers):
            task_read, task_write = ctx.Pipe(duplex=False)
            result_read, result_write = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_work, args=(job, task_read, result_write),
                               name=f"{name}-{number + 1}", daemon=True)
            self._procs.append(proc)
            self._tasks.append(task_write)
            self._results.append(result_read)
            try:
                proc.start()
                self._started.append(proc)
            finally:  # this process keeps only its own ends: EOF reaches both sides
                task_read.close()
                result_write.close()

    def _died(self, number: int) -> str:
        with self._deaths_lock:
            if number not in self._deaths:
                proc = self._procs[number]
                proc.join(JOIN_SECONDS)
                self._deaths[number] = (
                    f"worker process {number + 1} of {self.workers} (pid {proc.pid}) ended "
                    f"unexpectedly ({describe_exit(proc.exitcode)})")
            return self._deaths[number]

    def _death(self, number: int) -> str:
        """:meth:`_died`'s line, and ``on_death`` told of the first death once, whichever
        notices it first: the watcher, or :meth:`take` waiting on that worker."""
        message = self._died(number)
        with self._deaths_lock:
            tell, self._death_told = not self._death_told, True
        if tell and self._on_death is not None:
            self._on_death(message)
        return message

    def _watch(self) -> None:
        """Tell ``on_death`` of the first worker that ends before the pool closes."""
        sentinels = {proc.sentinel: n for n, proc in enumerate(self._started)}
        ready = wait([self._wake_read, *sentinels])
        if self._closed or self._on_death is None:
            return
        ended = [sentinels[s] for s in ready if s in sentinels]
        if ended:
            self._death(ended[0])

    # -- sending -----------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            number, data = item
            try:
                self._tasks[number].send_bytes(data)
            except (OSError, ValueError):  # that worker is gone: take() names it
                continue

    @property
    def in_flight(self) -> int:
        """Chunks submitted whose result has not been taken yet."""
        return self._sent - self._taken

    def submit(self, chunk: T) -> None:
        """Hand ``chunk`` to the next worker in turn (pickled here, written by the sender)."""
        if self._closed:
            raise ValueError("the worker pool is closed")
        data = pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL)
        self._outbox.put((self._sent % self.workers, data))
        self._sent += 1

    def take(self) -> R:
        """The result of the oldest chunk not taken yet; :class:`WorkerError` if its worker
        died or its job raised."""
        if self._taken >= self._sent:
            raise ValueError("no chunk in flight")
        number = self._taken % self.workers
        conn, proc = self._results[number], self._procs[number]
        ready = wait([conn, proc.sentinel])
        data = None
        if conn in ready:  # its answer first, even if it ended right after sending it
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                data = None
        if data is None:
            raise WorkerError(self._death(number))
        self._taken += 1
        ok, value = pickle.loads(data)
        if not ok:
            raise WorkerError(f"worker process {number + 1} of {self.workers} failed: {value}")
        return value

    def map(self, chunks: Iterable[T]) -> Iterator[R]:
        """The results of ``chunks`` in order, at most :attr:`depth` chunks in flight."""
        for chunk in chunks:
            if self.in_flight >= self.depth:
                yield self.take()
            self.submit(chunk)
        while self.in_flight:
            yield self.take()

    # -- closing -----------------------------------------------------------------
    def close(self, graceful: bool = True) -> None:
        """End the workers: ``graceful`` lets them finish (their task pipe closes), else they
        are terminated at once. Idempotent."""
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_write, b"x")  # the watcher ends without reporting
        graceful = graceful and not self.in_flight  # else results nobody takes would block them
        if not graceful:
            for proc in self._started:
                if proc.is_alive():
                    proc.terminate()  # a blocked send in the sender fails at once then
        sender = getattr(self, "_sender", None)
        self._outbox.put(None)
        if sender is not None:
            sender.join(JOIN_SECONDS)
        for conn in self._tasks:
            conn.close()  # EOF: an idle worker ends
        for proc in self._started:
            proc.join(JOIN_SECONDS if graceful else 1.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._results:
            conn.close()
        watcher = getattr(self, "_watcher", None)
        if watcher is not None:
            watcher.join(JOIN_SECONDS)
        os.close(self._wake_read)
        os.close(self._wake_write)

    def __enter__(self) -> WorkerPool[T, R]:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(graceful=exc_type is None)


__all__ = ["DEPTH_PER_WORKER", "WorkerPool", "describe_exit", "ignore_sigint", "sigint_held"]
