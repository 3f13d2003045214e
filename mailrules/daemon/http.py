"""The daemon's small HTTP server: `/metrics`, `/healthz` and `/readyz` on the configured address."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mailrules.config.model import MetricsSettings
from mailrules.daemon.metrics import CONTENT_TYPE, Metrics
from mailrules.logs import printable

log = logging.getLogger(__name__)

Ready = Callable[[], tuple[bool, str]]

#: Seconds a connection may take, from accept to the last byte of the answer (request included).
DEFAULT_TIMEOUT = 10.0
#: Connections served at once, one thread each; the next one closes the oldest still sending its request.
DEFAULT_MAX_CONNECTIONS = 32
# An answer written on the accepting thread when every slot is busy answering: never blocks it.
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
)


class SharedExposition:
    """One generation of the exposition at a time; the requests that arrive meanwhile share it.

    With thousands of watcher threads one generation takes 0.5-0.9 s of CPU (cluster_bench). Each
    request generating its own, a client that gives up and asks again (a scrape timeout, a probe)
    piled generations up until neither `/metrics` nor `/healthz` answered. Here a request finding
    a generation in flight waits for it and answers with its result (at most one generation old,
    never cached beyond it); the next request after it starts a new one. `generations` counts the
    generations, `shared` the requests answered with another request's generation.
    """

    def __init__(self, generate: Callable[[], bytes]) -> None:
        self._generate = generate
        self._lock = threading.Lock()
        self._flight: _Flight | None = None
        self.generations = 0
        self.shared = 0

    def get(self, timeout: float) -> bytes:
        """The exposition: a new generation, or the one in flight; TimeoutError after `timeout`
        seconds of waiting for another request's generation."""
        with self._lock:
            flight = self._flight
            if flight is None:
                flight = self._flight = _Flight()
                leader = True
            else:
                leader = False
                self.shared += 1
        if leader:
            try:
                flight.result = self._generate()
            except BaseException:
                flight.failed = True
                raise
            finally:
                with self._lock:
                    self._flight = None
                    self.generations += 1
                flight.done.set()
            return flight.result
        if not flight.done.wait(max(0.0, timeout)):
            raise TimeoutError("the metrics were not ready in time")
        if flight.failed:
            raise RuntimeError("generating the metrics failed (logged by the request that generated them)")
        return flight.result


class _Flight:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result = b""
        self.failed = False


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` -> (host, port), as `[metrics] listen` reads."""
    address = MetricsSettings(listen).address
    if address is None:
        raise ValueError("metrics listen address is empty (metrics are disabled)")
    return address


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` of them (see `process_request`)."""

    daemon_threads = True
    request_queue_size = 64  # a burst of scrapes and probes waits in the kernel, not refused
    owner: MetricsServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks getfqdn(), a reverse DNS lookup that can stall a start.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def server_activate(self) -> None:
        super().server_activate()
        self._slots = threading.BoundedSemaphore(self.owner.max_connections)
        self._lock = threading.Lock()
        # connection -> whether its request is still arriving (only those may be closed for room)
        self._reading: dict[socket.socket, bool] = {}

    def process_request(self, request: Any, client_address: Any) -> None:
        # Replaces ThreadingMixIn's thread per connection without bound: 300 half-sent requests
        # would hold 300 threads until their clients give up.
        if not self._admit(request):
            self.owner.dropped("limit")
            log.debug(
                "http: %s refused: %d connections already", _peer(client_address), self.owner.max_connections
            )
            with contextlib.suppress(OSError):
                request.setblocking(False)
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        thread = threading.Thread(
            target=self._serve, args=(request, client_address), name="mailrules-http-conn", daemon=True
        )
        try:
            thread.start()
        except BaseException:  # no thread to give the slot back: do it here (socketserver closes it)
            self._release(request)
            raise

    def _admit(self, request: socket.socket) -> bool:
        """Take a slot; when none is free, close the oldest connection still sending its request."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                oldest = next((conn for conn, reading in self._reading.items() if reading), None)
                if oldest is not None:
                    self._reading[oldest] = False
            if oldest is None:
                return False
            with contextlib.suppress(OSError):
                oldest.shutdown(socket.SHUT_RDWR)  # its thread sees EOF and gives the slot back
            self.owner.dropped("evicted")
            log.debug("http: closed the oldest incomplete request to make room")
            if not self._slots.acquire(timeout=1.0):
                return False
        with self._lock:
            self._reading[request] = True
        return True

    def _serve(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: socket.socket) -> None:
        with self._lock:
            self._reading.pop(request, None)
        self._slots.release()

    def answering(self, request: socket.socket) -> None:
        """The request has arrived: its connection is no longer one to close for room."""
        with self._lock:
            if request in self._reading:
                self._reading[request] = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr; a client that goes away is routine (debug).
        exc = sys.exc_info()[1]
        if isinstance(exc, TimeoutError):
            self.owner.dropped("timeout")
            log.debug("http: %s timed out", _peer(client_address))
        elif isinstance(exc, ConnectionError):  # BrokenPipe, ConnectionReset, ConnectionAborted
            self.owner.dropped("disconnect")
            log.debug("http: %s went away: %s", _peer(client_address), exc)
        else:
            log.warning("http: error serving %s", _peer(client_address), exc_info=exc)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _DeadlineReader(io.RawIOBase):
    """The connection's bytes, each read bounded by what is left of the connection's deadline.

    A socket timeout alone bounds one read: a client sending a byte every 9 s would hold its
    thread for ever. `timed_out` tells the handler why a read failed.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self.deadline = deadline
        self.timed_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.timed_out = True
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            self.timed_out = True
            raise


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "mailrules"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the plain makefile() reader, replaced by one that keeps the deadline
        self._reader = _DeadlineReader(self.connection, time.monotonic() + self.server.owner.timeout)
        self.rfile = io.BufferedReader(self._reader)

    def handle(self) -> None:
        super().handle()
        if self._reader.timed_out:
            # BaseHTTPRequestHandler caught the TimeoutError (and logged it at debug via log_error).
            self.server.owner.dropped("timeout")

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        self.server.answering(self.connection)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics(body)
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

    def _metrics(self, body: bool) -> None:
        # At most half the connections wait for the metrics: the others stay free for /healthz
        # and /readyz, which never wait for a generation.
        owner = self.server.owner
        if not owner.metrics_slots.acquire(blocking=False):
            owner.dropped("limit")
            self._send(503, b"busy\n", "text/plain; charset=utf-8", body)
            return
        try:
            left = self._reader.deadline - time.monotonic()
            try:
                payload = owner.exposition.get(left)
            except TimeoutError:
                self._reader.timed_out = True
                raise
        finally:
            owner.metrics_slots.release()
        self._send(200, payload, CONTENT_TYPE, body)

    def _send(self, status: int, payload: bytes, content_type: str, body: bool) -> None:
        # The answer shares the connection's deadline: a client that reads slowly cannot hold on.
        left = self._reader.deadline - time.monotonic()
        if left <= 0:
            self._reader.timed_out = True
            raise TimeoutError("no time left to answer")
        self.connection.settimeout(left)
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if body:
                self.wfile.write(payload)
        except TimeoutError:
            self._reader.timed_out = True
            raise

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only (never a body), and at debug: scrapes come every 15 s.
        # The request line is the client's: control characters are escaped (no forged log lines).
        log.debug("%s %s", self.address_string(), printable(format % args))


def _peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


class MetricsServer:
    """Serves `metrics` and the health endpoints on `listen` (`host:port`; port 0 picks one).

    Each connection has `timeout` seconds in all (request and answer); at most `max_connections`
    are served at once, and one more closes the oldest that is still sending its request (or, when
    every one is being answered, gets `503` at once). `/metrics` is generated once at a time, the
    requests meanwhile sharing it (`SharedExposition`), by at most half the connections (`503`
    beyond): `/healthz` and `/readyz` never wait for it. What was cut short is counted in
    `mailrules_http_connections_dropped_total` and logged at debug, never as a traceback.
    """

    def __init__(
        self,
        listen: str,
        metrics: Metrics,
        ready: Ready,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if timeout <= 0 or max_connections < 1:
            raise ValueError("timeout must be positive and max_connections at least 1")
        self.host, self._port = parse_listen(listen)
        self.metrics = metrics
        self.ready = ready
        self.timeout = timeout
        self.max_connections = max_connections
        #: /metrics requests answered at once (the rest of the connections for the health checks)
        self.max_metrics = max(1, max_connections // 2)
        self.metrics_slots = threading.BoundedSemaphore(self.max_metrics)
        self.exposition = SharedExposition(metrics.exposition)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the one chosen when the configuration said 0)."""
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    def dropped(self, reason: str) -> None:
        """Count a connection cut short; an observer never breaks the server (house style 13)."""
        try:
            self.metrics.http_dropped(reason)
        except Exception:
            log.exception("metrics: http_dropped failed")

    def start(self) -> None:
        """Bind exactly the configured address and serve from a daemon thread; raise OSError."""
        if self._server is not None:
            return
        server_class = _Server6 if ":" in self.host else _Server
        server = server_class((self.host, self._port), _Handler, bind_and_activate=False)
        server.owner = self
        try:
            server.server_bind()
            server.server_activate()
        except BaseException:
            server.server_close()
            raise
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
