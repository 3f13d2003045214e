"""`on flag change` on real servers (issue 15): a user flags a message with another client and the
rule copies it once; the rules' own flag changes never set them off again; a ping-pong that the
checker refuses does not loop at run time either (own MODSEQs); a server without CONDSTORE refuses
the rule for that account and runs the others."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import threading
from pathlib import Path

import pytest

from mailrules.accounts import Account
from mailrules.commands.doctor.flags import flag_change_rows
from mailrules.daemon.flagwatch import FlagWatch
from mailrules.daemon.metrics import Metrics
from mailrules.daemon.watcher import MailboxWatcher, WatchContext
from mailrules.dsl import ast as A
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.parser import parse_text
from mailrules.engine.flagpass import OwnChanges
from mailrules.imap.modseq import record_own_changes
from mailrules.imap.session import ConnectionParams, ImapSession
from mailrules.imap.store import ImapStore
from mailrules.state.store import StateStore
from tests.integration.cyrus import DEFAULT_VARIANT, CyrusFleet, CyrusServer
from tests.integration.helpers import append, load, write_config
from tests.integration.servers import DovecotServer, PymapServer, ServerUnavailable, make_message
from tests.integration.test_daemon import Running, counts, wait_until
from tests.integration.test_notify import mode_of
from tests.needs import unavailable

pytestmark = pytest.mark.integration

FOLLOW_UP = """
rule "follow-up" on flag change { when flagged then copy to "Follow-up" }
rule "read what I flag" on flag change { when flagged then mark read }
rule "arrivals" { when all then tag "$Arrived" }
"""


@pytest.fixture(params=["dovecot-notify", "dovecot-idle", "cyrus"])
def server(request: pytest.FixtureRequest) -> DovecotServer | CyrusServer:
    """Dovecot (CONDSTORE, QRESYNC; watched through NOTIFY, or IDLE per mailbox) and Cyrus
    (CONDSTORE, QRESYNC; IDLE)."""
    if request.param.startswith("dovecot"):
        dovecot: DovecotServer = request.getfixturevalue("dovecot")
        return dovecot
    fleet: CyrusFleet = request.getfixturevalue("cyrus_fleet")
    try:
        return fleet.get(DEFAULT_VARIANT)
    except ServerUnavailable as exc:  # skips locally, fails under CI (tests/needs.py)
        unavailable(str(exc))


def flags_of(params: ConnectionParams, subject: str) -> set[str]:
    with ImapSession.connect(params) as s:
        s.select("INBOX", readonly=True)
        uids = s.search([b'SUBJECT "' + subject.encode() + b'"'])
        got = s.fetch(uids, ["FLAGS"])
        return {f for d in got.values() for f in d.get("FLAGS", ())} - {"\\Recent"}


def user_stores(params: ConnectionParams, subject: str, flags: list[str], add: bool = True) -> None:
    """Another mail client (a phone, webmail) changes a message's flags."""
    with ImapSession.connect(params) as s:
        s.select("INBOX")
        uids = s.search([b'SUBJECT "' + subject.encode() + b'"'])
        assert uids, subject
        s.store_flags(uids, flags, add)


def subjects(params: ConnectionParams, mailbox: str) -> list[str]:
    with ImapSession.connect(params) as s:
        s.select(mailbox, readonly=True)
        got = s.fetch(s.search([b"ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        heads = [bytes(next(iter(d.values()), b"")) for d in got.values()]
        return sorted(h.decode().split(":", 1)[1].strip() for h in heads)


def matches(d: Running, rule: str) -> float:
    pattern = rf'mailrules_rule_matches_total\{{[^}}]*rule="{re.escape(rule)}"[^}}]*\}} ([0-9.e+]+)'
    return sum(float(v) for v in re.findall(pattern, d.get("/metrics")[1]))


def test_a_message_the_user_flags_is_copied_once(
    server: DovecotServer | CyrusServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    user, pw = server.fresh_user()
    params = server.params(user, pw)
    append(params, "INBOX", [(make_message("flagged before"), ["\\Flagged"], None)])
    mode = {"dovecot-notify": "notify"}.get(request.node.callspec.params["server"], "idle")
    d = Running(tmp_path, server, user, pw, None, notify="auto" if mode == "notify" else "off")
    (d.rules / "10-main.rules").write_text(FOLLOW_UP)
    d.start()
    try:
        assert mode_of(d, mode) == 1
        wait_until(lambda: "flag changes from MODSEQ" in d.text(), 20, "the first look", d)
        append(params, "INBOX", [(make_message("first"), [], None), (make_message("second"), [], None)])
        wait_until(lambda: "$Arrived" in flags_of(params, "second"), 20, "the arrivals", d)
        user_stores(params, "first", ["\\Flagged"])
        wait_until(lambda: counts(server, user, pw).get("Follow-up") == 1, 20, "the copy", d)
        wait_until(lambda: "\\Seen" in flags_of(params, "first"), 20, "first marked read", d)
        # The rule's own \Seen (and the arrival rule's $Arrived) raised MODSEQs too: were they
        # taken for a change, "follow-up" would match "first" again before it sees "second".
        user_stores(params, "second", ["\\Flagged"])
        wait_until(lambda: counts(server, user, pw).get("Follow-up") == 2, 20, "the second copy", d)
        wait_until(lambda: "\\Seen" in flags_of(params, "second"), 20, "second marked read", d)
        user_stores(params, "first", ["$Later"])  # someone else's change again: the rules run again
        wait_until(lambda: matches(d, "follow-up") == 3, 20, "first looked at again", d)
        assert matches(d, "follow-up") == 3 and matches(d, "read what I flag") == 3
        assert counts(server, user, pw)["Follow-up"] == 2  # a copy is made once per rule (journal)
        assert subjects(params, "Follow-up") == ["first", "second"]  # "flagged before" is history
        assert "flags changed on" in d.text() and "refused" not in d.text()
        # The daemon's /metrics (daemon/flag_metrics.py): the user's three changes, and at least the
        # rule's own \Seen on "first" and on "second", each found by a later look and skipped.
        assert d.metric("mailrules_flag_changes_total") == 3
        assert d.metric("mailrules_flag_changes_own_total") >= 2
        assert d.metric("mailrules_flag_change_looks_total") >= 3
        assert d.metric("mailrules_flag_change_refused") == 0
    finally:
        assert d.stop() == 0


PING_PONG = """
rule "A" on flag change { when seen then mark unread, flag }
rule "B" on flag change { when flagged then unflag, mark read }
"""


@pytest.mark.parametrize("tracked", [True, False], ids=["own-modseqs", "untracked"])
def test_a_ping_pong_does_not_loop_because_our_own_changes_are_known(
    dovecot: DovecotServer, tmp_path: Path, tracked: bool
) -> None:
    rf, diags = parse_text(PING_PONG, "t.rules")
    assert rf is not None and not diags
    rules = rf.rules
    assert [d for d in check_rule_set(A.RuleSet((rf,))) if d.severity == "error"]  # check refuses it
    user, pw = dovecot.fresh_user()
    params = dovecot.params(user, pw)
    append(params, "INBOX", [(make_message("ping"), [], None)])
    settings, _ = load(write_config(tmp_path, params, ""))
    state = StateStore.open(tmp_path / "flags.db")
    account = Account(settings.accounts["main"])
    run_id = state.begin_run("daemon", False)
    ctx = WatchContext(state, dt.UTC, lambda: rules, lambda a, m: threading.Lock(), run_id=run_id)
    session = account.connect()
    try:
        if tracked:  # what the daemon and `mailrules run` install on every session
            record_own_changes(session, "main", OwnChanges(state.note_own_changes, lambda: rules))
        store = ImapStore(session)
        watch = FlagWatch(account, ctx, state)
        info = session.select("INBOX")
        assert watch.look(session, store, "INBOX", info) == 0  # the first look
        user_stores(params, "ping", ["\\Seen"])
        ran = [watch.look(session, store, "INBOX", info) for _ in range(4)]
        if tracked:
            assert ran == [1, 0, 0, 0]  # the user's change once; ours never
        else:
            assert ran == [1, 1, 1, 1]  # without the own MODSEQs each look acts on its own change
        assert flags_of(params, "ping") == {"\\Seen"}  # A then B on one look: read, unflagged
    finally:
        session.logout()
        state.close()


def test_a_server_without_condstore_refuses_the_rule_for_the_account(
    pymap: PymapServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = pymap.fresh_mailbox()
    rules_text = (
        f'rule "follow-up" in "{box}" on flag change {{ when flagged then copy to "{box}-F" }}\n'
        f'rule "read" in "{box}" {{ when all then mark read }}\n'
    )
    params = pymap.params()
    with ImapSession.connect(params) as s:
        s.create(box)
    settings, rules = load(write_config(tmp_path, params, rules_text))
    state = StateStore.open(tmp_path / "flags.db")
    run_id = state.begin_run("daemon", False)
    metrics = Metrics()
    metrics.init({"main": [box]}, [r.name for r in rules])
    ctx = WatchContext(
        state,
        dt.UTC,
        lambda: rules,
        lambda a, m: threading.Lock(),
        run_id=run_id,
        flag_observer=metrics.flags,
    )
    watcher = MailboxWatcher(Account(settings.accounts["main"]), box, ctx)
    caplog.set_level(logging.INFO)
    refused = {"account": "main"}  # the gauge's series
    watcher.start()
    try:
        wait_until(lambda: watcher.up, 20, "the watcher")
        append(params, box, [(make_message("hello"), [], None)], create=False)
        with ImapSession.connect(params) as s:

            def read() -> bool:
                s.select(box, readonly=True)
                got = s.fetch(s.search([b"ALL"]), ["FLAGS"])
                return any("\\Seen" in d.get("FLAGS", ()) for d in got.values())

            wait_until(read, 20, "the arrival rule to run")
            rows = flag_change_rows(s, settings.accounts["main"], list(rules))
        refusals = [r for r in caplog.records if r.levelno == logging.ERROR and "refused" in r.getMessage()]
        assert len(refusals) == 1  # once, not at every look
        message = refusals[0].getMessage()
        assert 'flag-change rule(s) "follow-up" (' in message and "lacks the CONDSTORE capability" in message
        assert state.get_flag_mark("main", box) is None
        assert [(r.check, r.status) for r in rows] == [("on flag change", "FAIL")]
        assert "CONDSTORE" in rows[0].result
        assert metrics.registry.get_sample_value("mailrules_flag_change_refused", refused) == 1
    finally:
        watcher.stop()
        watcher.join(15)
        state.close()
    assert not watcher.is_alive()
    assert metrics.registry.get_sample_value("mailrules_flag_change_refused", refused) == 0  # it ended


def test_what_mailrules_run_changes_is_not_a_flag_change(dovecot: DovecotServer, tmp_path: Path) -> None:
    """`mailrules run` and `mailrules undo` (other processes than the daemon) record their STOREs'
    MODSEQs in the state: the daemon's next look at the mailbox does not take them for someone
    else's."""
    from mailrules.commands.run import run_rules, undo_run

    text = FOLLOW_UP + 'rule "read all" manually { when all then mark read, tag "$Done" }\n'
    user, pw = dovecot.fresh_user()
    params = dovecot.params(user, pw)
    append(params, "INBOX", [(make_message(f"m{i}"), ["\\Flagged"], None) for i in range(3)])
    settings, rules = load(write_config(tmp_path, params, text))
    manual = [r for r in rules if r.name == "read all"]
    state = StateStore.open(tmp_path / "flags.db")
    run_id = state.begin_run("daemon", False)
    ctx = WatchContext(state, dt.UTC, lambda: rules, lambda a, m: threading.Lock(), run_id=run_id)
    account = Account(settings.accounts["main"])
    try:
        with account.connect() as session:
            store = ImapStore(session)
            watch = FlagWatch(account, ctx, state)
            assert watch.look(session, store, "INBOX", session.select("INBOX")) == 0  # the first look
            result = run_rules(settings, manual, state=state)
            assert not result.errors and result.failed_actions == 0
            assert flags_of(params, "m1") == {"\\Flagged", "\\Seen", "$Done"}
            marked = state.get_flag_mark("main", "INBOX")
            assert marked is not None and len(marked.own) == 3  # the run's STOREs, kept
            assert watch.look(session, store, "INBOX", session.select("INBOX")) == 0
            assert counts(dovecot, user, pw).get("Follow-up") is None
            undone = undo_run(settings, state, result.run_id)  # puts \Seen and $Done back: ours too
            assert not undone.errors and flags_of(params, "m1") == {"\\Flagged"}
            assert watch.look(session, store, "INBOX", session.select("INBOX")) == 0
            user_stores(params, "m2", ["$Later"])  # someone else's change: that one runs
            assert watch.look(session, store, "INBOX", session.select("INBOX")) == 1
            assert counts(dovecot, user, pw).get("Follow-up") == 1
            mark = state.get_flag_mark("main", "INBOX")
            assert mark is not None and mark.own == {}  # spent by the looks
    finally:
        state.close()


def arrived(params: ConnectionParams, subject: str) -> bool:
    return "$Arrived" in flags_of(params, subject)


def test_a_refused_changedsince_stops_the_flag_rules_not_the_arrivals(
    dovecot: DovecotServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mailrules.daemon import flagwatch
    from mailrules.errors import ImapError

    def refused(session: ImapSession, modseq: int) -> dict[int, object]:
        raise ImapError("UID FETCH failed: BAD Unknown FETCH modifier", "permanent")

    user, pw = dovecot.fresh_user()
    params = dovecot.params(user, pw)
    settings, rules = load(write_config(tmp_path, params, FOLLOW_UP))
    state = StateStore.open(tmp_path / "flags.db")
    run_id = state.begin_run("daemon", False)
    ctx = WatchContext(state, dt.UTC, lambda: rules, lambda a, m: threading.Lock(), run_id=run_id)
    watcher = MailboxWatcher(Account(settings.accounts["main"]), "INBOX", ctx)
    monkeypatch.setattr(flagwatch, "changed_since", refused)
    watcher.start()
    try:
        wait_until(lambda: watcher.up, 20, "the watcher")
        for name in ("hello", "again"):  # two looks, one ERROR
            append(params, "INBOX", [(make_message(name), [], None)])
            wait_until(functools.partial(arrived, params, name), 20, "the arrival rule to run")
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "UID FETCH (CHANGEDSINCE) failed" in errors[0], errors
        assert watcher.backoff.failures == 0  # no reconnecting over it
    finally:
        watcher.stop()
        watcher.join(15)
        state.close()
