"""The walk `mailrules run` and the daemon's scheduled firings share (mailrules/accounts.py): accounts
and mailboxes in order, the error policy per mailbox, the server's check of mailbox names, and the
hook an expired login reaches."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest

from mailrules.accounts import (
    Account,
    Connection,
    configured_names,
    count_limits,
    mailboxes_of,
    render_problem,
    rules_for,
    walk,
)
from mailrules.compile.dialect import Dialect
from mailrules.config import AccountSettings, Secret
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.engine.core import Engine
from mailrules.engine.limits import LimitLedger
from mailrules.engine.loops import LoopGuard
from mailrules.engine.ports import RunOptions
from mailrules.errors import ImapError, StateError
from mailrules.imap.errors import TokenExpired
from mailrules.imap.names import Namespaces
from mailrules.imap.session import ImapSession
from tests.fakes import FakeServer, FakeStore, RecordingSender

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
CYRUS = Namespaces("INBOX.", ".", ("user.",))


def settings(name: str = "a", **kw: Any) -> AccountSettings:
    return AccountSettings(name, "127.0.0.1", 143, "none", "u", Secret("p"), **kw)


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rule_file, diags = parse_text(text, "t.rules")
    assert rule_file is not None and not diags, diags
    return rule_file.rules


def no_connection(account: AccountSettings) -> ImapSession:
    raise AssertionError("the tests open stores of their own")


class Recording(Account):
    """An Account that keeps what `on_auth_expired` was told."""

    def __init__(self, s: AccountSettings) -> None:
        super().__init__(s, no_connection)
        self.expired: list[ImapError] = []

    def on_auth_expired(self, error: ImapError) -> None:
        self.expired.append(error)


class FailingStore(FakeStore):
    """SELECT of a mailbox in `fail` raises what it maps to."""

    def __init__(self, server: FakeServer, fail: dict[str, BaseException]) -> None:
        super().__init__(server, Dialect.named("dovecot"), NOW)
        self.fail = fail

    def select(self, mailbox: str) -> int:
        if mailbox in self.fail:
            raise self.fail[mailbox]
        return int(super().select(mailbox))


class Servers:
    """A fake server per account and the opener the walk is given."""

    def __init__(self, *names: str, namespaces: Namespaces | None = None) -> None:
        self.servers = {n: FakeServer() for n in names}
        self.fail: dict[str, dict[str, BaseException]] = {n: {} for n in names}
        self.refuse_connect: dict[str, ImapError] = {}
        self.namespaces = namespaces or Namespaces()
        self.opened: list[str] = []

    def add(self, account: str, mailbox: str, subject: str) -> None:
        self.servers[account].append(
            mailbox, f"Subject: {subject}\r\nMessage-ID: <{subject}@x>\r\n\r\nb\r\n".encode()
        )

    def boxes(self, account: str) -> dict[str, int]:
        return {n: len(m.messages) for n, m in self.servers[account].mailboxes.items()}

    @contextmanager
    def open(self, account: Account, prefetch: bool) -> Iterator[Connection]:
        if account.name in self.refuse_connect:
            raise self.refuse_connect[account.name]
        self.opened.append(account.name)
        yield Connection(FailingStore(self.servers[account.name], self.fail[account.name]), self.namespaces)


def engine() -> Engine:
    return Engine(RunOptions(NOW, dt.UTC, "r"))


RULES = rules_of(
    'rule "lists" in "INBOX", "Lists" { when subject contains "list" then move to "Filed" }\n'
    'rule "b only" for account "b" { when subject contains "b" then flag }\n'
)


def test_each_account_each_mailbox_in_order_of_first_appearance() -> None:
    s = Servers("a", "b")
    for account in ("a", "b"):
        s.add(account, "INBOX", "list one")
        s.add(account, "Lists", "list two")
    done = walk([Account(settings("a")), Account(settings("b"))], RULES, engine, open_account=s.open)
    assert [(r.account, r.mailbox) for r in done.reports] == [
        ("a", "INBOX"),
        ("a", "Lists"),
        ("b", "INBOX"),
        ("b", "Lists"),
    ]
    assert done.errors == [] and done.failed_rules == set()
    assert s.boxes("a") == {"INBOX": 0, "Lists": 0, "Filed": 2}


def test_an_account_without_rules_is_not_even_connected() -> None:
    s = Servers("a", "c")
    only_b = rules_of('rule "r" for account "b" { when all then flag }')
    done = walk([Account(settings("a")), Account(settings("c"))], only_b, engine, open_account=s.open)
    assert s.opened == [] and done.reports == []


def test_a_failed_mailbox_is_an_error_and_the_next_one_runs() -> None:
    s = Servers("a")
    s.add("a", "Lists", "list two")
    s.fail["a"]["INBOX"] = ImapError("SELECT failed: NO [NONEXISTENT] no such mailbox", "permanent")
    done = walk([Account(settings("a"))], RULES, engine, open_account=s.open)
    assert done.errors == ["account a mailbox 'INBOX': SELECT failed: NO [NONEXISTENT] no such mailbox"]
    assert [r.mailbox for r in done.reports] == ["Lists"] and s.boxes("a")["Filed"] == 1
    assert done.failed_rules == {"lists"}


def test_a_lost_connection_ends_the_account_not_the_walk() -> None:
    s = Servers("a", "b")
    s.add("a", "Lists", "list a")
    s.add("b", "INBOX", "list b")
    s.fail["a"]["INBOX"] = ImapError("connection reset", "reconnect")
    a, b = Recording(settings("a")), Recording(settings("b"))
    done = walk([a, b], RULES, engine, open_account=s.open)
    assert done.errors == ["account a mailbox 'INBOX': connection reset"]
    assert s.boxes("a")["Lists"] == 1  # not tried on a connection that is gone
    assert [(r.account, r.mailbox) for r in done.reports] == [("b", "INBOX"), ("b", "Lists")]
    assert a.expired == []  # a reset is no reason to renew credentials


def test_an_expired_token_reaches_the_account_hook() -> None:
    s = Servers("a")
    s.fail["a"]["INBOX"] = TokenExpired("BYE Session invalidated - AccessTokenExpired")
    a = Recording(settings("a"))
    done = walk([a], RULES, engine, open_account=s.open)
    assert len(done.errors) == 1 and [type(e) for e in a.expired] == [TokenExpired]
    assert done.reports == []  # the session ended: Lists waits for the next run


def test_a_refused_login_is_the_accounts_error_and_reaches_the_hook() -> None:
    s = Servers("a", "b")
    s.add("b", "INBOX", "list b")
    s.refuse_connect["a"] = ImapError("LOGIN failed: NO [AUTHENTICATIONFAILED]", "auth")
    a, b = Recording(settings("a")), Recording(settings("b"))
    done = walk([a, b], RULES, engine, open_account=s.open)
    assert done.errors == ["account a: LOGIN failed: NO [AUTHENTICATIONFAILED]"]
    assert done.failed_rules == {"lists"} and len(a.expired) == 1
    assert s.boxes("b")["Filed"] == 1


def test_a_bug_skips_the_mailbox_only(caplog: pytest.LogCaptureFixture) -> None:
    s = Servers("a")
    s.add("a", "Lists", "list two")
    s.fail["a"]["INBOX"] = ZeroDivisionError("oops")
    done = walk([Account(settings("a"))], RULES, engine, open_account=s.open)
    assert done.errors == ["account a mailbox 'INBOX': internal error (see log)"]
    assert "internal error; mailbox skipped" in caplog.text and s.boxes("a")["Filed"] == 1


def test_a_state_error_stops_the_walk() -> None:
    s = Servers("a", "b")
    s.fail["a"]["INBOX"] = StateError("state /x: cannot record: database or disk is full")
    with pytest.raises(StateError):
        walk([Account(settings("a")), Account(settings("b"))], RULES, engine, open_account=s.open)
    assert s.opened == ["a"]


def test_each_mailbox_runs_under_its_lock() -> None:
    s = Servers("a")
    taken: list[tuple[str, str]] = []

    def lock_for(account: str, mailbox: str) -> threading.Lock:
        taken.append((account, mailbox))
        return threading.Lock()

    walk([Account(settings("a"))], RULES, engine, open_account=s.open, lock_for=lock_for)
    assert taken == [("a", "INBOX"), ("a", "Lists")]


# -- names the server cannot have ------------------------------------------------------------------------


def test_a_name_the_server_cannot_have_skips_the_account_before_anything_moves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Servers("a", "b", namespaces=CYRUS)
    for account in ("a", "b"):
        s.add(account, "INBOX", "list one")
    text = 'rule "v" for account "a" {\n    when all\n    then move to "v1.2"\n}\n'
    rules = rules_of(text) + rules_of('rule "ok" { when subject contains "list" then flag }')
    done = walk(
        [Account(settings("a", trash="Deleted.Items")), Account(settings("b"))],
        rules,
        engine,
        open_account=s.open,
        sources={"t.rules": text},
    )
    assert [r.account for r in done.reports] == ["b"]
    assert len(done.errors) == 2 and done.failed_rules == {"v", "ok"}
    assert done.errors[0].startswith("account a: t.rules:3:")
    assert "'v1.2' cannot exist on this server" in done.errors[0]
    assert done.errors[1].startswith("account a: accounts.a.trash: mailbox 'Deleted.Items' cannot exist")
    assert s.boxes("a") == {"INBOX": 1}  # untouched, not even flagged
    assert '    then move to "v1.2"\n' in caplog.text  # the rule's line under its error, with a caret


def test_names_that_map_are_no_problem_on_cyrus() -> None:
    s = Servers("a", namespaces=CYRUS)
    s.add("a", "INBOX", "list one")
    rules = rules_of('rule "r" { when all then move to "Lists/python" }')
    done = walk([Account(settings("a", trash="INBOX.Trash"))], rules, engine, open_account=s.open)
    assert done.errors == [] and len(done.reports) == 1


def test_configured_names_and_their_settings() -> None:
    acct = settings("w", trash="Bin", archive="Old", watch=("Lists", "Later"))
    assert configured_names(acct) == [
        ("accounts.w.trash", "Bin"),
        ("accounts.w.archive", "Old"),
        ("accounts.w.watch", "Lists"),
        ("accounts.w.watch", "Later"),
    ]
    assert configured_names(settings("w")) == []


def test_render_problem_in_the_rule_errors_format() -> None:
    text = 'rule "v" { when all then move to "v1.2" }\n'
    rules = rules_of(text)
    account = Account(settings("a", archive="x.y"), no_connection)
    problems = account.name_problems(CYRUS, rules)
    assert len(problems) == 2
    shown = render_problem(problems[0], "a", {"t.rules": text})
    first, line, caret = shown.splitlines()
    assert first.startswith("t.rules:1:") and ": error: account a: mailbox 'v1.2' cannot exist" in first
    assert line.strip() == text.strip() and caret.strip().startswith("^")
    assert render_problem(problems[1], "a").startswith("accounts.a.archive: error: account a: mailbox 'x.y'")


# -- rules, mailboxes, context ---------------------------------------------------------------------------


def test_rules_and_mailboxes_per_account() -> None:
    assert [r.name for r in rules_for(RULES, "a")] == ["lists"]
    assert [r.name for r in rules_for(RULES, "b")] == ["lists", "b only"]
    assert mailboxes_of(RULES, "a") == ["INBOX", "Lists"]
    assert mailboxes_of(rules_of('rule "x" for account "b" in "Z" { when all then flag }'), "a") == []


def test_the_account_context_builder() -> None:
    from mailrules.config import SmtpSettings

    smtp = SmtpSettings("127.0.0.1", 25, "none", None, None, "me@example.org", allow_insecure=True)
    account = Account(settings("a", archive="Old", trash="Bin", create_mailboxes=False, smtp=smtp))
    guard = LoopGuard()
    ctx = account.context(guard)
    assert (ctx.name, ctx.archive, ctx.trash, ctx.create_mailboxes) == ("a", "Old", "Bin", False)
    assert ctx.sender is account.sender and ctx.sender is not None and ctx.guard is guard
    assert account.context().sender is ctx.sender  # one sender for every thread of the account
    assert Account(settings("b")).context().sender is None


def test_a_password_account_renews_nothing_and_a_hook_that_fails_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    Account(settings("a"), no_connection).session_ended(TokenExpired("BYE session expired"))

    class Broken(Account):
        def on_auth_expired(self, error: ImapError) -> None:
            raise RuntimeError("token endpoint on fire")

    Broken(settings("a"), no_connection).session_ended(ImapError("NO [AUTHENTICATIONFAILED]", "auth"))
    assert "account a: renewing the credentials failed" in caplog.text


def test_limits_are_counted_on_the_walks_connections() -> None:
    s = Servers("a")
    for box in ("INBOX", "Lists"):
        s.add("a", box, "list x")
    rules = rules_of('rule "l" in "INBOX", "Lists" limit 1 { when subject contains "list" then flag }')
    ledger = LimitLedger()
    count_limits([Account(settings("a"))], rules, NOW, dt.UTC, ledger, s.open)
    assert ledger.pending == {"l": {("a", "INBOX"): 1, ("a", "Lists"): 1}}
    done = walk(
        [Account(settings("a"))],
        rules,
        lambda: Engine(RunOptions(NOW, dt.UTC, "r"), limits=ledger),
        open_account=s.open,
    )
    assert all(rr.limited for r in done.reports for rr in r.rules)


def test_a_sender_from_the_fakes_still_fits_the_context() -> None:
    # The engine's AccountContext takes any Sender: what the walk builds is one of them.
    ctx = dataclasses.replace(Account(settings("a")).context(), sender=RecordingSender())
    assert ctx.sender is not None


class FakeSession:
    """What Account.open and ImapStore read of a session, and whether it was logged out."""

    capabilities = frozenset({"IMAP4REV1"})
    names = None
    namespaces = Namespaces()

    def __init__(self, account: str) -> None:
        self.account = account
        self.pacing: object = None
        self.closed = False

    def logout(self) -> None:
        self.closed = True


def test_the_search_ahead_connection_is_opened_once_when_a_pass_asks_and_logged_out_after() -> None:
    made: list[FakeSession] = []
    refuse_second = False

    def connect(s: AccountSettings) -> ImapSession:
        if refuse_second and made:
            raise ImapError("too many connections", "retry")
        made.append(FakeSession(s.name))
        return cast(ImapSession, made[-1])

    with Account(settings(max_connections=2), connect).open(prefetch=True) as conn:
        assert len(made) == 1 and conn.prefetch is not None  # not before a pass asks for it
        first = conn.prefetch()
        assert conn.prefetch() is first and len(made) == 2  # the account's later passes share it
    assert [s.closed for s in made] == [True, True]

    made.clear()
    with Account(settings(max_connections=1), connect).open(prefetch=True) as conn:
        assert conn.prefetch is None  # max_connections = 1: never a second connection
    with Account(settings(max_connections=2), connect).open(prefetch=False) as conn:
        assert conn.prefetch is None

    made.clear()
    refuse_second = True
    with Account(settings(max_connections=2), connect).open(prefetch=True) as conn:
        assert conn.prefetch is not None
        for _ in range(2):
            with pytest.raises(ImapError):
                conn.prefetch()
        assert len(made) == 1  # a refused login is not tried again by every pass
    assert made[0].closed
