"""What the daemon watches (Gmail's All Mail and Spam only when `watch` names them), the names it
refuses at start and at a reload, and what /readyz says of a watcher that does nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailrules.config import AccountSettings, MetricsSettings, Secret, Settings
from mailrules.daemon import plan
from mailrules.daemon.service import Daemon
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.imap.names import Namespaces
from mailrules.imap.session import ImapSession

GMAIL_USES = {"\\All": "[Gmail]/All Mail", "\\Junk": "[Gmail]/Spam", "\\Trash": "[Gmail]/Trash"}
RULES = (
    'rule "all" in "INBOX", "[Gmail]/All Mail", "[Gmail]/Spam" { when subject contains "x" then flag }\n'
    'rule "nightly" every day at 03:00 { when all then flag }\n'
)


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rule_file, diags = parse_text(text, "t.rules")
    assert rule_file is not None and not diags, diags
    return rule_file.rules


def account(name: str, **kw: object) -> AccountSettings:
    return AccountSettings(name, "127.0.0.1", 143, "none", "u", Secret("p"), **kw)  # type: ignore[arg-type]


def test_gmail_all_mail_and_spam_are_not_watched_unless_named() -> None:
    rules = rules_of(RULES)
    accounts = {"g": account("g"), "h": account("h", watch=("[Gmail]/Spam",))}
    uses = {"g": GMAIL_USES, "h": GMAIL_USES}
    assert plan.watched(rules, accounts, uses) == {"g": ["INBOX"], "h": ["INBOX", "[Gmail]/Spam"]}
    dropped = plan.unwatched(rules, accounts, uses)
    assert [(a, m) for a, m, _ in dropped] == [
        ("g", "[Gmail]/All Mail"),
        ("g", "[Gmail]/Spam"),
        ("h", "[Gmail]/All Mail"),
    ]
    assert "rules would act twice" in dropped[0][2] and "spam" in dropped[1][2]


def test_before_a_connection_or_on_another_server_every_named_mailbox_is_watched() -> None:
    rules = rules_of(RULES)
    accounts = {"g": account("g")}
    everything = ["INBOX", "[Gmail]/All Mail", "[Gmail]/Spam"]
    assert plan.watched(rules, accounts) == {"g": everything}
    assert plan.watched(rules, accounts, {"g": {"\\Junk": "Junk"}}) == {"g": everything}


def test_the_budget_counts_only_what_is_watched() -> None:
    rules = rules_of(RULES)
    accounts = {"g": account("g", max_connections=1)}
    # one connection cannot watch and also run the schedule
    assert plan.budget_problems(rules, accounts, plan.watched(rules, accounts, {"g": GMAIL_USES})) == [
        "account g: max_connections = 1 is too small: watching needs 1 connection and scheduled rules 1 more"
    ]
    assert plan.budget_problems(rules[:1], accounts, {"g": ["INBOX"]}) == []
    assert plan.has_scheduled(rules, "g") and not plan.has_scheduled(rules[:1], "g")


# -- the daemon itself (no server: its state in tmp_path, no HTTP) -------------------------------------------


class Stub:
    """A watcher as Daemon.ready() sees it."""

    def __init__(self, healthy: bool, problem: str | None = None) -> None:
        self.healthy, self.problem = healthy, problem


def unreachable(a: AccountSettings) -> ImapSession:
    from mailrules.errors import ImapError

    raise ImapError(f"{a.name}: connection refused", "reconnect")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "10.rules").write_text('rule "r" in "v1.2" every day at 03:00 { when all then flag }\n')
    settings = Settings(
        rules=rules,
        state=tmp_path / "state.db",
        config_path=tmp_path / "mailrules.toml",
        timezone=dt.UTC,  # type: ignore[arg-type]
        metrics=MetricsSettings(listen=""),
        accounts={"a": account("a")},
    )
    d = Daemon(settings, connect=unreachable)
    yield d
    d.schedule.shutdown(wait=False)
    d.state.close()


def test_ready_says_why_a_watcher_does_nothing(daemon: Daemon) -> None:
    assert daemon.ready() == (False, "no rules loaded")
    assert daemon.load_rules()
    daemon._watchers = {("a", "INBOX"): Stub(True), ("a", "Lists"): Stub(False)}  # type: ignore[dict-item]
    assert daemon.ready() == (False, "not connected: a/Lists")
    full = "state /s/state.db: cannot record the journal: database or disk is full"
    daemon._watchers[("a", "Spam")] = Stub(False, full)  # type: ignore[assignment]
    assert daemon.ready() == (False, f"not connected: a/Lists; a/Spam: {full}")
    daemon._watchers = {("a", "INBOX"): Stub(False, "line\nbreak")}  # type: ignore[dict-item]
    assert daemon.ready() == (False, "a/INBOX: line\\nbreak")  # one line, always
    daemon._watchers = {("a", "INBOX"): Stub(True)}  # type: ignore[dict-item]
    assert daemon.ready() == (True, "ok")


def test_names_are_checked_against_servers_reached_at_start(daemon: Daemon) -> None:
    daemon.check_servers(daemon.rules)  # unreachable: nothing known, nothing refused
    assert daemon._namespaces == {} and daemon.load_rules()
    daemon._namespaces["a"] = Namespaces("INBOX.", ".")
    assert not daemon.load_rules()  # a reload against a server known to refuse "v1.2"
    assert daemon._names_refused and daemon.rules  # the running rules stay


def test_the_daemon_refuses_to_start_on_a_name_the_server_cannot_have(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    daemon.check_servers = lambda rules: daemon._namespaces.update(a=Namespaces("INBOX.", "."))  # type: ignore[method-assign]
    assert daemon.run(install_signals=False) == 78
    assert "mailbox names the server cannot have; not starting" in caplog.text
    assert "10.rules:1:" in caplog.text and "'v1.2' cannot exist on this server" in caplog.text
