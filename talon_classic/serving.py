"""Serve a WSGI app with waitress, in a thread or in the foreground, and stop it cleanly.

Both the emulator and ``talon-classic serve`` need the same things waitress
does not give directly: the bound port before serving (port 0 picks a free
one), a background thread for tests, and a stop that lets requests in
progress finish before the sockets close.
"""

from __future__ import annotations

import logging
import threading
from typing import Any


class WaitressServer:
    """One WSGI app on one host and port."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, threads: int = 8,
                 **adjustments: Any) -> None:
        from waitress.server import create_server

        self.app = app
        adjustments.setdefault("connection_limit", 1000)
        adjustments.setdefault("channel_timeout", 30)
        self._server = create_server(app, host=host, port=port, threads=threads,
                                     clear_untrusted_proxy_headers=True, **adjustments)
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
