"""WaitressServer: keep-alive, connection limits and idle timeouts, bind errors."""

from __future__ import annotations

import socket

import pytest

from talon_classic.wsgi import WaitressServer


def no_content(environ, start_response):
    """204 for every request."""
    start_response("204 No Content", [])
    return [b""]


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def address(server: WaitressServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host.strip("[]"), int(port)


def read_answer(sock: socket.socket) -> bytes:
    """One bodiless answer: everything up to its blank line."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture()
def served_204():
    with WaitressServer(no_content) as server:
        yield server


def test_204_keeps_an_http_1_1_connection_open(served_204) -> None:
    with socket.create_connection(address(served_204), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 204") and b"Connection: close" not in answer
            assert b"Content-Length" not in answer and b"Transfer-Encoding" not in answer


@pytest.mark.parametrize("request_line", [
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
])
def test_204_still_closes_when_the_client_asks(served_204, request_line) -> None:
    with socket.create_connection(address(served_204), timeout=5) as sock:
        sock.sendall(request_line)
        assert read_answer(sock).startswith(b"HTTP/1.")
        assert sock.recv(4096) == b""  # closed by the server
