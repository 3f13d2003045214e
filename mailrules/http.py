"""The daemon's small HTTP server: `/metrics`, `/healthz` and `/readyz` on the configured address."""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mailrules.config.model import MetricsSettings
from mailrules.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)

Ready = Callable[[], tuple[bool, str]]


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` -> (host, port), as `[metrics] listen` reads."""
    address = MetricsSettings(listen).address
    if address is None:
        raise ValueError("metrics listen address is empty (metrics are disabled)")
    return address


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: MetricsServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks getfqdn(), a reverse DNS lookup that can stall a start.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "mailrules"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.server.owner.metrics.exposition(), CONTENT_TYPE, body)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8", body)
        elif path == "/readyz":
            try:
                ok, reason = self.server.owner.ready()
            except Exception:  # a broken readiness check means not ready, never a dead server
                log.exception("readiness check failed")
                ok, reason = False, "readiness check failed"
            text = ((reason or "ready") if ok else (reason or "not ready")) + "\n"
            self._send(200 if ok else 503, text.encode("utf-8"), "text/plain; charset=utf-8", body)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", body)

    def _send(self, status: int, payload: bytes, content_type: str, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only (never a body), and at debug: scrapes come every 15 s.
        log.debug("%s " + format, self.address_string(), *args)


class MetricsServer:
    """Serves `metrics` and the health endpoints on `listen` (`host:port`; port 0 picks one)."""

    def __init__(self, listen: str, metrics: Metrics, ready: Ready) -> None:
        self.host, self._port = parse_listen(listen)
        self.metrics = metrics
        self.ready = ready
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the one chosen when the configuration said 0)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    def start(self) -> None:
        """Bind exactly the configured address and serve from a daemon thread; raise OSError."""
        if self._server is not None:
            return
        server_class = _Server6 if ":" in self.host else _Server
        server = server_class((self.host, self._port), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="mailrules-http", daemon=True
        )
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz on %s", self.url)

    @property
    def url(self) -> str:
        """`http://host:port` of the server (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
