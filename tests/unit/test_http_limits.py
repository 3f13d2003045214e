"""The HTTP server under hostile clients: half-sent and trickled requests, floods, disconnects."""

from __future__ import annotations

import json
import logging
import select
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from mailrules.daemon.http import DEFAULT_MAX_CONNECTIONS, MetricsServer
from mailrules.daemon.metrics import Metrics
from mailrules.logs import JsonFormatter

DROPPED = "mailrules_http_connections_dropped_total"


def dropped(server: MetricsServer, reason: str) -> float:
    v = server.metrics.registry.get_sample_value(DROPPED, {"reason": reason})
    assert v is not None
    return v


def until(condition: Callable[[], bool], limit: float = 10.0) -> bool:
    """Wait for `condition` (a generous bound for a loaded machine, not a measured duration)."""
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def healthz(server: MetricsServer) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=10) as r:
        return r.status, r.read()


def closed_by_server(sock: socket.socket, limit: float = 10.0) -> bool:
    """True once the server has closed `sock` (EOF or reset), False after `limit` seconds."""
    sock.settimeout(limit)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def make_server() -> Iterator[Callable[..., MetricsServer]]:
    servers: list[MetricsServer] = []

    def make(ready: Callable[[], tuple[bool, str]] = lambda: (True, ""), **kw: float) -> MetricsServer:
        server = MetricsServer("127.0.0.1:0", Metrics(), ready, **kw)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def test_300_half_sent_requests_hold_at_most_the_cap_in_threads(
    make_server: Callable[..., MetricsServer],
) -> None:
    server = make_server()  # the defaults: 32 connections, 10 s each
    before = threading.active_count()
    most = before
    clients: list[socket.socket] = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            clients.append(s)
            s.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
            most = max(most, threading.active_count())
        assert until(lambda: dropped(server, "evicted") + dropped(server, "timeout") >= 300 - 32)
        most = max(most, threading.active_count())
        # A normal client is still answered: it takes the slot of the oldest incomplete request.
        assert healthz(server) == (200, b"ok\n")
    finally:
        for s in clients:
            s.close()
    assert most <= before + DEFAULT_MAX_CONNECTIONS
    assert dropped(server, "evicted") + dropped(server, "timeout") >= 300 - 32 + 1
    assert dropped(server, "limit") == 0


def test_a_half_sent_request_is_closed_at_the_timeout(make_server: Callable[..., MetricsServer]) -> None:
    server = make_server(timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert closed_by_server(s)
    assert until(lambda: dropped(server, "timeout") == 1)
    assert healthz(server)[0] == 200


def test_a_trickling_client_is_cut_at_the_deadline_not_per_read(
    make_server: Callable[..., MetricsServer],
) -> None:
    # One byte every 50 ms keeps each read well under the 0.5 s timeout; the total deadline ends it.
    server = make_server(timeout=0.5)
    request = b"GET /healthz HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 400
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        closed = False
        for byte in request:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            readable, _, _ = select.select([s], [], [], 0.05)
            if readable and closed_by_server(s):
                closed = True
                break
        assert closed, "the server kept a trickling request open for 20 s"
    assert until(lambda: dropped(server, "timeout") == 1)


def test_a_client_gone_mid_response_is_a_debug_line_not_a_traceback(
    make_server: Callable[..., MetricsServer],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    entered, gone = threading.Event(), threading.Event()

    def ready() -> tuple[bool, str]:
        entered.set()
        gone.wait(10)  # answer only once the client has reset the connection
        return True, ""

    caplog.set_level(logging.DEBUG, logger="mailrules.daemon.http")
    server = make_server(ready=ready)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    s.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
    assert entered.wait(10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST: the answer has nowhere to go
    gone.set()
    assert until(lambda: dropped(server, "disconnect") == 1)
    assert capfd.readouterr().err == ""
    record = next(r for r in caplog.records if "went away" in r.getMessage())
    line = json.loads(JsonFormatter().format(record))  # what the daemon's JSON log shows at debug
    assert (line["level"], line["logger"]) == ("debug", "mailrules.daemon.http")
    assert "exception" not in line
    assert not any(r.exc_info for r in caplog.records)
    assert healthz(server)[0] == 200


def test_when_every_slot_is_answering_a_new_connection_gets_503(
    make_server: Callable[..., MetricsServer],
) -> None:
    entered, release = threading.Event(), threading.Event()

    def ready() -> tuple[bool, str]:
        entered.set()
        release.wait(10)
        return True, ""

    server = make_server(ready=ready, max_connections=1)
    busy = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        busy.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
        assert entered.wait(10)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            answer = b""
            while chunk := s.recv(1000):
                answer += chunk
        assert answer.startswith(b"HTTP/1.0 503 ")
        assert answer.endswith(b"\r\n\r\nbusy\n")
        assert dropped(server, "limit") == 1
        release.set()
        answer = b""
        while chunk := busy.recv(1000):
            answer += chunk
        assert answer.startswith(b"HTTP/1.0 200 ")  # the connection being answered was left alone
    finally:
        release.set()
        busy.close()


def test_request_line_control_characters_are_escaped_in_the_log(
    make_server: Callable[..., MetricsServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailrules.daemon.http")
    server = make_server()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /\x1b[31mred\x7f HTTP/1.0\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.0 404 ")
    assert until(lambda: any("GET /" in r.getMessage() for r in caplog.records))
    lines = [r.getMessage() for r in caplog.records if "GET /" in r.getMessage()]
    assert lines and "\\x1b[31mred\\x7f" in lines[0]
    assert not any(c in line for line in lines for c in "\x1b\x7f")


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MetricsServer("127.0.0.1:0", Metrics(), lambda: (True, ""), max_connections=0)
    with pytest.raises(ValueError):
        MetricsServer("127.0.0.1:0", Metrics(), lambda: (True, ""), timeout=0)
