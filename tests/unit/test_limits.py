"""`limit N` over a whole run (mailrules/engine/limits.py): the ledger's decisions and the pre-count."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from mailrules.compile.dialect import Dialect
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.engine.core import Engine
from mailrules.engine.limits import LimitLedger, count_matches, precount
from mailrules.engine.ports import AccountContext, RunOptions
from mailrules.errors import ImapError
from tests.fakes import FakeServer, FakeStore

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
UTC = dt.UTC


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rule_file, diags = parse_text(text, "t.rules")
    assert rule_file is not None and not diags, diags
    return rule_file.rules


def msg(subject: str) -> bytes:
    return f"From: a@example.com\r\nSubject: {subject}\r\nMessage-ID: <{subject}@x>\r\n\r\nbody\r\n".encode()


WIDE = rules_of('rule "wide" in "INBOX", "Lists" limit 3 { when subject starts with "bulk" then flag }')[0]


def test_single_pass_is_judged_on_its_real_matches() -> None:
    ledger = LimitLedger()
    assert ledger.decide(WIDE, "a", "INBOX", 3) is None
    assert ledger.decide(WIDE, "a", "Lists", 1) == 4  # acted 3 + 1 > 3: this pass does nothing
    assert ledger.decide(WIDE, "a", "Other", 0) == 4  # over once, over for the rest of the run


def test_pre_counted_passes_to_come_make_the_first_pass_act_on_none() -> None:
    ledger = LimitLedger(pending={"wide": {("a", "INBOX"): 2, ("a", "Lists"): 2}})
    assert ledger.decide(WIDE, "a", "INBOX", 2) == 4
    assert ledger.decide(WIDE, "a", "Lists", 2) == 4


def test_this_pass_replaces_its_own_estimate() -> None:
    # Earlier rules took one of the two pre-counted INBOX messages: 1 + 2 = 3 is within the limit.
    ledger = LimitLedger(pending={"wide": {("a", "INBOX"): 2, ("a", "Lists"): 2}})
    assert ledger.decide(WIDE, "a", "INBOX", 1) is None
    assert ledger.decide(WIDE, "a", "Lists", 2) is None
    assert ledger.acted == {"wide": 3}


def _server() -> FakeServer:
    server = FakeServer()
    for i in range(2):
        server.append("INBOX", msg(f"bulk {i}"))
        server.append("Lists", msg(f"bulk {i + 2}"))
    server.append("INBOX", msg("other"))
    return server


def test_count_matches_counts_each_rule_alone_and_changes_nothing() -> None:
    server = _server()
    before = server.state()
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    rules = rules_of(
        'rule "wide" limit 9 { when subject starts with "bulk" then delete }\n'
        'rule "re" limit 9 { when subject matches /^b.lk [01]$/ then flag }'
    )
    assert count_matches(store, "INBOX", rules, NOW, UTC) == {"wide": 2, "re": 2}
    assert server.state() == before


def test_precount_then_engine_acts_on_none_in_either_mailbox() -> None:
    server = _server()
    before = server.state()

    @contextmanager
    def open_account(name: str) -> Iterator[FakeStore]:
        yield FakeStore(server, Dialect.named("dovecot"), NOW)

    ledger = LimitLedger()
    precount(["acct"], [WIDE], NOW, UTC, ledger, open_account)
    assert ledger.pending == {"wide": {("acct", "INBOX"): 2, ("acct", "Lists"): 2}}
    engine = Engine(RunOptions(NOW, UTC, "run1"), limits=ledger)
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    reports = [engine.process(store, AccountContext("acct"), mb, [WIDE]) for mb in ("INBOX", "Lists")]
    assert [r.rules[0].limited for r in reports] == [True, True]
    assert server.state() == before


def test_single_pass_rules_are_not_pre_counted() -> None:
    opened: list[str] = []

    @contextmanager
    def open_account(name: str) -> Iterator[FakeStore]:
        opened.append(name)
        yield FakeStore(FakeServer(), Dialect.named("dovecot"), NOW)

    one = rules_of('rule "one" limit 3 { when all then flag }\nrule "free" in "A", "B" { then stop }')
    precount(["acct"], one, NOW, UTC, LimitLedger(), open_account)
    assert opened == []  # no connection: each of these rules makes one pass, or has no limit


def test_an_account_that_cannot_be_counted_is_logged_and_skipped(caplog) -> None:  # type: ignore[no-untyped-def]
    @contextmanager
    def open_account(name: str) -> Iterator[FakeStore]:
        raise ImapError("connection refused", "reconnect")
        yield  # pragma: no cover

    ledger = LimitLedger()
    precount(["acct"], [WIDE], NOW, UTC, ledger, open_account)
    assert ledger.pending == {}
    assert "account acct: matches not counted for `limit`" in caplog.text
