"""No copy without its intent: a copy (or a move without MOVE) is announced durably before it is
made, never made while the journal cannot be written, and never repeated by a restart."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest

from mailrules.compile.dialect import Dialect
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, MailboxReport, RunOptions
from mailrules.errors import ImapError, ImapErrorKind
from mailrules.state import StateError, StateStore
from mailrules.state.models import JournalEntry
from tests.fakes import FakeServer, FakeStore

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
COPY = 'rule "c" { when subject contains "invoice" then copy to "Finance", flag }'


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rf, diags = parse_text(text, "t.rules")
    assert rf is not None and not diags, diags
    return rf.rules


def msg(n: int, pad: int = 0) -> bytes:
    return (
        f"From: bob@example.com\r\nSubject: invoice {n}\r\nMessage-ID: <{n}{'x' * pad}@t>\r\n"
        "Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n\r\nbody\r\n"
    ).encode()


def server_with(n: int, pad: int = 0) -> FakeServer:
    server = FakeServer()
    for i in range(n):
        server.append("INBOX", msg(i, pad))
    return server


def process(
    state: StateStore,
    store: FakeStore,
    rules: str = COPY,
    uids: Sequence[int] | None = None,
    run_id: str | None = None,
) -> MailboxReport:
    engine = Engine(RunOptions(NOW, dt.UTC, run_id or state.begin_run("run", False)), journal=state)
    return engine.process(store, AccountContext("a"), "INBOX", rules_of(rules), uids)


class Crash(BaseException):
    """The process dying at a chosen point."""


class FullAtJournal(StateStore):
    """The disk fills up between the copy and its journal row (rows of long Message-IDs need new
    pages: no room is left at the moment the journal is written)."""

    def record_many(self, entries: Sequence[JournalEntry]) -> None:  # type: ignore[override]
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        self._conn.execute(f"PRAGMA max_page_count = {pages}")
        super().record_many(entries)


def reopen(path: Path, cls: type[StateStore] = StateStore) -> StateStore:
    s = StateStore.open(path)
    return cls(s._conn, s.path)


def test_no_copy_while_the_intents_cannot_be_written(tmp_path: Path) -> None:
    state = StateStore.open(tmp_path / "state.db")
    run_id = state.begin_run("daemon", False)
    pages = state._conn.execute("PRAGMA page_count").fetchone()[0]
    state._conn.execute(f"PRAGMA max_page_count = {pages + 1}")
    server = server_with(40)
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    for _ in range(3):  # the watcher tries again after each failure
        with pytest.raises(StateError, match="cannot record intents: database or disk is full"):
            process(state, store, uids=list(range(1, 41)), run_id=run_id)
    assert "COPY" not in store.commands and "Finance" not in server.mailboxes
    state._conn.execute("PRAGMA max_page_count = 1073741823")  # room again
    report = process(state, store, uids=list(range(1, 41)))
    assert report.rules[0].outcomes["copy ok"] == 40
    assert len(server.mailbox("Finance").messages) == 40
    state.close()


def test_a_copy_whose_journal_row_was_lost_is_not_made_again(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore.open(path).close()
    server = server_with(3, pad=6000)
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    full = reopen(path, FullAtJournal)
    run_id = full.begin_run("daemon", False)
    copies = []
    for _ in range(3):  # three restarts on a full disk: the copies are made once
        with pytest.raises(StateError, match="cannot record the journal: database or disk is full"):
            process(full, store, uids=[1, 2, 3], run_id=run_id)
        assert len(server.mailbox("Finance").messages) == 3
        copies.append(store.commands.count("COPY"))
    assert copies[0] == copies[-1]  # no COPY command after the first attempt
    assert full.find() == []  # no journal row could be written
    full.close()
    state = StateStore.open(path)  # free space: the next attempt goes through
    report = process(state, store, uids=[1, 2, 3])
    assert report.rules[0].outcomes == {"copy skipped": 3, "flag skipped": 3}
    assert {e.error for e in state.find() if e.action == "copy"} == {"already copied (journal)"}
    assert len(server.mailbox("Finance").messages) == 3
    assert state.pending_intents() == []  # confirmed before the disk was full
    state.close()


def test_a_copy_in_doubt_is_not_repeated_and_is_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = StateStore.open(tmp_path / "state.db")
    server = server_with(2)
    store = FakeStore(server, Dialect.named("dovecot"), NOW)

    def crash(self: StateStore, keys: Sequence[str]) -> None:
        raise Crash

    monkeypatch.setattr(StateStore, "confirm_many", crash)
    with pytest.raises(Crash):
        process(state, store)
    monkeypatch.undo()
    pending = state.pending_intents()
    assert sorted(p.entry.uid for p in pending) == [1, 2] and {p.entry.action for p in pending} == {"copy"}
    assert all(p.entry.destination == "Finance" for p in pending)
    report = process(state, store)
    assert report.rules[0].outcomes["copy skipped"] == 2
    assert {e.error for e in state.find() if e.action == "copy"} == {
        "an earlier attempt may have copied it (journal)"
    }
    assert len(server.mailbox("Finance").messages) == 2
    state.close()


class Refusing(FakeStore):
    """COPY answered with an error of `kind` (once)."""

    def __init__(self, server: FakeServer, kind: ImapErrorKind) -> None:
        super().__init__(server, Dialect.named("dovecot"), NOW)
        self.kind = kind
        self.refused = 0

    def copy(self, uids: Sequence[int], dest: str, *, create: bool) -> tuple[int | None, dict[int, int]]:
        if not self.refused:
            self.refused += 1
            raise ImapError("COPY failed", kind=self.kind)
        return super().copy(uids, dest, create=create)


def test_a_refused_copy_is_released_and_made_by_the_next_run(tmp_path: Path) -> None:
    state = StateStore.open(tmp_path / "state.db")
    server = server_with(2)
    store = Refusing(server, "permanent")
    assert process(state, store).rules[0].outcomes["copy failed"] == 2
    assert state.pending_intents() == []
    assert process(state, store).rules[0].outcomes["copy ok"] == 2
    assert len(server.mailbox("Finance").messages) == 2
    state.close()


def test_a_copy_lost_with_the_connection_stays_in_doubt(tmp_path: Path) -> None:
    state = StateStore.open(tmp_path / "state.db")
    server = server_with(1)
    assert process(state, Refusing(server, "reconnect")).rules[0].outcomes["copy failed"] == 1
    (pending,) = state.pending_intents()
    assert pending.entry.action == "copy" and pending.entry.uid == 1
    state.close()


class NoExpunge(FakeStore):
    """A server without MOVE nor UIDPLUS: a move copies and leaves the original (\\Deleted)."""

    def move(self, uids, dest, *, create):  # type: ignore[no-untyped-def]
        self.commands.append("MOVE")
        self.store_flags(uids, ["\\Deleted"], True)
        return self._transfer(uids, dest, create, remove=False)


def test_a_move_without_move_is_not_repeated_on_the_original_left_behind(tmp_path: Path) -> None:
    state = StateStore.open(tmp_path / "state.db")
    server = server_with(2)
    store = NoExpunge(server, Dialect.named("rfc3501"), NOW)
    rules = (
        'rule "m" { when subject contains "invoice" then move to "Finance" }\n'
        'rule "later" { when all then flag }'
    )
    assert process(state, store, rules).rules[0].outcomes["move ok"] == 2
    second = process(state, store, rules)
    assert second.rules[0].outcomes["move skipped"] == 2
    assert [r.rule for r in second.rules] == ["m"]  # the later rule does not see them: they left
    assert len(server.mailbox("Finance").messages) == 2
    assert {e.error for e in state.find() if e.outcome == "skipped"} == {"already moved (journal)"}
    state.close()


def test_moves_with_move_and_flags_need_no_intent(tmp_path: Path) -> None:
    state = StateStore.open(tmp_path / "state.db")
    server = server_with(2)
    rules = 'rule "m" { when subject contains "invoice" then flag, move to "Finance" }'
    process(state, FakeStore(server, Dialect.named("dovecot"), NOW), rules)
    assert state._conn.execute("SELECT COUNT(*) FROM intents").fetchone()[0] == 0
    state.close()
