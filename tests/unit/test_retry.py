"""Passing refusals (RFC 5530 UNAVAILABLE, INUSE, LIMIT, SERVERBUG): what the engine marks to try
again, and how a watcher keeps count (the daemon side is tested on Dovecot in test_daemon.py)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from mailrules.accounts import Account
from mailrules.compile.dialect import Dialect
from mailrules.config import AccountSettings, Secret
from mailrules.daemon.watcher import RETRY_TIMES, MailboxWatcher, WatchContext
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, RunOptions
from mailrules.errors import ImapError, ImapErrorKind
from tests.fakes import FakeServer, FakeStore

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
ACCOUNT = AccountSettings("a", "127.0.0.1", 143, "none", "u", Secret("p"))


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rule_file, diags = parse_text(text, "t.rules")
    assert rule_file is not None and not diags, diags
    return rule_file.rules


class RefusingStore(FakeStore):
    """Refuses every MOVE, COPY and STORE with the given kind of ImapError."""

    def __init__(self, server: FakeServer, dialect: Dialect, kind: ImapErrorKind) -> None:
        super().__init__(server, dialect, NOW)
        self.kind = kind

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ImapError("UID MOVE failed: NO [UNAVAILABLE] try later", self.kind, "UNAVAILABLE")

    move = copy = _refuse

    def store_flags(self, uids: Sequence[int], flags: Sequence[str], add: bool) -> None:
        self._refuse()


def run(text: str, kind: ImapErrorKind = "retry", dialect: Dialect | None = None) -> list[int]:
    server = FakeServer()
    for i in range(3):
        server.append("INBOX", f"Subject: s{i}\r\nMessage-ID: <{i}@x>\r\n\r\nbody\r\n".encode())
    store = RefusingStore(server, dialect or Dialect.named("dovecot"), kind)
    report = Engine(RunOptions(NOW, dt.UTC, "r")).process(store, AccountContext("a"), "INBOX", rules_of(text))
    return report.retry


@pytest.mark.parametrize("actions", ['move to "X"', "archive", "delete", "flag", "mark read", 'tag "$T"'])
def test_repeatable_actions_refused_for_now_are_marked(actions: str) -> None:
    assert run(f'rule "r" {{ when all then {actions} }}') == [1, 2, 3]


def test_copy_is_never_repeated() -> None:
    # a chunk may already be copied when a later one is refused: again would duplicate it
    assert run('rule "r" { when all then copy to "X" }') == []


def test_move_without_MOVE_is_never_repeated() -> None:
    # COPY + STORE + EXPUNGE: the COPY may have been made
    assert run('rule "r" { when all then move to "X" }', dialect=Dialect.named("rfc3501")) == []


def test_a_refusal_for_good_is_not_repeated() -> None:
    assert run('rule "r" { when all then move to "X" }', kind="permanent") == []


def _watcher() -> MailboxWatcher:
    ctx = WatchContext(
        state=None,  # type: ignore[arg-type]
        tz=dt.UTC,
        rules=lambda: (),
        lock_for=lambda a, m: None,  # type: ignore[arg-type,return-value]
    )
    return MailboxWatcher(Account(ACCOUNT, lambda a: None), "INBOX", ctx)  # type: ignore[arg-type,return-value]


def test_watcher_counts_tries_and_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    w = _watcher()
    w._note_retries([5, 6, 7], [5, 6])
    assert w.retry == {"INBOX": {5: 1, 6: 1}}
    w._note_retries([5, 6], [6])  # 5 went through this time
    assert w.retry == {"INBOX": {6: 2}}
    with caplog.at_level(logging.ERROR):
        for _ in range(RETRY_TIMES - 1):
            w._note_retries([6], [6])
    assert w.retry == {}
    assert f"a/INBOX: uid 6: refused {RETRY_TIMES + 1} times; given up" in caplog.text


def test_no_arrival_rule_left_forgets_the_tries() -> None:
    w = _watcher()  # its rules() is empty, as after a reload that removed them
    w.retry = {"INBOX": {5: 1}}
    w._process(None, [5], 1, checkpoint=False)  # type: ignore[arg-type]
    assert w.retry == {}


class FailingStore(FakeStore):
    def fetch_views(self, uids: Sequence[int], needs: Any) -> Any:
        raise ImapError("UID FETCH failed: NO [CANNOT] nope", "permanent", "CANNOT")


def test_a_failed_batch_uses_up_a_try_of_what_waits() -> None:
    w = _watcher()
    rules = rules_of('rule "r" { when all then move to "X" }')
    w.ctx.rules = lambda: rules
    w.retry = {"INBOX": {5: RETRY_TIMES}}
    store = FailingStore(FakeServer(), Dialect.named("dovecot"), NOW)
    w._process(store, [5, 6], 1, checkpoint=False)  # type: ignore[arg-type]
    assert w.retry == {}  # 5 was on its last try; 6 was never refused
