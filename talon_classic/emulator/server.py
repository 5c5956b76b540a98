"""The emulator served over HTTP by waitress, in a thread or in the foreground."""

from __future__ import annotations

import logging

from talon_classic.emulator.app import Emulator
from talon_classic.emulator.config import EmulatorConfig
from talon_classic.wsgi import DEFAULT_IDLE_TIMEOUT, WaitressServer

log = logging.getLogger(__package__)  # one logger for the emulator: talon_classic.emulator


class EmulatorServer(WaitressServer):
    """An :class:`Emulator` served by waitress on loopback, in a thread or in the foreground.

    ``url`` holds the bound port right after construction (``port=0`` picks a
    free one). ``start()`` serves in a daemon thread, ``serve_forever()``
    blocks (for the CLI), ``stop()`` lets requests in progress finish, closes
    the sockets and the store. Also a context manager that starts and stops.
    ``connection_limit`` and ``idle_timeout``: see :class:`WaitressServer`;
    a host and port that cannot be listened on raise
    :class:`~talon_classic.exceptions.AddressInUse` or
    :class:`~talon_classic.exceptions.ServeError` (the store is closed again).
    """

    app: Emulator

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1",
                 port: int = 0, threads: int = 8, *, connection_limit: int | None = None,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        app = Emulator(config)
        try:
            super().__init__(app, host=host, port=port, threads=threads,
                             connection_limit=connection_limit, idle_timeout=idle_timeout)
        except BaseException:
            app.close()
            raise
        cfg = self.app.config
        log.debug("Talon.One emulator on %s (%s store, rate limit %s)", self.url,
                  "SQLite" if cfg.db else "memory", f"{cfg.rate_limit:g}/s" if cfg.rate_limit
                  else "none")

    def start(self) -> EmulatorServer:
        """Serve in a daemon thread; returns self."""
        super().start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving (requests in progress get ``timeout`` seconds), then close the store."""
        super().stop(timeout)
        self.app.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()
