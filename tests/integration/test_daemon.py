"""`mailrules daemon` on a real Dovecot (arrivals on Cyrus too): bursts, outages, SIGKILL, reload, metrics."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailrules.imap.session import ImapSession
from mailrules.state.store import StateStore
from tests.integration.cyrus import VARIANTS, CyrusServer
from tests.integration.helpers import http_get, metric_total
from tests.integration.servers import (
    DovecotServer,
    ServerUnavailable,
    make_message,
    spawn_dovecot,
    start_dovecot,
    stop_dovecot,
    wait_for_port,
)
from tests.needs import require_tool, unavailable

pytestmark = pytest.mark.integration

RULES = """
rule "filed" { when subject contains "file me" then move to "Filed" }
rule "forwarded" {
    when subject contains "forward me"
    then forward to "sink@example.org", copy to "Copies", move to "Sent on"
}
rule "flag bob" { when from contains "bob@" then flag }
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    """A daemon subprocess with its config, rules directory and metrics port."""

    def __init__(
        self,
        tmp: Path,
        server: DovecotServer | CyrusServer,
        user: str,
        password: str,
        smtp_port: int | None,
        notify: str = "auto",  # "off": IDLE per mailbox even where the server offers NOTIFY
    ) -> None:
        port = server.port if isinstance(server, CyrusServer) else server.imap_port
        self.tmp = tmp
        self.rules = tmp / "rules.d"
        self.rules.mkdir(exist_ok=True)
        (self.rules / "10-main.rules").write_text(RULES)
        self.metrics_port = free_port()
        smtp = (
            f'\n[accounts.t.smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\ntls = "none"\n'
            'allow_insecure = true\nfrom = "me@example.com"\n'
            if smtp_port
            else ""
        )
        self.config = tmp / "mailrules.toml"
        self.config.write_text(
            f'rules = "rules.d"\nstate = "state.db"\n[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n'
            f'[accounts.t]\nhost = "127.0.0.1"\nport = {port}\ntls = "starttls"\n'
            f'ca_file = "{server.ca_file}"\nusername = "{user}"\npassword = "{password}"\n'
            f'notify = "{notify}"\n' + smtp
        )
        self.proc: subprocess.Popen[str] | None = None
        self.log = tmp / "daemon.log"

    def start(self) -> None:
        out = self.log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailrules", "daemon", "--config", str(self.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_until(lambda: self.get("/readyz")[0] == 200, 30, "the daemon to become ready", self)

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.metrics_port, path, timeout=2)

    def metric(self, name: str) -> float:
        return metric_total(self.get("/metrics")[1], name)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=15)

    def text(self) -> str:
        return self.log.read_text()


def wait_until(cond: Callable[[], bool], timeout: float, what: str, d: Running | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(
        f"timed out waiting for {what}" + (f"\n--- daemon log:\n{d.text()[-4000:]}" if d else "")
    )


def counts(server: DovecotServer | CyrusServer, user: str, password: str) -> dict[str, int]:
    """{portable name: messages} (`INBOX.Filed` on Cyrus is "Filed")."""
    with ImapSession.connect(server.params(user, password)) as s:
        out = {}
        for mb in s.list_mailboxes():
            out[s.namespaces.to_portable(mb.name) or mb.name] = s.select(mb.name, readonly=True).exists
        return out


def append(server: DovecotServer | CyrusServer, user: str, password: str, messages: list[bytes]) -> None:
    with ImapSession.connect(server.params(user, password)) as s:
        s.append_many("INBOX", messages)


@pytest.fixture
def sink() -> Iterator[tuple[int, list[bytes]]]:
    from aiosmtpd.controller import Controller

    got: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            got.append(envelope.content)  # type: ignore[attr-defined]
            return "250 OK"

    port = free_port()
    c = Controller(Handler(), hostname="127.0.0.1", port=port)
    c.start()
    yield port, got
    c.stop()


@pytest.fixture(params=["dovecot", *(f"cyrus-{v.id}" for v in VARIANTS)])
def imap_server(request: pytest.FixtureRequest) -> DovecotServer | CyrusServer:
    """Dovecot, then Cyrus in each namespace variant (push IDLE through idled)."""
    if request.param == "dovecot":
        server: DovecotServer = request.getfixturevalue("dovecot")
        return server
    fleet = request.getfixturevalue("cyrus_fleet")
    variant = next(v for v in VARIANTS if f"cyrus-{v.id}" == request.param)
    try:
        cyrus: CyrusServer = fleet.get(variant)
    except ServerUnavailable as exc:
        unavailable(str(exc))
    return cyrus


def test_arrivals_are_filed_once_burst_included(
    imap_server: DovecotServer | CyrusServer, tmp_path: Path
) -> None:
    # The same rules on every server: "Filed" is INBOX.Filed on Cyrus without altnamespace (on
    # Cyrus, every MOVE to a bare name used to answer NO, and no arrival was filed: issue 12).
    dovecot = imap_server
    user, pw = dovecot.fresh_user()
    append(dovecot, user, pw, [make_message("already here, file me")])  # before the daemon: left alone
    d = Running(tmp_path, dovecot, user, pw, None)
    d.start()
    try:
        append(dovecot, user, pw, [make_message("please file me")])
        wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 1, 20, "the arrival to be filed", d)
        append(dovecot, user, pw, [make_message(f"burst {i} file me") for i in range(100)])
        wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 101, 60, "the burst to be filed", d)
        time.sleep(1)
        c = counts(dovecot, user, pw)
        assert c["Filed"] == 101 and c["INBOX"] == 1  # each exactly once; the old one stays
        assert d.metric("mailrules_rule_matches_total") >= 101
        assert d.metric("mailrules_watcher_up") == 1
        assert d.get("/healthz")[0] == 200
    finally:
        assert d.stop() == 0


def test_sigterm_exits_zero_quickly(dovecot: DovecotServer, tmp_path: Path) -> None:
    user, pw = dovecot.fresh_user()
    d = Running(tmp_path, dovecot, user, pw, None)
    d.start()
    started = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    assert "stopped" in d.text()


def test_broken_rules_on_reload_keep_the_old_ones(dovecot: DovecotServer, tmp_path: Path) -> None:
    user, pw = dovecot.fresh_user()
    d = Running(tmp_path, dovecot, user, pw, None)
    d.start()
    try:
        (d.rules / "20-broken.rules").write_text(
            'rule "oops" { when subjekt contains "x" then move to "Y" }\n'
        )
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: d.metric("mailrules_config_reloads_total") >= 2, 15, "a reload attempt", d)
        assert d.metric("mailrules_config_last_reload_success") == 0
        assert "20-broken.rules:1:" in d.text() and "keeping the rules that were running" in d.text()
        append(dovecot, user, pw, [make_message("still file me")])
        wait_until(
            lambda: counts(dovecot, user, pw).get("Filed") == 1, 20, "the old rules to keep working", d
        )
        # a good change is picked up without a signal (the rules directory is watched)
        (d.rules / "20-broken.rules").write_text(
            'rule "new" { when subject contains "new one" then move to "New" }\n'
        )
        wait_until(lambda: d.metric("mailrules_config_last_reload_success") == 1, 15, "the fixed reload", d)
        append(dovecot, user, pw, [make_message("a new one")])
        wait_until(lambda: counts(dovecot, user, pw).get("New") == 1, 20, "the new rule", d)
    finally:
        assert d.stop() == 0


def test_promtool_accepts_a_live_scrape(dovecot: DovecotServer, tmp_path: Path) -> None:
    promtool = require_tool("promtool", "prometheus")
    user, pw = dovecot.fresh_user()
    d = Running(tmp_path, dovecot, user, pw, None)
    d.start()
    try:
        append(dovecot, user, pw, [make_message("file me for metrics")])
        wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 1, 20, "filing", d)
        text = d.get("/metrics")[1]
    finally:
        d.stop()
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in (
        "mailrules_actions_total",
        "mailrules_arrival_latency_seconds_bucket",
        "mailrules_build_info",
    ):
        assert name in text


#: The daemon's two ways of watching Dovecot: one NOTIFY connection, or IDLE per mailbox.
MODES = pytest.mark.parametrize("notify", ["auto", "off"], ids=["notify", "idle"])


@MODES
def test_outage_then_catch_up(tmp_path: Path, notify: str) -> None:
    """Dovecot stopped while the daemon IDLEs; mail that arrives meanwhile is filed after it returns."""
    server = start_dovecot()
    try:
        user, pw = server.fresh_user()
        d = Running(tmp_path, server, user, pw, None, notify)
        d.start()
        try:
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(10)
            wait_until(lambda: d.metric("mailrules_watcher_up") == 0, 20, "the watcher to notice", d)
            server.proc = spawn_dovecot(server.directory)
            wait_for_port(server.imap_port, server.proc, server.directory / "dovecot.log")
            # arrives while the daemon is still backing off
            append(server, user, pw, [make_message("during the outage, file me")])
            wait_until(lambda: counts(server, user, pw).get("Filed") == 1, 90, "catch-up after the outage", d)
            assert d.metric("mailrules_reconnects_total") >= 1
        finally:
            assert d.stop() == 0
    finally:
        stop_dovecot(server)


def in_doubt(state: Path, action: str) -> int:
    """Intents of `action` never confirmed in the daemon's SQLite state (a side effect in doubt)."""
    with StateStore.open(state) as store:
        return sum(1 for i in store.pending_intents() if i.entry.action == action)


@MODES
def test_sigkill_mid_batch_then_restart(
    dovecot: DovecotServer, tmp_path: Path, sink: tuple[int, list[bytes]], notify: str
) -> None:
    """Killed while working: after a restart every message is where the rules say, none twice,
    and each forward went out exactly once."""
    port, got = sink
    user, pw = dovecot.fresh_user()
    d = Running(tmp_path, dovecot, user, pw, port, notify)
    d.start()
    msgs = [make_message(f"n{i} file me") for i in range(150)]
    msgs += [make_message(f"f{i} forward me") for i in range(20)]
    append(dovecot, user, pw, msgs)
    wait_until(lambda: counts(dovecot, user, pw).get("Filed", 0) > 0 or len(got) > 0, 30, "work to start", d)
    assert d.stop(signal.SIGKILL) != 0
    d.start()
    try:
        wait_until(
            lambda: (
                counts(dovecot, user, pw).get("Filed") == 150
                and counts(dovecot, user, pw).get("Sent on") == 20
            ),
            60,
            "everything filed after the restart",
            d,
        )
        time.sleep(1)
        c = counts(dovecot, user, pw)
        assert c["INBOX"] == 0 and c["Filed"] == 150 and c["Sent on"] == 20
        # A batch processed again after the kill copies nothing twice. A copy is at most once
        # (engine/claims.py): the kill can land between a group's intents and the confirmation
        # after its UID COPY; those copies (made or not) stay in doubt (`mailrules log --pending`)
        # and are never made again.
        assert c["Copies"] <= 20
        assert c["Copies"] + in_doubt(d.config.parent / "state.db", "copy") >= 20
        subjects = sorted(m.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for m in got)
        assert len(subjects) == len(set(subjects)), "a forward went out twice"
        assert len(got) <= 20
        # a forward in doubt (killed between send and confirm) is reported, not re-sent
        assert len(got) == 20 or "may have sent it" in d.text()
    finally:
        assert d.stop() == 0


def test_scheduled_rule_runs_over_the_whole_mailbox(dovecot: DovecotServer, tmp_path: Path) -> None:
    """A scheduled rule's job, run in-process: whole mailbox, its own connection, metrics, journal."""
    from mailrules.config import load_config
    from mailrules.daemon.service import Daemon

    user, pw = dovecot.fresh_user()
    append(dovecot, user, pw, [make_message(f"old {i}") for i in range(5)])
    d = Running(tmp_path, dovecot, user, pw, None)
    (d.rules / "10-main.rules").write_text(
        'rule "nightly" every day at 03:00 { when subject contains "old" then move to "Old" }\n'
    )
    daemon = Daemon(load_config(d.config))
    try:
        assert daemon.load_rules()
        assert list(daemon.schedule.next_runs()) == ["nightly"]
        assert daemon.watched() == {}  # no arrival rule: nothing to IDLE on
        daemon._run_scheduled([daemon.rules[0]])
        assert counts(dovecot, user, pw).get("Old") == 5
        text = daemon.metrics.exposition().decode()
        assert 'mailrules_scheduled_runs_total{outcome="ok",rule="nightly"} 1.0' in text
        assert daemon.state.runs(limit=1)[0].trigger == "schedule"
    finally:
        daemon.schedule.shutdown(wait=False)
        daemon.state.close()


def test_scheduled_rule_limit_holds_for_the_whole_firing(dovecot: DovecotServer, tmp_path: Path) -> None:
    """A scheduled rule over two mailboxes, 2 matches in each, limit 3: the firing counts 4 before
    acting (mailrules/engine/limits.py) and acts on none; each mailbox alone would have been under it."""
    from mailrules.config import load_config
    from mailrules.daemon.service import Daemon

    user, pw = dovecot.fresh_user()
    append(dovecot, user, pw, [make_message(f"old {i}") for i in range(2)])
    with ImapSession.connect(dovecot.params(user, pw)) as s:
        s.create("Lists")
        s.append_many("Lists", [make_message(f"old {i}") for i in range(2, 4)])
    d = Running(tmp_path, dovecot, user, pw, None)
    (d.rules / "10-main.rules").write_text(
        'rule "nightly" in "INBOX", "Lists" every day at 03:00 limit 3 '
        '{ when subject contains "old" then move to "Old" }\n'
    )
    daemon = Daemon(load_config(d.config))
    try:
        assert daemon.load_rules()
        daemon._run_scheduled([daemon.rules[0]])
        c = counts(dovecot, user, pw)
        assert c["INBOX"] == 2 and c["Lists"] == 2 and c.get("Old", 0) == 0
    finally:
        daemon.schedule.shutdown(wait=False)
        daemon.state.close()


def test_mail_arriving_during_a_batch_is_not_left_behind(dovecot: DovecotServer, tmp_path: Path) -> None:
    """EXISTS for mail that arrives while a batch is processed comes in the answers to our own
    commands, not in the next IDLE: the watcher must look again before idling."""
    user, pw = dovecot.fresh_user()
    d = Running(tmp_path, dovecot, user, pw, None)
    d.start()
    try:
        with ImapSession.connect(dovecot.params(user, pw)) as s:
            for i in range(60):  # one at a time, while the daemon is busy with the earlier ones
                s.append("INBOX", make_message(f"trickle {i} file me"))
        # nothing else arrives now: every one of them must still be filed
        wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 60, 30, "the trickle to be filed", d)
    finally:
        assert d.stop() == 0


def test_uidvalidity_change_processes_only_recent_mail(dovecot: DovecotServer, tmp_path: Path) -> None:
    """A watched mailbox deleted and re-created while the daemon is down gets a new UIDVALIDITY:
    its mail since the checkpoint's day is processed, the stored UIDs are not trusted."""
    user, pw = dovecot.fresh_user()
    d = Running(tmp_path, dovecot, user, pw, None)
    (d.rules / "10-main.rules").write_text(
        'rule "box" in "Box" { when subject contains "file me" then move to "Filed" }\n'
    )
    with ImapSession.connect(dovecot.params(user, pw)) as s:
        s.create("Box")
    d.start()
    try:
        with ImapSession.connect(dovecot.params(user, pw)) as s:
            s.append("Box", make_message("first file me"))
        wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 1, 20, "the first arrival", d)
    finally:
        assert d.stop() == 0
    with ImapSession.connect(dovecot.params(user, pw)) as s:
        s._run("DELETE", [b'DELETE "Box"'])
        s.create("Box")  # a new mailbox: new UIDVALIDITY, UIDs from 1 again
        s.append("Box", make_message("after the change, file me"))
    d.start()
    try:
        wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 2, 20, "mail of the new epoch", d)
        assert "UIDVALIDITY changed" in d.text()
    finally:
        assert d.stop() == 0


class RefusingProxy:
    """A plain-IMAP TCP proxy to Dovecot that answers the first `UID MOVE` itself, with the
    passing refusal of RFC 5530 (`NO [UNAVAILABLE]`), and relays everything else unchanged."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refused = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
            threading.Thread(target=self._commands, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def _commands(self, client: socket.socket, upstream: socket.socket) -> None:
        reader = client.makefile("rb")
        try:
            while line := reader.readline():
                words = line.split(b" ", 3)
                if self.refused == 0 and len(words) > 2 and words[1:3] == [b"UID", b"MOVE"]:
                    self.refused += 1
                    client.sendall(words[0] + b" NO [UNAVAILABLE] busy, try later (test proxy)\r\n")
                    continue
                upstream.sendall(line)
                literal = re.search(rb"\{(\d+)\+?\}\r\n$", line)
                if literal:
                    upstream.sendall(reader.read(int(literal.group(1))))
        except OSError:
            pass
        finally:
            upstream.close()


def test_a_passing_refusal_is_tried_again(dovecot: DovecotServer, tmp_path: Path) -> None:
    """A MOVE refused with NO [UNAVAILABLE] is not the end: the message is processed again at the
    next look at the mailbox (here: the next arrival) and filed then."""
    user, pw = dovecot.fresh_user()
    proxy = RefusingProxy(dovecot.imap_port)
    d = Running(tmp_path, dovecot, user, pw, None)
    d.config.write_text(
        d.config.read_text()
        .replace(f"port = {dovecot.imap_port}", f"port = {proxy.port}")
        .replace('tls = "starttls"', 'tls = "none"\nallow_insecure = true')
    )
    d.start()
    try:
        append(dovecot, user, pw, [make_message("please file me")])
        wait_until(lambda: "(the server refused it for now)" in d.text(), 30, "the refused move", d)
        assert proxy.refused == 1 and counts(dovecot, user, pw).get("Filed", 0) == 0
        append(dovecot, user, pw, [make_message("something else")])
        wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 1, 30, "the move tried again", d)
        assert "trying 1 message(s) again" in d.text()
        assert counts(dovecot, user, pw)["INBOX"] == 1
        moves = [
            line
            for line in d.get("/metrics")[1].splitlines()
            if line.startswith("mailrules_actions_total{") and 'action="move"' in line
        ]
        assert any('outcome="failed"' in m and m.endswith(" 1.0") for m in moves), moves
        assert any('outcome="ok"' in m and m.endswith(" 1.0") for m in moves), moves
    finally:
        assert d.stop() == 0
        proxy.close()
