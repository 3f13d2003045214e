"""The metrics HTTP server on an ephemeral loopback port: /metrics, /healthz, /readyz, 404, IPv6."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from mailrules.daemon.http import MetricsServer, parse_listen
from mailrules.daemon.metrics import Metrics

State = dict[str, object]


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


@pytest.fixture
def served() -> Iterator[tuple[MetricsServer, State]]:
    state: State = {"ready": False, "why": "watchers connecting"}
    m = Metrics()
    m.init({"work": ["INBOX"]}, ["gh"])
    server = MetricsServer("127.0.0.1:0", m, lambda: (bool(state["ready"]), str(state["why"])))
    server.start()
    try:
        yield server, state
    finally:
        server.stop()


def test_metrics_endpoint_serves_the_text_format(served: tuple[MetricsServer, State]) -> None:
    server, _ = served
    assert server.port != 0
    server.metrics.reconnect("work")
    status, ctype, body = get(f"{server.url}/metrics")
    assert status == 200
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    assert b'mailrules_reconnects_total{account="work"} 1.0' in body
    assert b"# TYPE mailrules_imap_command_duration_seconds histogram" in body


def test_healthz_and_readyz(served: tuple[MetricsServer, State]) -> None:
    server, state = served
    assert get(f"{server.url}/healthz")[::2] == (200, b"ok\n")
    assert get(f"{server.url}/readyz")[::2] == (503, b"watchers connecting\n")
    state.update(ready=True, why="")
    assert get(f"{server.url}/readyz")[::2] == (200, b"ready\n")


def test_a_readiness_check_that_raises_is_not_ready(served: tuple[MetricsServer, State]) -> None:
    server, _ = served

    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    server.ready = broken
    assert get(f"{server.url}/readyz")[::2] == (503, b"readiness check failed\n")
    assert get(f"{server.url}/healthz")[0] == 200


def test_other_paths_are_404_and_queries_are_ignored(served: tuple[MetricsServer, State]) -> None:
    server, _ = served
    assert get(f"{server.url}/")[0] == 404
    assert get(f"{server.url}/metrics/extra")[0] == 404
    assert get(f"{server.url}/metrics?name[]=x")[0] == 200


def test_stop_releases_the_port() -> None:
    server = MetricsServer("127.0.0.1:0", Metrics(), lambda: (True, ""))
    server.start()
    port = server.port
    server.stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # would raise EADDRINUSE if still held


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::1]:9464") == ("::1", 9464)
    assert parse_listen(":9464") == ("0.0.0.0", 9464)
    with pytest.raises(ValueError):
        parse_listen("")


def test_ipv6_loopback_binds_only_there() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    server = MetricsServer("[::1]:0", Metrics(), lambda: (True, ""))
    try:
        server.start()
    except OSError as exc:
        pytest.skip(f"cannot bind ::1 here: {exc}")
    try:
        assert server.url == f"http://[::1]:{server.port}"
        assert get(f"{server.url}/healthz")[0] == 200
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=2)
    finally:
        server.stop()
