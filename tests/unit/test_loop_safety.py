"""Loop safety on the fake store: no message can make an action target its own mailbox, create
mailboxes without end, or be forwarded back and forth (actions/loops.py, actions/apply.py)."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest

from mailrules.compile.dialect import Dialect
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.engine import loops
from mailrules.engine.core import Engine
from mailrules.engine.loops import (
    CreationBudget,
    LoopGuard,
    SendLimiter,
    header_digest,
    same_mailbox,
    send_refusal,
    skip_label,
)
from mailrules.engine.ports import AccountContext, MailboxReport, RunOptions
from mailrules.smtp.compose import SmtpActionError
from mailrules.state.models import JournalEntry
from mailrules.state.store import StateStore, message_intent_key
from tests.fakes import FakeServer, FakeStore, RecordingSender

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rf, diags = parse_text(text, "t.rules")
    assert rf is not None and not [d for d in diags if d.severity == "error"], diags
    return rf.rules


def msg(subject: str = "hello", extra: str = "", mid: str | None = None, received: str = "") -> bytes:
    return (
        f"{received}From: a@example.com\r\nTo: me@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{mid or abs(hash((subject, extra)))}@t>\r\n"
        f"Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n{extra}\r\nbody\r\n"
    ).encode()


class Run:
    """One engine pass with the journal entries it emitted."""

    def __init__(
        self,
        server: FakeServer,
        rules: str,
        mailbox: str = "INBOX",
        *,
        guard: LoopGuard | None = None,
        sender: object | None = None,
        state: StateStore | None = None,
        dry_run: bool = False,
    ) -> None:
        self.entries: list[JournalEntry] = []
        self.sender = sender if sender is not None else RecordingSender()
        account = AccountContext("acct", sender=self.sender, guard=guard)  # type: ignore[arg-type]
        run_id = state.begin_run("run", dry_run) if state is not None else "run"
        engine = Engine(
            RunOptions(NOW, dt.UTC, run_id, dry_run=dry_run), journal=state, on_entry=self.entries.append
        )
        self.store = FakeStore(server, Dialect.named("dovecot"), NOW)
        self.report: MailboxReport = engine.process(self.store, account, mailbox, rules_of(rules))

    def outcomes(self) -> list[tuple[str, str, str | None]]:
        return [(e.action, e.outcome, e.error) for e in self.entries]


# -- the source mailbox ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("INBOX", "inbox", True),
        ("Inbox", "INBOX", True),
        ("INBOX/", "INBOX", True),
        ("inbox/Sub", "INBOX/Sub", True),
        ("Work", "work", False),  # only INBOX is case-insensitive
        ("Work/", "Work", True),
        ("Work//", "Work", True),
        ("Lists/dev", "Lists/dev", True),
        ("Lists/dev", "Lists/Dev", False),
        ("INBOX.x", "INBOX/x", False),
    ],
)
def test_same_mailbox(a: str, b: str, same: bool) -> None:
    assert same_mailbox(a, b, "/") is same
    assert same_mailbox(b, a, "/") is same


def test_same_mailbox_with_a_dot_separator() -> None:
    assert same_mailbox("inbox.Sub", "INBOX.Sub", ".")
    assert not same_mailbox("inbox/Sub", "INBOX/Sub", ".")


@pytest.mark.parametrize("list_id", ["INBOX", "inbox", "Inbox", " INBOX "])
def test_a_copy_rendered_into_its_own_mailbox_is_skipped_and_journalled(list_id: str) -> None:
    server = FakeServer()
    original = msg(extra=f"List-Id: Loop <{list_id}>\r\n")
    server.append("INBOX", original)
    run = Run(server, 'rule "lists" { when header "List-Id" exists then copy to "{list}", flag }')
    assert run.outcomes() == [
        ("copy", "skipped", "destination is the source mailbox"),
        ("flag", "ok", None),
    ]
    assert run.entries[0].destination == list_id.strip()  # as rendered
    assert server.state() == {"INBOX": [(original, frozenset({"\\Flagged"}))]}
    assert "COPY" not in run.store.commands
    assert run.report.rules[0].outcomes == {"copy skipped": 1, "flag ok": 1}


def test_other_names_compare_exactly() -> None:
    server = FakeServer()
    server.append("Work", msg(extra="List-Id: <work>\r\n"))
    run = Run(server, 'rule "l" in "Work" { when all then copy to "{list}" }', "Work")
    assert run.outcomes() == [("copy", "ok", None)]
    assert len(server.mailbox("work").messages) == 1


def test_the_name_after_sanitising_is_compared() -> None:
    """`Lists/{list}` read in "Lists/dev": a List-Id "dev" renders the mailbox itself."""
    server = FakeServer()
    server.append("Lists/dev", msg(extra="List-Id: Dev <dev>\r\n"))
    server.append("Lists/dev", msg(subject="other", extra="List-Id: Dev/Lists <dev/x>\r\n"))
    run = Run(server, 'rule "l" in "Lists/dev" { when all then copy to "Lists/{list}" }', "Lists/dev")
    assert sorted(run.outcomes()) == [
        ("copy", "ok", None),  # "dev/x" becomes "dev_x": one level, another mailbox
        ("copy", "skipped", "destination is the source mailbox"),
    ]
    assert sorted(server.mailboxes) == ["Lists/dev", "Lists/dev_x"]


def test_a_move_into_its_own_mailbox_is_skipped_and_ends_the_rules_for_it() -> None:
    server = FakeServer()
    original = msg(extra="List-Id: <INBOX>\r\n")
    server.append("INBOX", original)
    run = Run(
        server,
        'rule "l" { when all then move to "{list}" }\nrule "later" { when all then flag }',
    )
    assert run.outcomes() == [("move", "skipped", "destination is the source mailbox")]
    assert server.state() == {"INBOX": [(original, frozenset())]}  # "later" never saw it
    assert "MOVE" not in run.store.commands


def test_an_earlier_removing_action_takes_over_from_a_skipped_one() -> None:
    server = FakeServer()
    server.append("INBOX", msg(extra="List-Id: <INBOX>\r\n"))
    run = Run(server, 'rule "l" { when all then move to "Elsewhere", move to "{list}" }')
    assert run.outcomes() == [
        ("move", "skipped", "destination is the source mailbox"),
        ("move", "ok", None),
    ]
    assert list(server.state()) == ["Elsewhere"]


@pytest.mark.parametrize(("action", "configured"), [("delete", "Trash"), ("archive", "Archive")])
def test_delete_in_trash_and_archive_in_archive_are_skipped(action: str, configured: str) -> None:
    server = FakeServer()
    original = msg()
    server.append(configured, original)
    run = Run(server, f'rule "r" in "{configured}" every 1 hours {{ when all then {action} }}', configured)
    assert run.outcomes() == [(action, "skipped", "destination is the source mailbox")]
    assert server.state() == {configured: [(original, frozenset())]}


def test_a_dry_run_says_it_would_skip() -> None:
    server = FakeServer()
    server.append("INBOX", msg(extra="List-Id: <INBOX>\r\n"))
    run = Run(server, 'rule "l" { when all then copy to "{list}" }', dry_run=True)
    assert run.outcomes() == [("copy", "skipped", "destination is the source mailbox")]


# -- the mailbox creation budget ---------------------------------------------------------------------


def test_a_run_creates_at_most_its_budget_of_mailboxes() -> None:
    server = FakeServer()
    for i in range(5):
        server.append("INBOX", msg(subject=f"s{i}", extra=f"List-Id: <l{i}>\r\n"))
    server.mailbox("Lists/l4")  # exists already: costs nothing
    guard = LoopGuard(CreationBudget(limit=2))
    run = Run(server, 'rule "l" { when all then move to "Lists/{list}" }', guard=guard)
    failed = [e for e in run.entries if e.outcome == "failed"]
    assert [e.outcome for e in run.entries].count("ok") == 3
    assert [e.destination for e in failed] == ["Lists/l2", "Lists/l3"]
    assert failed[0].error == (
        "mailbox creation limit reached: 2 mailboxes created in this run for account acct "
        "([limits] mailboxes_created_per_run = 2); 'Lists/l2' not created"
    )
    assert skip_label(failed[0].error) is None
    assert sorted(server.mailboxes) == ["INBOX", "Lists/l0", "Lists/l1", "Lists/l4"]
    assert len(server.mailbox("INBOX").messages) == 2  # left where they were


def test_the_budget_is_per_account_and_slides_with_a_window() -> None:
    now = [0.0]
    budget = CreationBudget(limit=2, window=loops.HOUR, clock=lambda: now[0])
    assert budget.take("a", "x") is None and budget.take("a", "y") is None
    refused = budget.take("a", "z")
    assert refused is not None and "2 mailboxes created in the last hour" in refused
    assert budget.take("b", "x") is None  # another account has its own
    now[0] = loops.HOUR + 1
    assert budget.take("a", "z") is None


def test_without_create_mailboxes_nothing_is_created_nor_counted() -> None:
    server = FakeServer()
    server.append("INBOX", msg())
    guard = LoopGuard(CreationBudget(limit=5))
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    account = AccountContext("acct", create_mailboxes=False, guard=guard)
    report = Engine(RunOptions(NOW, dt.UTC, "r")).process(
        store, account, "INBOX", rules_of('rule "r" { when all then move to "New" }')
    )
    assert report.rules[0].outcomes == {"move failed": 1}
    assert "New" not in server.mailboxes and not guard.creations._made


# -- forward and redirect: what is never sent on -----------------------------------------------------

REFUSED = [
    ("Auto-Submitted: auto-replied\r\n", "automatic mail (Auto-Submitted)"),
    ("Auto-Submitted: auto-generated (vacation)\r\n", "automatic mail (Auto-Submitted)"),
    ("Auto-Submitted: auto-notified; owner-email=x@y.z\r\n", "automatic mail (Auto-Submitted)"),
    ("Return-Path: <>\r\n", "a bounce (empty Return-Path)"),
    ("Return-Path: < >\r\n", "a bounce (empty Return-Path)"),
    ("Precedence: bulk\r\n", "bulk or list mail (Precedence)"),
    ("Precedence: JUNK\r\n", "bulk or list mail (Precedence)"),
    ("Precedence: list\r\n", "bulk or list mail (Precedence)"),
    (
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n',
        "a delivery or disposition report",
    ),
    ("Content-Type: message/disposition-notification\r\n", "a delivery or disposition report"),
]
KEPT = [
    "Auto-Submitted: no\r\n",
    "Auto-Submitted: No (a person wrote this)\r\n",
    "Return-Path: <bounces@example.org>\r\n",
    "Precedence: first-class\r\n",
    'Content-Type: multipart/mixed; boundary="b"\r\n',
    "List-Id: <dev.example.org>\r\n",
]


@pytest.mark.parametrize(("extra", "reason"), REFUSED)
def test_automatic_bounce_report_and_bulk_mail_is_not_sent_on(extra: str, reason: str) -> None:
    assert send_refusal(msg(extra=extra)) == reason
    server = FakeServer()
    server.append("INBOX", msg(extra=extra))
    run = Run(server, 'rule "f" { when all then forward to "x@example.org", redirect to "y@example.org" }')
    assert run.outcomes() == [("forward", "skipped", reason), ("redirect", "skipped", reason)]
    assert run.sender.sent == []  # type: ignore[attr-defined]
    assert skip_label(reason) in loops.SKIP_LABELS


@pytest.mark.parametrize("extra", KEPT)
def test_personal_mail_is_sent_on(extra: str) -> None:
    assert send_refusal(msg(extra=extra)) is None


def test_a_report_part_anywhere_is_a_report() -> None:
    raw = (
        b'From: postmaster@example.org\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nundeliverable\r\n"
        b"--b\r\ncontent-type:\r\n message/delivery-status\r\n\r\nAction: failed\r\n--b--\r\n"
    )
    assert send_refusal(raw) == "a delivery or disposition report"
    # the word in the body, not at the start of a part's header, is no report
    assert send_refusal(b"Subject: x\r\n\r\nsee the multipart/report spec\r\n") is None


def test_our_loop_header_anywhere_is_skipped_not_failed() -> None:
    class Looping(RecordingSender):
        def send_forward(self, original: bytes, to: str, *, rule: str, idempotency_key: str) -> str:
            raise SmtpActionError("mail loop: the message already carries X-Mailrules-Loop", "loop")

    server = FakeServer()
    server.append("INBOX", msg())
    state = StateStore.open(":memory:")
    run_id = state.begin_run("run", False)
    sender = Looping()
    entries: list[JournalEntry] = []
    Engine(RunOptions(NOW, dt.UTC, run_id), journal=state, on_entry=entries.append).process(
        FakeStore(server, Dialect.named("dovecot"), NOW),
        AccountContext("acct", sender=sender),
        "INBOX",
        rules_of('rule "f" { when all then forward to "x@example.org" }'),
    )
    assert [(e.outcome, e.error) for e in entries] == [
        ("skipped", "sent by this mailrules already (X-Mailrules-Loop)")
    ]
    assert state.pending_intents() == []  # released: nothing left in doubt
    state.close()


# -- the per-address rate limit ----------------------------------------------------------------------


def test_sends_to_one_address_are_limited_per_hour_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    server = FakeServer()
    for i in range(5):
        server.append("INBOX", msg(subject=f"s{i}"))
    guard = LoopGuard(sends=SendLimiter(limit=2, clock=lambda: NOW.timestamp()))
    with caplog.at_level(logging.WARNING, "mailrules.actions"):
        run = Run(
            server,
            'rule "f" { when all then forward to "x@example.org", redirect to "X@example.org" }',
            guard=guard,
        )
    outcomes = [(e.action, e.outcome) for e in run.entries]
    assert outcomes.count(("forward", "ok")) == 2 and ("redirect", "ok") not in outcomes
    limited = [e.error for e in run.entries if e.outcome == "skipped"]
    assert len(limited) == 8 and all(skip_label(e) == "rate_limit" for e in limited)
    assert limited[0] == (
        "rate limit reached: 2 sends to x@example.org in the last hour "
        "([limits] forwards_per_address_per_hour = 2)"
    )
    warned = [r for r in caplog.records if "forwards/redirects to" in r.getMessage()]
    assert len(warned) == 1 and "until 2025-06-01 13:00:00 UTC" in warned[0].getMessage()
    # other addresses have their own count
    assert guard.sends.take("acct", "other@example.org", None) is None


def test_the_rate_limit_survives_a_restart_through_the_state() -> None:
    """The intents of the last hour are read back: a new process does not start from zero."""
    state = StateStore.open(":memory:")
    server = FakeServer()
    for i in range(3):
        server.append("INBOX", msg(subject=f"s{i}"))
    first = Run(
        server,
        'rule "f" { when all then forward to "x@example.org" }',
        guard=LoopGuard(sends=SendLimiter(limit=4)),
        state=state,
    )
    assert [e.outcome for e in first.entries] == ["ok"] * 3
    for i in range(3):
        server.append("INBOX", msg(subject=f"t{i}"))
    restarted = LoopGuard(sends=SendLimiter(limit=4))
    again = Run(server, 'rule "f" { when all then forward to "x@example.org" }', guard=restarted, state=state)
    assert [e.outcome for e in again.entries].count("ok") == 1  # 3 in the state + 1 = the limit
    assert [e.error for e in again.entries].count("already sent (journal)") == 3
    # an hour later (the intents carry the real time they were written) the old sends no longer count
    later = LoopGuard(sends=SendLimiter(limit=4, clock=lambda: time.time() + loops.HOUR + 1))
    assert later.sends.take("acct", "x@example.org", state.sends_since) is None
    state.close()


def test_a_send_that_certainly_failed_is_given_back() -> None:
    class Refused(RecordingSender):
        def send_forward(self, original: bytes, to: str, *, rule: str, idempotency_key: str) -> str:
            raise SmtpActionError("recipient refused", "recipient")

    server = FakeServer()
    server.append("INBOX", msg())
    guard = LoopGuard(sends=SendLimiter(limit=1))
    Run(server, 'rule "f" { when all then forward to "x@example.org" }', guard=guard, sender=Refused())
    assert guard.sends.take("acct", "x@example.org", None) is None  # the failed one did not count


# -- the at-most-once key ----------------------------------------------------------------------------


def test_a_stranger_with_a_predicted_message_id_does_not_suppress_the_real_forward() -> None:
    state = StateStore.open(":memory:")
    rules = 'rule "f" { when all then forward to "boss@example.org" }'
    fake = msg("fake", mid="predicted", received="Received: from evil.example\r\n")
    real = msg("real", mid="predicted", received="Received: from mx.example.org\r\n")
    for raw in (fake, real):
        server = FakeServer()
        server.append("INBOX", raw)
        sender = RecordingSender()
        Run(server, rules, state=state, sender=sender)
        assert [s[2] for s in sender.sent] == [raw]
    state.close()


def test_the_same_message_moved_elsewhere_is_not_sent_again() -> None:
    state = StateStore.open(":memory:")
    rules = 'rule "f" in "INBOX", "Other" { when all then forward to "boss@example.org" }'
    raw = msg("once", mid="m1")
    sent = []
    for mailbox in ("INBOX", "Other"):
        server = FakeServer()
        server.append(mailbox, raw.replace(b"\r\n", b"\n") if mailbox == "Other" else raw)
        sender = RecordingSender()
        Run(server, rules, mailbox, state=state, sender=sender)
        sent += sender.sent
    assert len(sent) == 1  # same header block (line ends aside): the same message
    state.close()


def test_sends_journalled_under_the_old_key_still_count_as_done() -> None:
    state = StateStore.open(":memory:")
    raw = msg("before the upgrade", mid="old-1")
    run_id = state.begin_run("run", False)
    old = message_intent_key("acct", "<old-1@t>", "f", "forward", "boss@example.org")
    entry = JournalEntry(
        run_id, "f", "t.rules:1:1", "acct", "INBOX", 1, 1, "<old-1@t>", "forward", "boss@example.org",
        None, None, None, "ok", None, NOW,
    )  # fmt: skip
    assert state.intent(old, entry)
    state.confirm(old)
    server = FakeServer()
    server.append("INBOX", raw)
    sender = RecordingSender()
    run = Run(server, 'rule "f" { when all then forward to "boss@example.org" }', state=state, sender=sender)
    assert sender.sent == [] and run.outcomes() == [("forward", "skipped", "already sent (journal)")]
    state.close()


def test_header_digest_ignores_line_ends_and_the_body_only() -> None:
    a = b"Subject: x\r\nMessage-ID: <1@t>\r\n\r\nbody one\r\n"
    assert header_digest(a) == header_digest(a.replace(b"\r\n", b"\n"))
    assert header_digest(a) == header_digest(a.replace(b"body one", b"body two"))
    assert header_digest(a) != header_digest(b"Received: x\r\n" + a)
    assert len(header_digest(a)) == 64
