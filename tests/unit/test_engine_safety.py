"""The engine's seam and its safety: observers that raise, the journal written whatever happens
after the server acted, the source mailbox as the store names it, Gmail's archive in place, and
`limit`'s pre-count on the engine's own path."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest

from mailrules.commands.run import undo_run
from mailrules.compile.dialect import Dialect
from mailrules.config.model import AccountSettings, Secret, Settings
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.dsl.semantics import evaluate_condition
from mailrules.engine.core import Engine
from mailrules.engine.limits import count_matches
from mailrules.engine.ports import ARCHIVED_LABEL, AccountContext, MailboxReport, RuleReport, RunOptions
from mailrules.errors import StateError
from mailrules.state.models import JournalEntry, Location, UndoFlag
from mailrules.state.store import StateStore
from tests.fakes import FakeServer, FakeStore
from tests.unit.test_gmail_dialect import gmail_session

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
GMAIL_SPECIAL = {"\\Archive": "[Gmail]/All Mail", "\\Trash": "[Gmail]/Trash"}


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rf, diags = parse_text(text, "t.rules")
    assert rf is not None and not [d for d in diags if d.severity == "error"], diags
    return rf.rules


def msg(subject: str) -> bytes:
    return f"From: a@example.com\r\nSubject: {subject}\r\nMessage-ID: <{subject}@t>\r\n\r\nbody\r\n".encode()


class Broken(RuntimeError):
    pass


class RaisingObserver:
    """An EngineObserver whose every hook raises, counting its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def entry(self, entry: JournalEntry) -> None:
        self.calls.append("entry")
        raise Broken("metrics are down")

    def rule_done(self, report: RuleReport, seconds: float) -> None:
        self.calls.append("rule_done")
        raise Broken("metrics are down")

    def mailbox_done(self, report: MailboxReport, seconds: float) -> None:
        self.calls.append("mailbox_done")
        raise Broken("metrics are down")


def raising_hook(entry: JournalEntry) -> None:
    raise Broken("the log handler is broken")


def test_an_observer_raising_after_a_move_loses_no_journal_row(caplog: pytest.LogCaptureFixture) -> None:
    server = FakeServer()
    for i in range(3):
        server.append("INBOX", msg(f"move me {i}"))
    server.mailbox("Done")
    state = StateStore.open(":memory:")
    run_id = state.begin_run("run", False)
    observer = RaisingObserver()
    engine = Engine(RunOptions(NOW, dt.UTC, run_id), journal=state, on_entry=raising_hook, observer=observer)
    rules = rules_of(
        'rule "m" { when subject contains "move me" then move to "Done" }\n'
        'rule "after" { when all then flag }'
    )
    with caplog.at_level(logging.DEBUG, logger="mailrules.engine.observing"):
        store = FakeStore(server, Dialect.named("dovecot"), NOW)
        report = engine.process(store, AccountContext("a"), "INBOX", rules)

    # the server moved them, the pass went on, and every move is journalled
    assert len(server.mailbox("Done").messages) == 3 and not server.mailbox("INBOX").messages
    assert report.rules[0].outcomes["move ok"] == 3
    assert [(e.action, e.outcome) for e in state.run_entries(run_id)] == [("move", "ok")] * 3
    assert observer.calls.count("entry") == 3 and "rule_done" in observer.calls
    assert observer.calls[-1] == "mailbox_done"
    # `undo` sees the moves: each goes back to INBOX
    plan = state.undo_plan(run_id)
    assert [(m.source.mailbox, m.target) for m in plan.moves] == [("Done", "INBOX")] * 3
    # each broken hook is logged once at ERROR, with its traceback; again only at DEBUG
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert sorted(r.getMessage().split(" failed")[0] for r in errors) == [
        "engine observer RaisingObserver.entry",
        "engine observer RaisingObserver.mailbox_done",
        "engine observer RaisingObserver.rule_done",
        "engine observer raising_hook",
    ]
    assert all(r.exc_info is not None for r in errors)
    again = [r for r in caplog.records if r.levelno == logging.DEBUG and "failed before" in r.getMessage()]
    assert len(again) == 2 + 2  # the two other entries, through the hook and the observer


def test_what_the_server_did_is_journalled_when_the_rule_stops_half_way(tmp_path: object) -> None:
    """A flag change made, then the copy's claim cannot be written (a full disk): the StateError
    stops the rule and goes up, and the flag change is in the journal for `undo`."""

    class NoClaims(StateStore):
        def claim(self, items: object) -> set[str]:  # type: ignore[override]
            raise StateError("state :memory:: cannot claim: database or disk is full")

    server = FakeServer()
    server.append("INBOX", msg("x"))
    base = StateStore.open(":memory:")
    state = NoClaims(base._conn, base.path)
    run_id = state.begin_run("run", False)
    engine = Engine(RunOptions(NOW, dt.UTC, run_id), journal=state)
    with pytest.raises(StateError):
        engine.process(
            FakeStore(server, Dialect.named("dovecot"), NOW),
            AccountContext("a"),
            "INBOX",
            rules_of('rule "r" { when all then flag, copy to "Elsewhere" }'),
        )
    assert [(e.action, e.outcome) for e in state.run_entries(run_id)] == [("flag", "ok")]
    assert "Elsewhere" not in server.state()  # no copy without its intent
    assert [(f.flag, f.add) for f in state.undo_plan(run_id).flags] == [("\\Flagged", False)]


# -- the source mailbox, as the store tells names apart ---------------------------------------------


@pytest.mark.parametrize("action", ["move to", "copy to", "archive to"])
def test_the_source_mailbox_under_another_name_is_still_the_source(action: str) -> None:
    """On Cyrus `INBOX.Lists` and `Lists` are one mailbox: the store says so (same_mailbox)."""
    server = FakeServer()
    server.append("Lists", msg("post"))
    before = server.state()
    entries: list[JournalEntry] = []
    Engine(RunOptions(NOW, dt.UTC, "r"), on_entry=entries.append).process(
        FakeStore(server, Dialect.named("dovecot"), NOW, inbox_prefix=True),
        AccountContext("a"),
        "Lists",
        rules_of(f'rule "l" in "Lists" {{ when all then {action} "INBOX/Lists" }}'),
    )
    assert server.state() == before
    assert [(e.outcome, e.error) for e in entries] == [("skipped", "destination is the source mailbox")]


def test_without_the_namespace_quirk_the_other_name_is_another_mailbox() -> None:
    server = FakeServer()
    server.append("Lists", msg("post"))
    Engine(RunOptions(NOW, dt.UTC, "r")).process(
        FakeStore(server, Dialect.named("dovecot"), NOW),
        AccountContext("a"),
        "Lists",
        rules_of('rule "l" in "Lists" { when all then move to "INBOX/Lists" }'),
    )
    assert list(server.state()) == ["INBOX/Lists"]


# -- Gmail's archive ---------------------------------------------------------------------------------


def gmail_run(
    mailbox: str, rule: str, account: AccountContext | None = None
) -> tuple[FakeServer, StateStore, str, list[JournalEntry]]:
    server = FakeServer()
    uid = server.append(mailbox, msg("post"))
    server.mailbox(mailbox).messages[uid].labels.add(ARCHIVED_LABEL)
    state = StateStore.open(":memory:")
    run_id = state.begin_run("run", False)
    entries: list[JournalEntry] = []
    Engine(RunOptions(NOW, dt.UTC, run_id), journal=state, on_entry=entries.append).process(
        FakeStore(server, Dialect.named("gmail"), NOW, GMAIL_SPECIAL),
        account or AccountContext("g"),
        mailbox,
        rules_of(rule),
    )
    return server, state, run_id, entries


def test_gmail_archive_from_a_label_removes_the_inbox_label_in_place_and_undo_adds_it_back() -> None:
    rules = 'rule "a" in "Lists" { when all then archive }\nrule "later" in "Lists" { when all then flag }'
    server, state, run_id, entries = gmail_run("Lists", rules)
    assert list(server.state()) == ["Lists"]  # not moved to All Mail: the label Lists stays
    (message,) = server.mailbox("Lists").messages.values()
    assert ARCHIVED_LABEL not in message.labels and not message.flags  # and it left the pass
    assert [(e.action, e.detail, e.destination, e.outcome) for e in entries] == [
        ("archive", ARCHIVED_LABEL, None, "ok")
    ]
    plan = state.undo_plan(run_id)
    assert plan.moves == () and plan.refused == ()
    assert [(f.where, f.flag, f.add) for f in plan.flags] == [
        (Location("g", "Lists", entries[0].uidvalidity, entries[0].uid), ARCHIVED_LABEL, True)
    ]
    assert isinstance(plan.flags[0], UndoFlag)


def test_gmail_archive_from_inbox_is_a_move_to_all_mail() -> None:
    server, _, _, entries = gmail_run("INBOX", 'rule "a" { when all then archive }')
    assert list(server.state()) == ["[Gmail]/All Mail"]
    assert [(e.action, e.destination) for e in entries] == [("archive", "[Gmail]/All Mail")]


@pytest.mark.parametrize(
    ("rule", "account", "where"),
    [
        ('rule "a" in "Lists" { when all then archive to "Old" }', None, "Old"),
        ('rule "a" in "Lists" { when all then archive }', AccountContext("g", archive="Old"), "Old"),
        ('rule "a" in "Lists" { when all then move to "B", archive }', None, "[Gmail]/All Mail"),
    ],
)
def test_gmail_archive_elsewhere_than_all_mail_is_a_move(
    rule: str, account: AccountContext | None, where: str
) -> None:
    server, _, _, entries = gmail_run("Lists", rule, account)
    assert list(server.state()) == [where]
    assert entries[-1].destination == where and entries[-1].detail == ""


def test_dry_run_does_not_archive_in_place() -> None:
    server = FakeServer()
    uid = server.append("Lists", msg("post"))
    server.mailbox("Lists").messages[uid].labels.add(ARCHIVED_LABEL)
    before = server.state()
    entries: list[JournalEntry] = []
    Engine(RunOptions(NOW, dt.UTC, "r", dry_run=True), on_entry=entries.append).process(
        FakeStore(server, Dialect.named("gmail"), NOW, GMAIL_SPECIAL),
        AccountContext("g"),
        "Lists",
        rules_of('rule "a" in "Lists" { when all then archive }'),
    )
    assert server.state() == before
    assert [(e.action, e.detail, e.outcome) for e in entries] == [("archive", ARCHIVED_LABEL, "dry-run")]


# -- limit's pre-count: the engine's path, quietly -----------------------------------------------------


def test_the_pre_count_skips_a_broken_message_quietly_and_the_pass_reports_it_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def breaks_on_boom(cond, view, ctx, *, deadline=None):  # type: ignore[no-untyped-def]
        if "BOOM" in " ".join(view.header_values("Subject")):
            raise ValueError("a decoder gave up")
        return evaluate_condition(cond, view, ctx, deadline=deadline)

    monkeypatch.setattr("mailrules.engine.evaluation.evaluate_condition", breaks_on_boom)
    server = FakeServer()
    for subject in ("bulk 1", "bulk BOOM", "bulk 2", "other"):
        server.append("INBOX", msg(subject))
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    rules = rules_of('rule "b" limit 5 { when subject matches /^bulk/ then flag }')
    with caplog.at_level(logging.INFO):
        assert count_matches(store, "INBOX", rules, NOW, dt.UTC) == {"b": 2}
    assert not [r for r in caplog.records if "could not be evaluated" in r.getMessage()]
    with caplog.at_level(logging.INFO):
        report = Engine(RunOptions(NOW, dt.UTC, "r")).process(store, AccountContext("a"), "INBOX", rules)
    assert report.rules[0].matched == 2 and report.skipped_messages == 1
    assert len([r for r in caplog.records if "could not be evaluated" in r.getMessage()]) == 1


def test_the_pre_count_needs_no_fetch_when_the_server_answers_exactly() -> None:
    server = FakeServer()
    for i in range(4):
        server.append("INBOX", msg(f"m{i}"), ["\\Seen"] if i % 2 else [])
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    rules = rules_of('rule "s" limit 1 { when seen then delete }')
    assert count_matches(store, "INBOX", rules, NOW, dt.UTC) == {"s": 2}
    assert store.commands == ["SELECT", "SEARCH"]


def test_undo_of_an_archive_in_place_adds_the_inbox_label_back_on_gmail() -> None:
    """`undo` sets the label with X-GM-LABELS (through ImapStore), not as a flag."""
    _, state, run_id, entries = gmail_run("Lists", 'rule "a" in "Lists" { when all then archive }')
    (entry,) = entries
    echo = f"* 1 FETCH (X-GM-LABELS (Lists \\Inbox) UID {entry.uid})".encode()
    session, imap, client = gmail_session(lambda tag, cmd: [echo, tag + b" OK STORE (Success)"])
    selected = {b"UIDVALIDITY": entry.uidvalidity, b"EXISTS": 1, b"READ-WRITE": True, b"PERMANENTFLAGS": ()}
    client.select_folder = lambda name, readonly=False: selected  # type: ignore[method-assign]
    account = AccountSettings("g", "imap.gmail.com", 993, "implicit", "u", Secret("p"))
    settings = Settings(Path("rules.d"), Path("state.db"), Path("m.toml"), accounts={"g": account})
    result = undo_run(settings, state, run_id, connect=lambda acct: session)
    assert (result.undone, result.errors, result.refused) == (1, [], [])
    assert imap.commands == [f"T1 UID STORE {entry.uid} +X-GM-LABELS (\\Inbox)".encode()]
