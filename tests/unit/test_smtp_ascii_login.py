"""A username or password outside ASCII: smtplib cannot send it in AUTH, so the send fails with a
classified SmtpActionError that names neither secret, before any connection (not a raw
UnicodeEncodeError from the middle of the dialogue)."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator

import pytest

from mailrules.compile.dialect import Dialect
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, RunOptions, SendError
from mailrules.smtp.compose import SmtpActionError
from mailrules.smtp.sender import SmtpParams, SmtpSender
from mailrules.state.models import JournalEntry
from mailrules.state.store import StateStore
from tests.fakes import FakeServer, FakeStore
from tests.unit.test_engine import rules_of
from tests.unit.test_smtp_credentials import ORIGINAL

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port that takes connections but never answers: whether anyone connected is told after."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock


def _connected(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def _sender(port: int, user: str, password: str) -> SmtpSender:
    return SmtpSender(
        SmtpParams(
            host="127.0.0.1",
            port=port,
            from_addr="bot@example.com",
            tls="none",
            username=user,
            password=password,
            allow_insecure=True,
            timeout=10,
        )
    )


@pytest.mark.parametrize(
    ("user", "password", "named"),
    [
        ("bot", "pässwörd-Ω", "password"),
        ("bøt@example.com", "plain", "username"),
        ("bøt", "pässwörd", "username and password"),
    ],
)
def test_non_ascii_credentials_fail_classified_without_the_secret(
    listener: socket.socket, user: str, password: str, named: str
) -> None:
    with pytest.raises(SmtpActionError) as info:
        _sender(listener.getsockname()[1], user, password).send_forward(
            ORIGINAL, "me@example.com", rule="r", idempotency_key="k"
        )
    err = info.value
    assert isinstance(err, SendError) and err.kind == "config" and not err.maybe_sent
    text = str(err)
    assert f"SMTP {named} of this account" in text and "outside ASCII" in text
    assert password not in text and "pässwörd" not in text
    assert not _connected(listener)  # refused before connecting: nothing was sent


def test_the_engine_journals_the_failure_and_releases_the_intent(listener: socket.socket) -> None:
    """A setting to fix, not a send in doubt: the intent is released, so the forward is tried
    again once the password is changed."""
    server = FakeServer()
    server.append("INBOX", ORIGINAL)
    state = StateStore.open(":memory:")
    entries: list[JournalEntry] = []
    engine = Engine(RunOptions(NOW, dt.UTC, state.begin_run("run", False)), state, entries.append)
    engine.process(
        FakeStore(server, Dialect.named("dovecot"), NOW),
        AccountContext("acct", sender=_sender(listener.getsockname()[1], "bot", "pässwörd")),
        "INBOX",
        rules_of('rule "f" { when all then forward to "me@example.com" }'),
    )
    assert [(e.action, e.outcome) for e in entries] == [("forward", "failed")]
    assert "outside ASCII" in (entries[0].error or "") and "pässwörd" not in (entries[0].error or "")
    assert state.pending_intents() == []
