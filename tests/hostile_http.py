"""A tiny HTTP server on 127.0.0.1 that answers as a misbehaving Talon.One would.

For what the emulator never does (answers nested 100,000 levels deep, a list
that never ends): ``answer(method, path, query)`` returns ``(status, body)``
for each request, and every request is recorded in ``requests``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

Answer = Callable[[str, str, dict[str, str]], tuple[int, bytes]]


class HostileServer:
    """Serves ``answer`` on ``url`` until closed."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                server.requests.append((self.command, parts.path, query))
                status, body = server.answer(self.command, parts.path, query)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def hostile_server(answer: Answer) -> Iterator[HostileServer]:
    """A :class:`HostileServer` for the ``with`` block."""
    server = HostileServer(answer)
    try:
        yield server
    finally:
        server.close()


def deep(levels: int = 100_000) -> bytes:
    """A JSON object whose ``data`` is an array nested ``levels`` deep."""
    return b'{"data": ' + b"[" * levels + b"]" * levels + b"}"
