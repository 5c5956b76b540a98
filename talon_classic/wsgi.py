"""Serve a WSGI app with waitress, in a thread or in the foreground, and stop it cleanly.

Both the emulator and ``talon-classic serve`` need the same things waitress
does not give directly: the bound port before serving (port 0 picks a free
one), a background thread for tests, a stop that lets requests in progress
finish before the sockets close, and connections kept alive after a 204.
This is the one module that knows waitress's internals.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress.channel import HTTPChannel  # type: ignore[import-untyped]
from waitress.task import WSGITask  # type: ignore[import-untyped]


class _KeepAliveTask(WSGITask):  # type: ignore[misc]
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


class _Channel(HTTPChannel):  # type: ignore[misc]
    task_class = _KeepAliveTask


class WaitressServer:
    """One WSGI app on one host and port."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, threads: int = 8,
                 **adjustments: Any) -> None:
        from waitress.server import create_server  # type: ignore[import-untyped]

        self.app = app
        adjustments.setdefault("connection_limit", 1000)
        adjustments.setdefault("channel_timeout", 30)
        self._server = create_server(app, host=host, port=port, threads=threads,
                                     clear_untrusted_proxy_headers=True, **adjustments)
        self._server.channel_class = _Channel
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self._server.effective_port}"
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
                server.asyncore.loop(timeout=server.adj.asyncore_loop_timeout, map=server._map,
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
