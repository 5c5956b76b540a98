"""WaitressServer: keep-alive, connection limits and idle timeouts, bind errors."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from talon_classic import wsgi
from talon_classic.exceptions import AddressInUse, ServeError
from talon_classic.wsgi import (
    FILES_RESERVED,
    WaitressServer,
    default_connection_limit,
)


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


@contextlib.contextmanager
def idle_connections(server: WaitressServer, n: int) -> Iterator[list[socket.socket]]:
    """``n`` connections to ``server`` that never send a byte."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.create_connection(address(server), timeout=5))
                 for _ in range(n)]
        yield socks


def timed_get(server: WaitressServer, timeout: float) -> float:
    started = time.monotonic()
    answer = requests.get(server.url, timeout=timeout)
    assert answer.status_code == 200 and answer.text == "hello"
    return time.monotonic() - started


def test_a_thousand_idle_connections_do_not_starve_a_request() -> None:
    """Issue 11, item 15, as found: 1,100 idle connections from one client, defaults."""
    needed = 2 * 1100 + FILES_RESERVED  # both ends of each connection are in this process
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files, at most {hard} allowed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        with WaitressServer(hello) as server, idle_connections(server, 1100):
            # Starved, it would wait for the idle ones to be reaped (idle_timeout 5 s);
            # under 4 s even on a machine busy with the rest of the suite.
            assert timed_get(server, timeout=10) < 4
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    """Over a small limit, new connections wait only until the idle ones are reaped."""
    with WaitressServer(hello, connection_limit=50, idle_timeout=0.5) as server, \
            idle_connections(server, 80) as idle:
        assert timed_get(server, timeout=5) < 3
        idle[0].settimeout(3)
        assert idle[0].recv(1) == b""  # closed by the server, not by us


def test_a_connection_in_use_is_not_idle() -> None:
    with WaitressServer(hello, idle_timeout=0.5) as server, requests.Session() as session:
        for _ in range(4):
            assert session.get(server.url, timeout=5).text == "hello"
            time.sleep(0.2)  # reused within the idle timeout
        pools = session.get_adapter(server.url).poolmanager.pools
        assert [pools[key].num_connections for key in pools.keys()] == [1]


@pytest.mark.parametrize("files, limit", [(None, 10_000), (20_000, 10_000), (1024, 896),
                                          (256, 128), (100, 50)])
def test_default_connection_limit_fits_the_open_file_limit(monkeypatch, files, limit) -> None:
    monkeypatch.setattr(wsgi, "open_file_limit", lambda: files)
    assert default_connection_limit() == limit


def test_limits_are_kept_and_checked() -> None:
    with WaitressServer(hello, connection_limit=7, idle_timeout=1.5) as server:
        assert (server.connection_limit, server.idle_timeout) == (7, 1.5)
    for bad in ({"connection_limit": 0}, {"connection_limit": 2.5}, {"idle_timeout": 0},
                {"idle_timeout": float("inf")}, {"idle_timeout": "5"}, {"port": 70_000}):
        with pytest.raises(ValueError):
            WaitressServer(hello, **bad)


def test_connection_limit_beyond_the_hard_file_limit_is_refused() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files")
    with pytest.raises(ServeError, match="connection-limit") as info:
        WaitressServer(hello, connection_limit=hard + 1)
    assert "\n" not in str(info.value) and "ulimit -n" in str(info.value)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def test_port_in_use_is_one_clear_error() -> None:
    with WaitressServer(hello) as first:
        host, port = address(first)
        before, threads = open_fds(), threading.active_count()
        with pytest.raises(AddressInUse) as info:
            WaitressServer(hello, host=host, port=port)
    assert str(info.value) == (f"127.0.0.1:{port} is already in use: stop the program using it "
                               "or choose another --port (0 picks a free one)")
    assert (info.value.host, info.value.port) == ("127.0.0.1", port)
    assert isinstance(info.value, ServeError)
    assert open_fds() <= before and threading.active_count() <= threads  # nothing left open


def test_an_address_not_on_this_machine_is_one_clear_error() -> None:
    with pytest.raises(ServeError) as info:
        WaitressServer(hello, host="192.0.2.1", port=8321)  # TEST-NET-1, never local
    assert not isinstance(info.value, AddressInUse)
    assert str(info.value).startswith("cannot listen on 192.0.2.1:8321: 192.0.2.1 is not an "
                                      "address of this machine: use 127.0.0.1")


def test_an_unknown_host_is_one_clear_error() -> None:
    with pytest.raises(ServeError, match=r"^cannot listen on no-such-host\.invalid:0: "
                                         r"'no-such-host\.invalid' is neither an address"):
        WaitressServer(hello, host="no-such-host.invalid")


def test_permission_denied_is_one_clear_error(monkeypatch) -> None:
    """As a non-root user on port 80; simulated, since tests may well run as root."""
    from waitress.server import TcpWSGIServer

    def refuse(self):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(TcpWSGIServer, "bind_server_socket", refuse)
    with pytest.raises(ServeError) as info:
        WaitressServer(hello, host="0.0.0.0", port=80)
    assert str(info.value) == ("cannot listen on 0.0.0.0:80: permission denied; ports below "
                               "1024 need administrator rights: choose a port of 1024 or above")


def test_a_name_with_several_addresses_listens_on_the_first(monkeypatch) -> None:
    """As ``localhost`` on a dual-stack machine: one socket, one port, one URL."""
    real = socket.getaddrinfo

    def dual_stack(host, port, *args, **kwargs):
        if host != "dual.test":
            return real(host, port, *args, **kwargs)
        port = int(port or 0)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", dual_stack)
    with WaitressServer(hello, host="dual.test") as server:
        port = int(server.url.rsplit(":", 1)[1])
        assert server.url == f"http://dual.test:{port}"
        assert requests.get(f"http://127.0.0.1:{port}", timeout=5).text == "hello"
