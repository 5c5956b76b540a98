"""Serve a WSGI app with waitress, in a thread or in the foreground, and stop it cleanly.

Both the emulator and ``talon-classic serve`` need the same things waitress
does not give directly: the bound port before serving (port 0 picks a free
one), a background thread for tests, a stop that lets requests in progress
finish before the sockets close, connections kept alive after a 204, idle
connections closed promptly, and one clear error when the address cannot be
listened on. This is the one module that knows waitress's internals.
"""

from __future__ import annotations

import errno
import logging
import math
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ThreadedTaskDispatcher, WSGITask

from talon_classic.exceptions import AddressInUse, ServeError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

#: Seconds a connection may stay idle (no request in progress, nothing read
#: or written) before it is closed.
DEFAULT_IDLE_TIMEOUT = 5.0
#: The most connections served at once by default, where the open-file limit allows.
MAX_DEFAULT_CONNECTIONS = 10_000
#: Open files the process needs besides its served connections: standard
#: streams, the listening socket, waitress's wake-up pipe, SQLite files (the
#: spool, an emulator's database: three each with WAL), connections to Talon.One.
FILES_RESERVED = 128
class _KeepAliveTask(WSGITask):
    """waitress's task, keeping the connection open after an answer without a body.

    waitress 3.0 closes an HTTP/1.1 connection after any answer without a
    Content-Length, a 204 included, although a 204 must not carry one (RFC
    9110, 8.6) and ends at its blank line. Every silent bulk upsert (204)
    then cost a new TCP connection, where Talon.One keeps it. Only that one
    reason to close is skipped; ``Connection: close`` and HTTP/1.0 close as before.
    """

    _bodiless_keep_alive = False

    def build_response_header(self) -> bytes:
        self._bodiless_keep_alive = (
            self.version == "1.1" and not self.has_body
            and self.request.headers.get("CONNECTION", "").lower() != "close")
        try:
            header: bytes = super().build_response_header()
            return header
        finally:
            self._bodiless_keep_alive = False

    def set_close_on_finish(self) -> None:
        # within build_response_header of a bodiless HTTP/1.1 answer, the only
        # caller left is "no Content-Length": not a reason to close here
        if not self._bodiless_keep_alive:
            super().set_close_on_finish()


class _Channel(HTTPChannel):
    task_class = _KeepAliveTask


def open_file_limit() -> int | None:
    """The process's soft limit on open files (``ulimit -n``), or None when unknown or unlimited."""
    if resource is None:  # pragma: no cover - Windows
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def default_connection_limit() -> int:
    """:data:`MAX_DEFAULT_CONNECTIONS`, or less when the open-file limit is lower.

    Each connection holds one open file; past the limit ``accept()`` fails
    and waitress retries it in a loop, so the default stays inside it with
    :data:`FILES_RESERVED` to spare (half the limit when the limit is tiny).
    """
    files = open_file_limit()
    if files is None:
        return MAX_DEFAULT_CONNECTIONS
    return max(1, min(MAX_DEFAULT_CONNECTIONS, max(files // 2, files - FILES_RESERVED)))


def _ensure_open_files(connection_limit: int) -> None:
    """Raise the soft open-file limit (up to the hard one) so ``connection_limit`` fits.

    Raises :class:`ServeError` when even the hard limit is too low.
    """
    files = open_file_limit()
    needed = connection_limit + FILES_RESERVED
    if files is None or resource is None or needed <= files:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise ServeError(f"a connection limit of {connection_limit:,} needs {needed:,} open "
                         f"files, but this process may have at most {hard:,}: lower "
                         "--connection-limit or raise the limit (ulimit -n)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _resolve(host: str, port: int) -> str:
    """The first address ``host`` stands for, to listen on one socket only.

    A name such as ``localhost`` may resolve to both ``::1`` and
    ``127.0.0.1``; waitress would then listen on two sockets, with two
    ports when ``port`` is 0, and there would be no one URL to give.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                   socket.IPPROTO_TCP, socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        raise ServeError(f"cannot listen on {_where(host, port)}: {host!r} is neither an "
                         "address nor a host name this machine can resolve: use 127.0.0.1 "
                         "(this machine only), 0.0.0.0 (every interface) or one of its "
                         "addresses", host, port) from None
    return str(infos[0][4][0])


def _bind_error(exc: OSError, host: str, port: int) -> ServeError:
    """One line for a socket that cannot be bound: what happened and what to do."""
    where = _where(host, port)
    if exc.errno == errno.EADDRINUSE:
        return AddressInUse(f"{where} is already in use: stop the program using it or choose "
                            "another --port (0 picks a free one)", host, port)
    if exc.errno in (errno.EACCES, errno.EPERM):
        hint = ("ports below 1024 need administrator rights: choose a port of 1024 or above"
                if 0 < port < 1024 else "choose another --port or --host")
        return ServeError(f"cannot listen on {where}: permission denied; {hint}", host, port)
    if exc.errno == errno.EADDRNOTAVAIL:
        return ServeError(f"cannot listen on {where}: {host} is not an address of this "
                          "machine: use 127.0.0.1 (this machine only), 0.0.0.0 (every "
                          "interface) or one of its own addresses", host, port)
    return ServeError(f"cannot listen on {where}: {exc.strerror or exc}", host, port)


class WaitressServer:
    """One WSGI app on one host and port.

    ``connection_limit`` caps the connections served at once; beyond it new
    ones wait in the kernel's listen queue until others close. The default,
    :func:`default_connection_limit`, is 10,000 where the open-file limit
    allows: ten times the 1,000 idle connections that used to starve the
    server, at about 3 KiB of memory per idle connection (30 MB in all).
    Each connection holds an open file, so an explicit limit above the soft
    open-file limit raises that limit (up to the hard one) or fails with
    :class:`~talon_classic.exceptions.ServeError`. Connections are polled
    with ``poll()``, not ``select()``, which fails past file number 1,024.

    ``idle_timeout`` (seconds, default 5, like Apache's KeepAliveTimeout) is
    how long a connection may sit with no request in progress and nothing
    read or written before it is closed: a keep-alive client reuses its
    connection well within it, and a client that opens connections and
    sends nothing ties them up for at most about that long. waitress checks
    for idle connections every ``cleanup_interval`` (30 s by default, which
    let idle sockets live a minute); here it checks every
    ``min(1, idle_timeout / 2)`` seconds and its loop wakes as often, so an
    idle connection is closed between ``idle_timeout`` and ``idle_timeout``
    plus two such intervals. Exposed on the Internet, put a reverse proxy in
    front all the same: it buffers slow clients and limits per address.

    Raises :class:`~talon_classic.exceptions.AddressInUse` when another
    program listens on the port, :class:`~talon_classic.exceptions.ServeError`
    for any other reason the address cannot be listened on.
    """

    def __init__(self, app: WSGIApplication, host: str = "127.0.0.1", port: int = 0,
                 threads: int = 8, *, connection_limit: int | None = None,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, **adjustments: Any) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be 0-65535, got {port!r}")
        if connection_limit is None:
            connection_limit = default_connection_limit()
        elif (isinstance(connection_limit, bool) or not isinstance(connection_limit, int)
              or connection_limit < 1):
            raise ValueError(f"connection_limit must be a whole number >= 1, "
                             f"got {connection_limit!r}")
        else:
            _ensure_open_files(connection_limit)
        if (isinstance(idle_timeout, bool) or not isinstance(idle_timeout, int | float)
                or not 0 < idle_timeout < math.inf):
            raise ValueError(f"idle_timeout must be a number of seconds > 0, got {idle_timeout!r}")
        for name in ("connection_limit", "channel_timeout", "cleanup_interval", "listen"):
            if name in adjustments:
                raise TypeError(f"{name} is set by WaitressServer itself")
        self.app = app
        self.connection_limit = connection_limit
        self.idle_timeout = float(idle_timeout)
        address = _resolve(host, port)
        adjustments.setdefault("asyncore_use_poll", hasattr(select, "poll"))  # select(): < 1024 fds
        sockets: dict[int, Any] = {}
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(threads)
        try:
            self._server = create_server(app, map=sockets, _dispatcher=dispatcher,
                                         host=address, port=port, threads=threads,
                                         clear_untrusted_proxy_headers=True, **adjustments)
        except BaseException as exc:
            for channel in list(sockets.values()):  # the half-made socket and wake-up pipe
                channel.close()
            dispatcher.shutdown(timeout=1)
            if isinstance(exc, OSError):
                raise _bind_error(exc, host, port) from None
            raise
        self._server.channel_class = _Channel
        adj = self._server.adj
        adj.channel_timeout = self.idle_timeout
        adj.cleanup_interval = min(1.0, self.idle_timeout / 2)
        # waitress counts its own listening socket and wake-up pipe as connections
        adj.connection_limit = connection_limit + len(sockets)
        self._tick = min(adj.asyncore_loop_timeout, adj.cleanup_interval)
        self.url = f"http://{_where(host, self._server.effective_port)}"
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._grace = 5.0
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)

    def start(self) -> WaitressServer:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, name="talon-http",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` (or Ctrl-C); sockets are closed by this same thread."""
        server = self._server
        try:
            while not self._stopping.is_set():
                server.asyncore.loop(timeout=self._tick, map=server._map,
                                     use_poll=server.adj.asyncore_use_poll, count=1)
        finally:
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=self._grace)
            for channel in list(server._map.values()):
                channel.close()
            self._closed.set()

    def drain(self, timeout: float, busy: Callable[[], bool] = lambda: False) -> None:
        """Stop accepting connections, then wait (up to ``timeout``) until no request
        is queued, running or still being written out, and ``busy()`` is false.

        For a graceful stop: answers already promised get sent before :meth:`stop`.
        """
        server = self._server
        server.accepting = False  # the listening socket is no longer polled
        try:
            server.pull_trigger()
        except OSError:
            pass
        dispatcher = server.task_dispatcher
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with dispatcher.lock:
                idle = not dispatcher.queue and dispatcher.active_count == 0
            channels = [c for c in list(server._map.values()) if hasattr(c, "requests")]
            if idle and not busy() and not any(
                    c.request is not None or c.requests or c.total_outbufs_len
                    for c in channels):
                return
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """Let requests in progress finish (up to ``timeout``), then close every socket.

        The serving thread does the closing (closing a socket another thread
        is polling is a race); this waits for it.
        """
        if self._closed.is_set():
            return
        self._grace = timeout
        self._server.task_dispatcher.shutdown(cancel_pending=False, timeout=timeout)
        self._stopping.set()
        try:
            self._server.pull_trigger()
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._closed.wait(timeout + 5)

    def __enter__(self) -> WaitressServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
