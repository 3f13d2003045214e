"""NOTIFY (RFC 5465; issue 15): the command's quoting, the events read back, and the fallback when a
server lacks NOTIFY or refuses NOTIFY SET (a scripted server on loopback). The live behaviour is
tested on Dovecot in tests/integration/test_notify.py."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from pathlib import Path
from typing import BinaryIO

import pytest

from mailrules.accounts import Account
from mailrules.commands.doctor.imap import watching
from mailrules.config import AccountSettings, Secret, load_config
from mailrules.daemon.metrics import Metrics
from mailrules.daemon.notify_watcher import NOTIFY_KEY, NotifyPlan, NotifyWatcher
from mailrules.daemon.watcher import WatchContext
from mailrules.dsl.parser import parse_text
from mailrules.errors import ConfigError
from mailrules.imap.core import UnsendableValue
from mailrules.imap.notify import (
    MAX_NAMES,
    MailboxStatus,
    notify_events,
    notify_pieces,
    status_responses,
)
from mailrules.imap.session import ConnectionParams, ImapSession
from tests.scripted import ScriptedLoopback

EVENTS = b"(MessageNew MessageExpunge FlagChange)"


def test_the_command_names_each_mailbox_quoted() -> None:
    pieces, personal = notify_pieces(["INBOX", 'b"q', "c d", "back\\slash", "Café"])
    assert not personal
    assert b"".join(pieces) == (
        b"NOTIFY SET STATUS (selected " + EVENTS + b") "
        b'(mailboxes ("INBOX" "b\\"q" "c d" "back\\\\slash" "Caf&AOk-") ' + EVENTS + b")"
    )


@pytest.mark.parametrize("name", ["x\r\nA1 DELETE INBOX", "x\ny", "x\x00"])
def test_no_configured_name_can_add_a_command(name: str) -> None:
    with pytest.raises(UnsendableValue):
        notify_pieces(["INBOX", name])


def test_more_than_a_hundred_names_ask_for_personal() -> None:
    assert not notify_pieces([f"F{i}" for i in range(MAX_NAMES)])[1]
    assert notify_pieces([f"F{i}" for i in range(MAX_NAMES + 1)])[1]  # Dovecot refuses more


def test_too_long_a_list_asks_for_personal() -> None:
    names = [f"{'x' * 100}-{i:05d}" for i in range(MAX_NAMES)]
    pieces, personal = notify_pieces(names)
    assert personal
    assert b"".join(pieces).endswith(b"(personal " + EVENTS + b")")
    assert len(b"".join(pieces)) < 200


def test_events_name_mailboxes_and_the_selected_one() -> None:
    status = (b"STATUS", b"Lists/python", (b"MESSAGES", 3, b"UIDNEXT", 9))
    inbox = (b"STATUS", b"inbox", (b"MESSAGES", 1))
    utf7 = (b"STATUS", b"Caf&AOk-", (b"UIDNEXT", 2))
    ev = notify_events([status, inbox, utf7, (b"OK", b"Still here")])
    assert ev.mailboxes == {"Lists/python", "INBOX", "Café"} and not ev.selected and not ev.overflow
    assert notify_events([(4, b"EXISTS")]).selected
    assert notify_events([(1, b"FETCH", (b"UID", 1, b"FLAGS", (b"\\Seen",)))]).selected  # FlagChange
    assert not notify_events([(1, b"FETCH", (b"UID", 1))])  # not a flag change
    assert not notify_events([(1, b"EXPUNGE"), (1, b"RECENT")])
    assert notify_events([(b"OK", b"[NOTIFICATIONOVERFLOW] too many")]).overflow


def test_status_responses_as_imaplib_keeps_them() -> None:
    got = dict(
        status_responses(
            [b'"b\\"q" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 7 HIGHESTMODSEQ 4)', b"2024 (UIDNEXT 5)"]
        )
    )
    assert got == {'b"q': MailboxStatus(7, 2, 1, 4), "2024": MailboxStatus(None, 5, None, None)}


# -- the fallback, on a scripted server ------------------------------------------------------------


class NotifyServer(ScriptedLoopback):
    """Logs the client in with `caps`; answers NOTIFY with `answer`; records the commands."""

    def __init__(self, caps: str, answer: bytes) -> None:
        self.caps, self.answer = caps, answer
        self.commands: list[bytes] = []
        super().__init__()

    def converse(self, conn: socket.socket, reader: BinaryIO) -> None:
        conn.sendall(f"* OK [CAPABILITY {self.caps}] ready\r\n".encode())
        while line := reader.readline():
            self.commands.append(line.strip())
            tag, _, rest = line.partition(b" ")
            word = rest.strip().split(b" ", 1)[0].upper()
            if word == b"LOGIN":
                conn.sendall(tag + b" OK [CAPABILITY " + self.caps.encode() + b"] logged in\r\n")
            elif word == b"CAPABILITY":
                conn.sendall(f"* CAPABILITY {self.caps}\r\n".encode() + tag + b" OK done\r\n")
            elif word == b"LIST":
                conn.sendall(b'* LIST () "/" ""\r\n' + tag + b" OK done\r\n")
            elif word == b"NOTIFY":
                conn.sendall(tag + b" " + self.answer + b"\r\n")
            elif word == b"LOGOUT":
                conn.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                return
            else:
                conn.sendall(tag + b" OK done\r\n")

    def params(self) -> ConnectionParams:
        return ConnectionParams("127.0.0.1", self.port, "none", "u", "p", allow_insecure=True, timeout=5)


ACCOUNT = AccountSettings("a", "127.0.0.1", 143, "none", "u", Secret("p"))


def _ctx() -> WatchContext:
    return WatchContext(
        state=None,  # type: ignore[arg-type]  # refused before any state is read
        tz=dt.UTC,
        rules=lambda: (),
        lock_for=lambda a, m: threading.Lock(),
    )


@pytest.mark.parametrize(
    ("caps", "answer", "reason"),
    [
        (
            "IMAP4rev1 IDLE NOTIFY",
            b"BAD Error in IMAP command NOTIFY: Invalid arguments",
            "answered NOTIFY SET with BAD",
        ),
        ("IMAP4rev1 IDLE NOTIFY", b"NO [BADEVENT] not here", "answered NOTIFY SET with NO"),
        ("IMAP4rev1 IDLE", b"OK never asked", "does not advertise NOTIFY"),
    ],
)
def test_refused_notify_hands_the_account_to_idle(caps: str, answer: bytes, reason: str) -> None:
    with NotifyServer(caps, answer) as server:
        account = Account(ACCOUNT, lambda a: ImapSession.connect(server.params()))
        refused: list[tuple[str, str]] = []
        w = NotifyWatcher(
            account, ["INBOX", "Lists"], _ctx(), refused=lambda a, why: refused.append((a, why))
        )
        w.start()
        w.join(10)
        assert not w.is_alive()  # it ends: the daemon starts the IDLE watchers
        assert len(refused) == 1 and refused[0][0] == "a" and reason in refused[0][1], refused
        assert server.commands[-1].endswith(b"LOGOUT")  # logged out before the IDLE watchers log in
        notify = [c for c in server.commands if b" NOTIFY " in c]
        assert len(notify) == (1 if "NOTIFY" in caps else 0)
        if notify:
            assert notify[0].endswith(b'(mailboxes ("INBOX" "Lists") ' + EVENTS + b")")


def test_the_plan_moves_a_refused_account_to_idle_and_counts_connections() -> None:
    metrics = Metrics()
    metrics.init({"a": [], "b": []}, [])  # as the daemon does first
    other = AccountSettings("b", "127.0.0.1", 143, "none", "u", Secret("p"), notify="off")
    accounts = {"a": Account(ACCOUNT, lambda a: None), "b": Account(other, lambda a: None)}  # type: ignore[arg-type,return-value]
    resyncs: list[int] = []
    plan = NotifyPlan(accounts, _ctx(), metrics, lambda: resyncs.append(1))
    assert plan.want(ACCOUNT, ["INBOX", "Lists"])
    assert not plan.want(other, ["INBOX"])  # notify = "off"
    plan.metrics.plan({"a": {"notify": 1}, "b": {"idle": 1, "poll": 1}})
    sample = metrics.registry.get_sample_value
    assert sample("mailrules_watch_connections", {"account": "a", "mode": "notify"}) == 1
    assert sample("mailrules_watch_connections", {"account": "a", "mode": "idle"}) == 0
    assert sample("mailrules_watch_connections", {"account": "b", "mode": "poll"}) == 1
    assert sample("mailrules_notify_fallbacks_total", {"account": "a"}) == 0
    plan.refuse("a", "the server answered NOTIFY SET with BAD")
    assert resyncs == [1]
    assert plan.refused == {"a": "the server answered NOTIFY SET with BAD"}
    assert not plan.want(ACCOUNT, ["INBOX", "Lists"])  # IDLE per mailbox from now on
    assert sample("mailrules_notify_fallbacks_total", {"account": "a"}) == 1
    assert NOTIFY_KEY == "*notify*"


def test_doctor_says_why_notify_is_not_used() -> None:
    rule_file, _ = parse_text('rule "r" in "INBOX", "Lists" { when all then flag }\n', "t.rules")
    assert rule_file is not None
    with NotifyServer("IMAP4rev1 IDLE NOTIFY", b"BAD Invalid arguments") as server:
        session = ImapSession.connect(server.params())
        row = watching(session, ACCOUNT, list(rule_file.rules))
        session.logout()
    assert row.status == "WARN"
    assert row.result == (
        "IDLE per mailbox: 2 IDLE connections; NOTIFY not used: the server answered NOTIFY SET with "
        "BAD Invalid arguments"
    )
    assert row.hint == 'notify = "off" skips the attempt'


# -- the configuration key -------------------------------------------------------------------------

CONFIG = '[accounts.a]\nhost = "h"\nusername = "u@example.org"\npassword = "p"\n'


def test_notify_is_auto_unless_turned_off(tmp_path: Path) -> None:
    path = tmp_path / "mailrules.toml"
    path.write_text(CONFIG)
    assert load_config(path, env={}).accounts["a"].notify == "auto"
    path.write_text(CONFIG + 'notify = "off"\n')
    settings = load_config(path, env={})
    assert settings.accounts["a"].notify == "off"
    assert settings.redacted_dict()["accounts"]["a"]["notify"] == "off"
    path.write_text(CONFIG + 'notify = "sometimes"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "expected one of 'auto', 'off', got 'sometimes'" in str(info.value)
