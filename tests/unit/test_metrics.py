"""Metrics as an engine observer: every series present after init, counters fed by a real pass."""

from __future__ import annotations

import datetime as dt
import logging
import platform
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailrules import __version__
from mailrules.compile.dialect import Dialect
from mailrules.daemon.labels import (
    ACTIONS,
    IMAP_COMMANDS,
    MESSAGE_OUTCOMES,
    OTHER,
    action_label,
    command_label,
)
from mailrules.daemon.metrics import Metrics
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, MailboxReport, RuleReport, RunOptions
from mailrules.state.models import JournalEntry
from tests.fakes import FakeServer, FakeStore, RecordingSender

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)

EXPECTED = {
    "mailrules_messages_seen_total": "counter",
    "mailrules_messages_processed_total": "counter",
    "mailrules_rule_matches_total": "counter",
    "mailrules_actions_total": "counter",
    "mailrules_action_duration_seconds": "histogram",
    "mailrules_rule_duration_seconds": "histogram",
    "mailrules_imap_command_duration_seconds": "histogram",
    "mailrules_imap_command_errors_total": "counter",
    "mailrules_imap_throttled_total": "counter",
    "mailrules_connect_duration_seconds": "histogram",
    "mailrules_arrival_latency_seconds": "histogram",
    "mailrules_watcher_up": "gauge",
    "mailrules_reconnects_total": "counter",
    "mailrules_watcher_stalls_total": "counter",
    "mailrules_search_ahead_total": "counter",
    "mailrules_flag_change_looks_total": "counter",
    "mailrules_flag_changes_total": "counter",
    "mailrules_flag_changes_own_total": "counter",
    "mailrules_flag_change_refused": "gauge",
    "mailrules_last_sync_timestamp_seconds": "gauge",
    "mailrules_scheduled_runs_total": "counter",
    "mailrules_scheduled_run_duration_seconds": "histogram",
    "mailrules_scheduled_last_run_timestamp_seconds": "gauge",
    "mailrules_rules_loaded": "gauge",
    "mailrules_config_reloads_total": "counter",
    "mailrules_config_last_reload_success": "gauge",
    "mailrules_config_last_reload_timestamp_seconds": "gauge",
    "mailrules_malformed_messages_total": "counter",
    "mailrules_http_connections_dropped_total": "counter",
    "mailrules_build_info": "gauge",
    "mailrules_state_errors_total": "counter",
    "mailrules_actions_skipped_total": "counter",
    "mailrules_mailbox_creations_refused_total": "counter",
    "mailrules_messages_skipped_total": "counter",
    "mailrules_message_text_cut_total": "counter",
    "mailrules_oauth_token_expiry_timestamp_seconds": "gauge",
    "mailrules_oauth_refreshes_total": "counter",
    "mailrules_auth_failures_total": "counter",
}


def configured() -> Metrics:
    m = Metrics()
    m.init({"work": ["INBOX", "Lists"], "home": ["INBOX"]}, ["gh", "lists"])
    return m


def value(m: Metrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    assert v is not None, f"no sample {name}{labels}"
    return v


def families(m: Metrics) -> dict[str, tuple[str, list[dict[str, str]]]]:
    out = {}
    for fam in text_string_to_metric_families(m.exposition().decode("utf-8")):
        out[fam.name + ("_total" if fam.type == "counter" else "")] = (
            fam.type,
            [s.labels for s in fam.samples],
        )
    return out


def entry(
    rule: str = "gh", action: str = "move", outcome: str = "ok", uid: int = 1, **kw: str
) -> JournalEntry:
    fields: dict[str, object] = {
        "run_id": "r",
        "rule": rule,
        "rule_span": "t.rules:1",
        "account": "work",
        "mailbox": "INBOX",
        "uidvalidity": 1,
        "uid": uid,
        "message_id": "<x@y>",
        "action": action,
        "detail": "",
        "destination": None,
        "new_uidvalidity": None,
        "new_uid": None,
        "outcome": outcome,
        "error": None,
        "at": NOW,
    }
    fields.update(kw)
    return JournalEntry(**fields)  # type: ignore[arg-type]


def test_every_metric_is_present_with_its_type_after_init() -> None:
    fams = families(configured())
    assert {n: t for n, (t, _) in fams.items() if n in EXPECTED} == EXPECTED
    assert all(n.startswith("mailrules_") for n in fams)
    assert set(fams) == set(EXPECTED)  # nothing else, and no `_created` series


def test_label_children_exist_at_zero_before_anything_happens() -> None:
    m = configured()
    for account in ("work", "home"):
        assert value(m, "mailrules_messages_seen_total", account=account) == 0
        for outcome in MESSAGE_OUTCOMES:
            assert value(m, "mailrules_messages_processed_total", account=account, outcome=outcome) == 0
        for command in IMAP_COMMANDS:
            count = "mailrules_imap_command_duration_seconds_count"
            assert value(m, count, account=account, command=command) == 0
    for action in ACTIONS:
        for outcome in ("ok", "failed", "skipped", "dry_run"):
            assert value(m, "mailrules_actions_total", action=action, outcome=outcome) == 0
    assert value(m, "mailrules_watcher_up", account="work", mailbox="Lists") == 0
    home_lists = {"account": "home", "mailbox": "Lists"}
    assert m.registry.get_sample_value("mailrules_watcher_up", home_lists) is None
    assert value(m, "mailrules_rule_matches_total", rule="lists") == 0
    assert value(m, "mailrules_scheduled_runs_total", rule="gh", outcome="ok") == 0
    assert value(m, "mailrules_rules_loaded") == 2
    assert value(m, "mailrules_config_reloads_total", outcome="failure") == 0
    python = platform.python_version()
    assert value(m, "mailrules_build_info", version=__version__, python=python) == 1


def test_fresh_registry_per_instance() -> None:
    a, b = configured(), configured()
    a.entry(entry())
    assert value(a, "mailrules_actions_total", action="move", outcome="ok") == 1
    assert value(b, "mailrules_actions_total", action="move", outcome="ok") == 0


def test_labels_of_actions_and_commands_come_from_fixed_sets() -> None:
    assert action_label("delete permanently") == "delete_permanently"
    assert action_label("mark read") == "mark_read"
    assert action_label("undo move") == OTHER
    assert command_label("UID FETCH") == "FETCH"
    assert command_label("EXAMINE") == "SELECT"
    assert command_label("AUTHENTICATE") == "LOGIN"
    assert command_label("UID EXPUNGE") == "EXPUNGE"
    assert command_label("X-GM-WHATEVER") == "OTHER"


def test_dry_run_outcome_is_spelled_with_an_underscore() -> None:
    m = configured()
    m.entry(entry(action="delete permanently", outcome="dry-run"))
    assert value(m, "mailrules_actions_total", action="delete_permanently", outcome="dry_run") == 1


def test_values_outside_the_configuration_become_other(caplog: pytest.LogCaptureFixture) -> None:
    m = configured()
    with caplog.at_level(logging.WARNING, logger="mailrules.daemon.metrics"):
        m.rule_done(RuleReport("not configured", "work", "INBOX", matched=3), 0.01)
        m.rule_done(RuleReport("not configured", "work", "INBOX", matched=1), 0.01)
        m.watcher_up("work", "Server-Made Folder", True)
        m.imap_command("stranger", "NOOP", 0.001, True)
    assert value(m, "mailrules_rule_matches_total", rule=OTHER) == 4
    assert value(m, "mailrules_watcher_up", account="work", mailbox=OTHER) == 1
    assert value(m, "mailrules_imap_command_duration_seconds_count", account=OTHER, command="NOOP") == 1
    warnings = [r for r in caplog.records if "not in the configuration" in r.getMessage()]
    assert len(warnings) == 3  # once per value, not once per call
    labels = {v for _, samples in families(m).values() for s in samples for v in s.values()}
    assert "not configured" not in labels and "stranger" not in labels


def test_reinit_after_a_reload_adds_new_names() -> None:
    m = configured()
    m.init({"work": ["INBOX", "Lists", "Receipts"]}, ["gh", "lists", "receipts"])
    m.rule_done(RuleReport("receipts", "work", "Receipts", matched=2), 0.01)
    assert value(m, "mailrules_rule_matches_total", rule="receipts") == 2
    assert value(m, "mailrules_rule_matches_total", rule="gh") == 0  # kept
    assert value(m, "mailrules_last_sync_timestamp_seconds", account="work", mailbox="Receipts") == 0
    assert value(m, "mailrules_rules_loaded") == 3


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rf, diags = parse_text(text, "t.rules")
    assert rf is not None and not [d for d in diags if d.severity == "error"], diags
    return rf.rules


def msg(frm: str, subject: str) -> bytes:
    return (
        f"From: {frm}\r\nTo: me@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{abs(hash((frm, subject)))}@t>\r\n"
        "Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n\r\nbody\r\n"
    ).encode()


def test_a_real_pass_moves_the_counters() -> None:
    server = FakeServer()
    server.append("INBOX", msg("notifications@github.com", "PR 1"))
    server.append("INBOX", msg("notifications@github.com", "PR 2"), ["\\Seen"])
    server.append("INBOX", msg("mum@family.example", "lunch"))
    rules = rules_of(
        'rule "gh" { when from contains "notifications@github.com" then mark read move to "GitHub" }\n'
        'rule "lists" { when subject contains "nothing like this" then archive }'
    )
    m = Metrics()
    m.init({"work": ["INBOX"]}, [r.name for r in rules])
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    engine = Engine(RunOptions(NOW, dt.UTC, "run1"), observer=m)
    engine.process(store, AccountContext("work", sender=RecordingSender()), "INBOX", rules)

    assert value(m, "mailrules_messages_seen_total", account="work") == 3
    assert value(m, "mailrules_messages_processed_total", account="work", outcome="matched") == 2
    assert value(m, "mailrules_messages_processed_total", account="work", outcome="unmatched") == 1
    assert value(m, "mailrules_messages_processed_total", account="work", outcome="failed") == 0
    assert value(m, "mailrules_rule_matches_total", rule="gh") == 2
    assert value(m, "mailrules_rule_matches_total", rule="lists") == 0
    assert value(m, "mailrules_actions_total", action="move", outcome="ok") == 2
    assert value(m, "mailrules_actions_total", action="mark_read", outcome="ok") == 1
    assert value(m, "mailrules_actions_total", action="mark_read", outcome="skipped") == 1  # already read
    assert value(m, "mailrules_rule_duration_seconds_count", rule="gh") == 1
    assert value(m, "mailrules_rule_duration_seconds_count", rule="lists") == 1
    text = m.exposition().decode()
    assert "github" not in text.lower() and "family" not in text  # nothing from the mail


def test_failed_actions_and_skipped_messages_are_counted_per_message() -> None:
    m = configured()
    m.entry(entry(uid=1, action="mark read", outcome="ok"))
    m.entry(entry(uid=1, action="move", outcome="failed"))
    m.entry(entry(uid=2, action="move", outcome="ok"))
    m.mailbox_done(MailboxReport("work", "INBOX", 1, examined=5, last_uid=5, skipped_messages=1), 0.1)
    assert value(m, "mailrules_messages_processed_total", account="work", outcome="failed") == 1
    assert value(m, "mailrules_messages_processed_total", account="work", outcome="matched") == 1
    assert value(m, "mailrules_messages_processed_total", account="work", outcome="skipped") == 1
    assert value(m, "mailrules_messages_processed_total", account="work", outcome="unmatched") == 2
    assert value(m, "mailrules_malformed_messages_total", account="work") == 1
    # the next pass starts from nothing
    m.mailbox_done(MailboxReport("work", "INBOX", 1, examined=1, last_uid=6), 0.1)
    assert value(m, "mailrules_messages_processed_total", account="work", outcome="unmatched") == 3


def test_action_group_time_is_the_imap_time_of_its_commands() -> None:
    m = configured()
    m.imap_command("work", "UID FETCH", 0.5, True)  # not an action command: not counted
    m.imap_command("work", "UID STORE", 0.25, True)
    m.entry(entry(uid=1, action="mark read"))
    m.entry(entry(uid=2, action="mark read"))  # same group: no second observation
    m.imap_command("work", "UID COPY", 0.125, True)
    m.imap_command("work", "UID STORE", 0.125, True)
    m.imap_command("work", "UID EXPUNGE", 0.25, False)
    m.entry(entry(uid=1, action="move", outcome="failed"))
    assert value(m, "mailrules_action_duration_seconds_count", action="mark_read") == 1
    assert value(m, "mailrules_action_duration_seconds_sum", action="mark_read") == 0.25
    assert value(m, "mailrules_action_duration_seconds_sum", action="move") == 0.5
    assert value(m, "mailrules_imap_command_errors_total", account="work", command="EXPUNGE") == 1
    assert value(m, "mailrules_imap_command_duration_seconds_count", account="work", command="FETCH") == 1


def test_daemon_hooks() -> None:
    m = configured()
    m.connected("work", 0.3)
    m.reconnect("work")
    m.watcher_up("work", "INBOX", True)
    m.watcher_up("home", "INBOX", True)
    m.watcher_up("home", "INBOX", False)
    m.synced("work", "INBOX", when=1_700_000_000.0)
    m.synced("home", "INBOX")
    m.arrival("work", 0.7)
    m.scheduled_run("lists", 1.5, "ok")
    m.scheduled_run("lists", 0.0, "skipped")
    m.scheduled_run("lists", 0.0, "exploded")
    m.reload(False)
    assert value(m, "mailrules_connect_duration_seconds_count", account="work") == 1
    assert value(m, "mailrules_reconnects_total", account="work") == 1
    assert value(m, "mailrules_watcher_up", account="work", mailbox="INBOX") == 1
    assert value(m, "mailrules_watcher_up", account="home", mailbox="INBOX") == 0
    assert value(m, "mailrules_last_sync_timestamp_seconds", account="work", mailbox="INBOX") == 1_700_000_000
    assert value(m, "mailrules_last_sync_timestamp_seconds", account="home", mailbox="INBOX") > 1_700_000_000
    assert value(m, "mailrules_arrival_latency_seconds_bucket", account="work", le="1.0") == 1
    assert value(m, "mailrules_arrival_latency_seconds_bucket", account="work", le="0.05") == 0
    assert value(m, "mailrules_scheduled_runs_total", rule="lists", outcome="ok") == 1
    assert value(m, "mailrules_scheduled_runs_total", rule="lists", outcome="skipped") == 1
    assert value(m, "mailrules_scheduled_runs_total", rule="lists", outcome=OTHER) == 1
    assert value(m, "mailrules_scheduled_run_duration_seconds_count", rule="lists") == 3
    assert value(m, "mailrules_config_reloads_total", outcome="failure") == 1
    assert value(m, "mailrules_config_last_reload_success") == 0
    assert value(m, "mailrules_config_last_reload_timestamp_seconds") > 0


def test_stalls_are_counted_per_configured_account() -> None:
    m = configured()
    assert value(m, "mailrules_watcher_stalls_total", account="home") == 0  # created by init()
    m.stalls.stalled("work")
    m.stalls.stalled("work")
    m.stalls.stalled("unknown")  # not from the configuration: counted as `other`
    assert value(m, "mailrules_watcher_stalls_total", account="work") == 2
    assert value(m, "mailrules_watcher_stalls_total", account="home") == 0
    assert value(m, "mailrules_watcher_stalls_total", account=OTHER) == 1


def test_flag_changes_are_counted_per_configured_account() -> None:
    m = configured()
    assert value(m, "mailrules_flag_change_refused", account="home") == 0  # created by init()
    m.flags.looked("work")
    m.flags.found("work", 3, 2)
    m.flags.found("unknown", 1, 0)  # not from the configuration: counted as `other`
    assert value(m, "mailrules_flag_change_looks_total", account="work") == 1
    assert value(m, "mailrules_flag_changes_total", account="work") == 3
    assert value(m, "mailrules_flag_changes_own_total", account="work") == 2
    assert value(m, "mailrules_flag_changes_total", account=OTHER) == 1
    m.flags.refused("work", ("w1", "INBOX"), True)
    m.flags.refused("work", ("w2", "Lists"), True)
    m.flags.refused("work", ("w1", "INBOX"), False)
    assert value(m, "mailrules_flag_change_refused", account="work") == 1  # Lists still refused
    m.flags.refused("work", ("w2", "Lists"), False)
    assert value(m, "mailrules_flag_change_refused", account="work") == 0
    m.reload(True)
    m.rules_loaded(7)
    assert value(m, "mailrules_config_last_reload_success") == 1
    assert value(m, "mailrules_rules_loaded") == 7


def test_passes_that_searched_ahead_are_counted_per_configured_account() -> None:
    rules = rules_of(
        'rule "gh" { when from contains "u0@" then move to "A" }\n'
        'rule "lists" { when subject contains "s" then flag }'
    )
    m = configured()
    assert value(m, "mailrules_search_ahead_total", account="home") == 0  # created by init()

    def four_messages(search_ahead_min: int) -> None:
        server = FakeServer()
        for i in range(4):
            server.append("INBOX", msg(f"u{i}@example.org", f"s{i}"))
        ahead = FakeStore(server, Dialect.named("dovecot"), NOW)
        engine = Engine(RunOptions(NOW, dt.UTC, "r"), observer=m, search_ahead_min=search_ahead_min)
        store = FakeStore(server, Dialect.named("dovecot"), NOW)
        engine.process(store, AccountContext("work"), "INBOX", rules, prefetch=lambda: ahead)

    four_messages(5)  # under the size: nothing searched ahead
    assert value(m, "mailrules_search_ahead_total", account="work") == 0
    four_messages(4)
    assert value(m, "mailrules_search_ahead_total", account="work") == 1
    assert value(m, "mailrules_search_ahead_total", account="home") == 0


def test_arrival_buckets_span_50ms_to_5min() -> None:
    m = configured()
    les = {
        s.labels["le"]
        for fam in m.registry.collect()
        for s in fam.samples
        if s.name == "mailrules_arrival_latency_seconds_bucket" and s.labels["account"] == "work"
    }
    finite = sorted(float(x) for x in les if x != "+Inf")
    assert finite[0] == 0.05 and finite[-1] == 300


class FakeSession:
    on_command: Callable[[str, float, bool], None] | None = None
    on_throttle: Callable[[str, float], None] | None = None

    def __init__(self) -> None:
        self.on_command = None
        self.on_throttle = None


class Acct:
    name = "work"


def test_instrument_times_connect_and_hooks_commands() -> None:
    m = configured()
    connect = m.instrument(lambda account: FakeSession())
    session = connect(Acct())
    assert session.on_command is not None
    session.on_command("UID SEARCH", 0.02, True)
    assert value(m, "mailrules_connect_duration_seconds_count", account="work") == 1
    assert value(m, "mailrules_imap_command_duration_seconds_count", account="work", command="SEARCH") == 1
    assert value(m, "mailrules_imap_throttled_total", account="work") == 0  # a child from init()
    assert session.on_throttle is not None
    session.on_throttle("UID MOVE", 60.0)
    assert value(m, "mailrules_imap_throttled_total", account="work") == 1
    m.throttled("elsewhere", "FETCH", 1.0)  # not configured: counted as other
    assert value(m, "mailrules_imap_throttled_total", account=OTHER) == 1


def test_a_login_refused_for_now_is_counted_as_throttling() -> None:
    from mailrules.imap.errors import Throttled

    m = configured()

    def refused(account: Acct) -> FakeSession:
        raise Throttled(
            "login refused for now: [ALERT] Too many simultaneous connections.", None, kind="reconnect"
        )

    with pytest.raises(Throttled):
        m.instrument(refused)(Acct())
    assert value(m, "mailrules_imap_throttled_total", account="work") == 1


def test_loop_safety_skips_and_refused_creations_are_counted_by_reason() -> None:
    from mailrules.engine import loops

    m = configured()
    for reason in loops.SKIP_LABELS:
        assert value(m, "mailrules_actions_skipped_total", account="home", reason=reason) == 0
    assert value(m, "mailrules_mailbox_creations_refused_total", account="work") == 0
    m.entry(entry(action="copy", outcome="skipped", error=loops.SOURCE_MAILBOX))
    m.entry(entry(action="forward", outcome="skipped", error=loops.PRECEDENCE))
    m.entry(entry(action="forward", outcome="skipped", error=f"{loops.RATE_LIMIT}: 20 sends to x@y.z"))
    m.entry(entry(action="mark read", outcome="skipped", error="already so"))  # not loop safety
    m.entry(entry(action="move", outcome="failed", error=f"{loops.CREATION_LIMIT}: 50 mailboxes created"))
    m.entry(entry(action="move", outcome="failed", error="NO [TRYCREATE] no such mailbox"))
    name = "mailrules_actions_skipped_total"
    skipped = {r: value(m, name, account="work", reason=r) for r in loops.SKIP_LABELS}
    assert skipped == {
        "source_mailbox": 1, "auto_submitted": 0, "null_sender": 0, "report": 0, "precedence": 1,
        "loop_header": 0, "rate_limit": 1, "vanished": 0,
    }  # fmt: skip
    assert value(m, "mailrules_mailbox_creations_refused_total", account="work") == 1
