"""The watchdog for silent connections (issue 15; docs/operations.md, "Silent connections"): a proxy
between the daemon and the server stops forwarding without a FIN or a RST, and mail delivered after
that is still filed, the stall counted, the watcher reconnected. On Dovecot (its one NOTIFY connection,
IDLE per mailbox, and polling) and on Cyrus (IDLE)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from tests.integration.cyrus import CyrusServer
from tests.integration.servers import DovecotServer, make_message
from tests.integration.test_daemon import Running, append, counts, wait_until
from tests.integration.test_notify import mode_of

pytestmark = pytest.mark.integration

#: The test's settings (the defaults are 540 s and 30 s): the documented bound is then
#: 3 + 2 s + a reconnect delay under 1 s + login and catch-up.
RENEW, TIMEOUT = 3, 2
#: What the test waits for the mail, far above that bound (no timed asserts: only a give-up point).
GENEROUS = 90.0


class BlackholeProxy:
    """A TCP proxy on loopback to `upstream_port`. `blackhole()` makes every connection open at that
    moment go silent in both directions: both sockets stay open, no FIN, no RST, but no byte is
    forwarded any more (a NAT or firewall that forgot the flow). Connections made later are relayed
    normally, as a new flow through such a NAT would be."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.accepted = 0
        self._lock = threading.Lock()
        self._live: list[threading.Event] = []  # one per connection: set = silenced
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="blackhole-proxy", daemon=True).start()

    def blackhole(self) -> int:
        """Silence every open connection; return how many there were."""
        with self._lock:
            for silenced in self._live:
                silenced.set()
            return len(self._live)

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for s in self._sockets:
                s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            silenced = threading.Event()
            with self._lock:
                self.accepted += 1
                self._live.append(silenced)
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst, silenced), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, silenced: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                if not silenced.is_set():  # silenced: read and dropped, so nothing ever answers
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            if not silenced.is_set():  # a silenced flow never tells the other side it ended
                dst.close()


#: How the account is watched in each case: NOTIFY (Dovecot's default here), IDLE per mailbox, or
#: polled (two watched mailboxes and max_connections = 1: one connection polls both in turn).
WATCHING = {
    "notify": "",
    "idle": 'notify = "off"\n',
    "poll": 'notify = "off"\nmax_connections = 1\npoll_interval = 1\nwatch = ["INBOX", "Trash"]\n',
}


def _through(proxy: BlackholeProxy, d: Running, server_port: int, mode: str = "notify") -> None:
    """Point the daemon's account at the proxy, with the test's watchdog settings."""
    text = d.config.read_text().replace(f"port = {server_port}\n", f"port = {proxy.port}\n")
    if mode != "notify":
        text = text.replace('notify = "auto"\n', "")
    extra = f"idle_renew_seconds = {RENEW}\nidle_timeout_seconds = {TIMEOUT}\n" + WATCHING[mode]
    d.config.write_text(text + extra)


@pytest.fixture(params=["dovecot-notify", "dovecot-idle", "dovecot-poll", "cyrus"])
def watched(request: pytest.FixtureRequest) -> tuple[DovecotServer | CyrusServer, str]:
    """Dovecot (`* OK Still here` every 2 min) watched in each mode, and Cyrus (IDLE through idled)."""
    name, _, mode = str(request.param).partition("-")
    found: DovecotServer | CyrusServer = request.getfixturevalue(name)
    return found, mode or "idle"


def test_mail_is_filed_after_the_connection_goes_silent(
    watched: tuple[DovecotServer | CyrusServer, str], tmp_path: Path
) -> None:
    server, mode = watched
    user, pw = server.fresh_user()
    port = server.port if isinstance(server, CyrusServer) else server.imap_port
    proxy = BlackholeProxy(port)
    d = Running(tmp_path, server, user, pw, None)
    _through(proxy, d, port, mode)
    d.start()
    try:
        append(server, user, pw, [make_message("please file me 1")])
        wait_until(lambda: counts(server, user, pw).get("Filed") == 1, GENEROUS, "the first arrival", d)
        assert d.metric("mailrules_watcher_stalls_total") == 0
        assert mode_of(d, mode) >= 1  # watched the way this case is about (Cyrus: IDLE, no NOTIFY)
        reconnects, accepted = d.metric("mailrules_reconnects_total"), proxy.accepted

        assert proxy.blackhole() >= 1  # the watcher's connection, in IDLE: silent from now on
        append(server, user, pw, [make_message("please file me 2")])  # straight to the server
        wait_until(
            lambda: counts(server, user, pw).get("Filed") == 2, GENEROUS, "the arrival after the stall", d
        )

        assert d.metric("mailrules_watcher_stalls_total") >= 1
        assert d.metric("mailrules_reconnects_total") > reconnects
        assert proxy.accepted > accepted  # a new connection, through the proxy again
        assert "the connection is stalled" in d.text() or "timed out" in d.text()
        assert counts(server, user, pw)["INBOX"] == 0
    finally:
        assert d.stop() == 0
        proxy.close()
