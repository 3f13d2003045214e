"""A message another client expunges between our FETCH and our MOVE or COPY: the server leaves it
out of its COPYUID answer, and the journal says it was skipped, not moved (engine/sending.py `_made`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest

from mailrules.compile.dialect import Dialect
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.engine.claims import transfer_key
from mailrules.engine.core import Engine
from mailrules.engine.loops import VANISHED, skip_label
from mailrules.engine.ports import AccountContext, MailboxReport, RunOptions
from mailrules.state.models import JournalEntry
from mailrules.state.store import StateStore
from tests.fakes import FakeServer, FakeStore

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rf, diags = parse_text(text, "t.rules")
    assert rf is not None and not [d for d in diags if d.severity == "error"], diags
    return rf.rules


def msg(subject: str) -> bytes:
    return f"From: a@example.com\r\nSubject: {subject}\r\nMessage-ID: <{subject}@t>\r\n\r\nbody\r\n".encode()


class RacingStore(FakeStore):
    """Another client expunges `doomed` from the selected mailbox just before our first MOVE or
    COPY (after the engine's SEARCH and FETCH). `copyuid`: whether the server answers COPYUID."""

    def __init__(self, server: FakeServer, dialect: Dialect, doomed: int, *, copyuid: bool = True) -> None:
        super().__init__(server, dialect, NOW)
        self.doomed: int | None = doomed
        self.copyuid = copyuid
        self.sent_uids: list[list[int]] = []

    def _transfer(
        self, uids: Sequence[int], dest: str, create: bool, remove: bool
    ) -> tuple[int | None, dict[int, int]]:
        self.sent_uids.append(list(uids))
        if self.doomed is not None:
            del self._mb().messages[self.doomed]
            self.doomed = None
        new_uv, mapping = super()._transfer(uids, dest, create, remove)
        return (new_uv, mapping) if self.copyuid else (None, {})


def run(
    rules: str, dialect: str = "dovecot", *, copyuid: bool = True, n: int = 3
) -> tuple[FakeServer, RacingStore, StateStore, str, MailboxReport]:
    server = FakeServer()
    for i in range(n):
        server.append("INBOX", msg(f"m{i}"))
    server.mailbox("Done")
    state = StateStore.open(":memory:")
    run_id = state.begin_run("run", False)
    store = RacingStore(server, Dialect.named(dialect), doomed=2, copyuid=copyuid)
    entries: list[JournalEntry] = []
    engine = Engine(RunOptions(NOW, dt.UTC, run_id), journal=state, on_entry=entries.append)
    report = engine.process(store, AccountContext("a"), "INBOX", rules_of(rules))
    return server, store, state, run_id, report


def rows(state: StateStore, run_id: str) -> list[tuple[str, int, str, str | None]]:
    return sorted((e.action, e.uid, e.outcome, e.error) for e in state.run_entries(run_id))


def test_a_message_expunged_before_the_move_is_journalled_skipped_not_moved() -> None:
    server, _, state, run_id, report = run(
        'rule "m" { when subject contains "m" then move to "Done" }\nrule "after" { when all then flag }'
    )
    assert rows(state, run_id) == [
        ("move", 1, "ok", None),
        ("move", 2, "skipped", VANISHED),
        ("move", 3, "ok", None),
    ]  # and the later rule saw none of them: the two moved and the one gone
    assert report.rules[0].outcomes["move ok"] == 2 and report.rules[0].outcomes["move skipped"] == 1
    assert len(server.mailbox("Done").messages) == 2 and not server.mailbox("INBOX").messages
    assert sorted(m.source.uid for m in state.undo_plan(run_id).moves) == [1, 2]  # new UIDs in Done
    assert skip_label(VANISHED) == "vanished"  # mailrules_actions_skipped_total{reason="vanished"}


def test_without_copyuid_nothing_tells_a_vanished_message_apart() -> None:
    _, _, state, run_id, report = run('rule "m" { when all then move to "Done" }', copyuid=False)
    assert rows(state, run_id) == [("move", u, "ok", None) for u in (1, 2, 3)]
    assert report.rules[0].outcomes["move ok"] == 3


def test_a_copy_releases_the_intent_of_what_was_gone_and_no_later_command_names_it() -> None:
    server, _, state, run_id, report = run('rule "c" { when all then copy to "Done", flag }')
    assert rows(state, run_id) == [
        ("copy", 1, "ok", None),
        ("copy", 2, "skipped", VANISHED),
        ("copy", 3, "ok", None),
        ("flag", 1, "ok", None),
        ("flag", 2, "skipped", VANISHED),  # not sent: the server would have ignored it
        ("flag", 3, "ok", None),
    ]
    assert "copy skipped" in report.rules[0].outcomes and report.rules[0].outcomes["copy ok"] == 2
    uv = server.mailbox("INBOX").uidvalidity
    keys = {u: transfer_key("a", "INBOX", uv, u, "c", "copy", "Done") for u in (1, 2, 3)}
    assert state.is_confirmed(keys[1]) and state.is_confirmed(keys[3])
    # nothing was copied: the intent is released, not left in doubt (`mailrules log --pending`)
    assert not state.is_confirmed(keys[2]) and not state.pending_intents()


@pytest.mark.parametrize("copyuid", [True, False])
def test_a_move_without_move_releases_the_intent_of_what_was_gone(copyuid: bool) -> None:
    """rfc3501 has no MOVE: COPY, \\Deleted, EXPUNGE, with intents (engine/claims.py)."""
    server, store, state, run_id, _ = run(
        'rule "m" { when all then move to "Done" }', "rfc3501", copyuid=copyuid
    )
    key = transfer_key("a", "INBOX", server.mailbox("INBOX").uidvalidity, 2, "m", "move", "Done")
    if copyuid:
        assert ("move", 2, "skipped", VANISHED) in rows(state, run_id)
        assert not state.is_confirmed(key) and not state.pending_intents()
    else:  # we cannot know: journalled moved, its intent confirmed
        assert ("move", 2, "ok", None) in rows(state, run_id)
        assert state.is_confirmed(key)
    assert store.sent_uids == [[1, 2, 3]]
