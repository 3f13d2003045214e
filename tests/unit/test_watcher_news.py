"""Mail announced with the answer to a watcher's own command is processed before the watcher IDLEs.

A server announces a new message once (RFC 9051 §7.4.1), and Dovecot does it when it syncs the
mailbox, at the end of a command: a `UID SEARCH` does not see a message that arrived since the
previous command, and its answer brings the `* n EXISTS` after the result. IDLE then announces
nothing, and the message waited until the connection was renewed (bench/cluster_bench.py in IDLE
mode). A scripted server that behaves so, on loopback: message 2 arrives while the watcher handles
message 1, announced in the middle of a FETCH answer, with a STORE's answer or with the last
SEARCH's; by the watcher's first IDLE both messages must have been acted on.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import threading
from collections.abc import Iterator
from typing import BinaryIO

import pytest

from mailrules.accounts import Account
from mailrules.config import AccountSettings, Secret
from mailrules.daemon import watcher as watcher_module
from mailrules.daemon.watcher import MailboxWatcher, WatchContext
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.imap.session import ConnectionParams, ImapSession
from mailrules.state.models import Checkpoint
from mailrules.state.store import StateStore
from tests.scripted import ScriptedLoopback

CAPS = b"IMAP4rev1 IDLE MOVE UIDPLUS"
UIDVALIDITY = 7
HEADER = b"From: alerts@match.example.org\r\nMessage-ID: <%d@x>\r\n\r\n"
RULES = {
    "move": 'rule "r" { when from contains "alerts@match" then move to "Done" }',
    "flag": 'rule "r" { when from contains "alerts@match" then flag }',
}


class DovecotLike(ScriptedLoopback):
    """INBOX holds message 1. Message 2 is delivered at `arrive` ("fetch": just before the first
    UID FETCH's answer, announced in its middle; "store": during the first UID STORE, announced
    with its answer; "search": just before the second UID SEARCH, which does not see it, announced
    after its result; "again": the first MOVE is refused for now, NO [UNAVAILABLE], and message 2 is
    announced in the middle of the answer to the FETCH of message 1's second try, after the
    look's last SEARCH). Like Dovecot, a command sees only what was announced before it, and every
    command's end announces what was delivered. `acted`: the UIDs moved or stored, in order;
    `at_idle`: `acted` when the IDLE that settles it came (the first; the second for "again")."""

    def __init__(self, arrive: str) -> None:
        self.arrive = arrive
        self.seen = [1]  # UIDs announced (the session's view), in sequence order
        self.delivered: list[int] = []  # UIDs delivered, not announced yet
        self.acted: list[int] = []
        self.at_idle: list[int] | None = None
        self.idled = threading.Event()
        self.searches = self.fetches = 0
        self.idles = 0
        super().__init__(conn_timeout=10)

    def _sync(self) -> bytes:
        if not self.delivered:
            return b""
        self.seen += self.delivered
        self.delivered = []
        return b"* %d EXISTS\r\n" % len(self.seen)

    def converse(self, conn: socket.socket, reader: BinaryIO) -> None:
        conn.sendall(b"* OK [CAPABILITY " + CAPS + b"] ready\r\n")
        while line := reader.readline():
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            words = rest.split(b" ")
            word = words[0].upper()
            if word == b"UID":
                word = b"UID " + words[1].upper()
            answer = b""
            if word == b"LOGIN":
                conn.sendall(tag + b" OK [CAPABILITY " + CAPS + b"] logged in\r\n")
                continue
            if word == b"CAPABILITY":
                answer = b"* CAPABILITY " + CAPS + b"\r\n"
            elif word == b"NAMESPACE":
                answer = b'* NAMESPACE (("" "/")) NIL NIL\r\n'
            elif word == b"LIST":
                answer = b'* LIST () "/" ""\r\n'
            elif word == b"SELECT":
                answer = b"* %d EXISTS\r\n* OK [UIDVALIDITY %d] v\r\n* OK [UIDNEXT %d] n\r\n" % (
                    len(self.seen),
                    UIDVALIDITY,
                    max(self.seen) + 1,
                )
            elif word == b"UID SEARCH":
                self.searches += 1
                if self.arrive == "search" and self.searches == 2:
                    self.delivered.append(2)
                first = int(re.search(rb"UID (\d+):\*", rest).group(1))  # type: ignore[union-attr]
                found = [u for u in self.seen if u >= first] or self.seen[-1:]  # RFC 9051 §6.4.9
                answer = b"* SEARCH" + b"".join(b" %d" % u for u in found) + b"\r\n"
            elif word == b"UID FETCH":
                uid = int(words[2])
                self.fetches += 1
                if (self.arrive, self.fetches) in (("fetch", 1), ("again", 2)):
                    self.delivered.append(2)
                    answer = self._sync()  # the middle of the answer: before the message's FETCH
                if uid in self.seen:
                    section = re.search(rb"BODY\.PEEK(\[[^\]]*\])", rest)
                    assert section is not None, rest
                    body = HEADER % uid
                    answer += b"* %d FETCH (UID %d FLAGS () BODY%s {%d}\r\n%s)\r\n" % (
                        self.seen.index(uid) + 1,
                        uid,
                        section.group(1),
                        len(body),
                        body,
                    )
            elif word == b"UID MOVE":
                uid = int(words[2])
                if self.arrive == "again" and uid == 1 and self.fetches == 1:
                    conn.sendall(tag + b" NO [UNAVAILABLE] try later\r\n")
                    continue
                self.acted.append(uid)
                seq = self.seen.index(uid) + 1
                self.seen.remove(uid)
                answer = b"* OK [COPYUID %d %d %d] moved\r\n* %d EXPUNGE\r\n" % (UIDVALIDITY, uid, uid, seq)
            elif word == b"UID STORE":
                self.acted.append(int(words[2]))
                if self.arrive == "store" and 2 not in self.seen + self.delivered:
                    self.delivered.append(2)
            elif word == b"IDLE":
                self.idles += 1
                if self.idles == (2 if self.arrive == "again" else 1):
                    self.at_idle = list(self.acted)
                    self.idled.set()
                conn.sendall(b"+ idling\r\n")
                reader.readline()  # DONE
            elif word == b"LOGOUT":
                conn.sendall(b"* BYE bye\r\n" + tag + b" OK bye\r\n")
                return
            conn.sendall(answer + self._sync() + tag + b" OK done\r\n")


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rule_file, diags = parse_text(text, "t.rules")
    assert rule_file is not None and not diags, diags
    return rule_file.rules


@pytest.fixture
def state() -> Iterator[StateStore]:
    s = StateStore.open(":memory:")
    # watched before: what arrives from UID 1 on is processed
    s.set_checkpoint("a", "INBOX", Checkpoint(UIDVALIDITY, 0, None, dt.datetime.now(dt.UTC)))
    yield s
    s.close()


@pytest.mark.parametrize(
    ("arrive", "action"),
    [("fetch", "move"), ("store", "flag"), ("search", "move"), ("search", "flag"), ("again", "move")],
)
def test_mail_announced_with_a_commands_answer_is_processed_before_idle(
    state: StateStore, arrive: str, action: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "again": the refused message is tried again at the first IDLE's start, not after a minute
    monkeypatch.setattr(watcher_module, "RETRY_SECONDS", 0.0)
    with DovecotLike(arrive) as server:
        params = ConnectionParams("127.0.0.1", server.port, "none", "u", "p", allow_insecure=True, timeout=5)
        account = Account(
            AccountSettings("a", "127.0.0.1", server.port, "none", "u", Secret("p")),
            connect=lambda _settings: ImapSession.connect(params),
        )
        rules = rules_of(RULES[action])
        locks: dict[tuple[str, str], threading.Lock] = {}
        ctx = WatchContext(
            state=state,
            tz=dt.UTC,
            rules=lambda: rules,
            lock_for=lambda a, m: locks.setdefault((a, m), threading.Lock()),
            run_id=state.begin_run("daemon", False),
        )
        watcher = MailboxWatcher(account, "INBOX", ctx)
        watcher.start()
        try:
            assert server.idled.wait(10), "the watcher never went to IDLE"
        finally:
            watcher.stop()
            watcher.join(10)
        assert not watcher.is_alive()
        assert server.at_idle == [1, 2]
        cp = state.get_checkpoint("a", "INBOX")
        assert cp is not None and cp.last_uid == 2
