"""Loop safety on a real Dovecot: a message cannot make the daemon copy it into its own mailbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailrules.cli import main
from mailrules.imap.session import ConnectionParams, ImapSession
from mailrules.smtp.compose import build_forward
from tests.integration import helpers
from tests.integration.servers import DovecotServer, make_message
from tests.integration.test_daemon import Running, append, counts, wait_until

pytestmark = pytest.mark.integration

LOOP_RULES = """
rule "lists" { when header "List-Id" exists then copy to "{list}" }
rule "filed" { when subject contains "file me" then move to "Filed" }
"""


def journal(state: Path, outcome: str) -> list[tuple[str, str, str | None, str | None]]:
    """(rule, action, destination, error) of every journal entry with this outcome."""
    if not state.exists():
        return []
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT rule, action, destination, error FROM journal WHERE outcome = ? ORDER BY id", (outcome,)
        ).fetchall()
    return [(str(r[0]), str(r[1]), r[2], r[3]) for r in rows]


def acted(state: Path) -> int:
    """Journal entries that did something or failed to."""
    return len(journal(state, "ok")) + len(journal(state, "failed"))


def inbox(server: DovecotServer, user: str, password: str) -> list[bytes]:
    with ImapSession.connect(server.params(user, password)) as s:
        s.select("INBOX", readonly=True)
        uids = s.search([b"ALL"])
        got = s.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    return [bytes(d["BODY.PEEK[]"]) for d in got.values()]


def test_list_id_naming_the_watched_mailbox_does_not_flood_it(dovecot: DovecotServer, tmp_path: Path) -> None:
    """`List-Id: Loop <INBOX>` and `copy to "{list}"` on arrival in INBOX: before the fix every copy
    arrived as new mail and was copied again, without end (815 copies in 8 s). Now the copy is
    skipped and journalled; INBOX keeps the one message it had."""
    user, pw = dovecot.fresh_user()
    d = Running(tmp_path, dovecot, user, pw, None)
    (d.rules / "10-main.rules").write_text(LOOP_RULES)
    d.start()
    try:
        looping = make_message("hello list", extra="List-Id: Loop <INBOX>\r\n")
        append(dovecot, user, pw, [looping])
        state = tmp_path / "state.db"
        wait_until(lambda: journal(state, "skipped") != [], 30, "the copy to be skipped", d)
        # A later message is filed: the watcher has gone past everything the first one caused.
        append(dovecot, user, pw, [make_message("then file me")])
        wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 1, 30, "the marker to be filed", d)
        assert inbox(dovecot, user, pw) == [looping]
        assert journal(state, "skipped") == [("lists", "copy", "INBOX", "destination is the source mailbox")]
        assert [e for e in journal(state, "ok") if e[1] == "copy"] == []
        assert d.metric("mailrules_actions_skipped_total") == 1
    finally:
        assert d.stop() == 0


# -- `mailrules run` on Dovecot with the SMTP sink ----------------------------------------------------

BOT = "bot@example.com"  # the sender helpers.write_config gives the account


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def config(tmp_path: Path, account: ConnectionParams, rules: str, port: int | None, limits: str = "") -> str:
    path = helpers.write_config(tmp_path, account, rules, smtp_port=port)
    if limits:
        path.write_text(path.read_text() + f"\n[limits]\n{limits}\n")
    return str(path)


def bounce_of(forwarded: bytes) -> bytes:
    """A delivery status notification (RFC 3464) returning a message mailrules forwarded."""
    return (
        b"Return-Path: <>\r\nFrom: MAILER-DAEMON@example.org\r\nTo: bot@example.com\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-1@example.org>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        b"\r\n--B\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; example.org\r\n\r\n"
        b"Final-Recipient: rfc822; boss@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\n\r\n" + forwarded + b"\r\n--B--\r\n"
    )


def person_attaching(forwarded: bytes) -> bytes:
    """A person's own message (no automatic marks) with a mailrules forward attached inside."""
    return (
        b"From: carol@example.org\r\nTo: bot@example.com\r\nSubject: look what I got\r\n"
        b"Message-ID: <carol-1@example.org>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="C"\r\n'
        b"\r\n--C\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n"
        b"--C\r\nContent-Type: message/rfc822\r\n\r\n" + forwarded + b"\r\n--C--\r\n"
    )


def test_automatic_mail_bounces_and_our_own_forwards_are_never_sent_on(
    account: ConnectionParams, tmp_path: Path
) -> None:
    personal = make_message("t-personal")
    ours, _ = build_forward(
        make_message("t-earlier"), "boss@example.org", from_addr=BOT, rule="f", idempotency_key="k"
    )
    incoming = {
        "personal": personal,
        "auto-reply": make_message("t-away", extra="Auto-Submitted: auto-replied\r\n"),
        "null sender": make_message("t-null", extra="Return-Path: <>\r\n"),
        "bulk": make_message("t-bulk", extra="Precedence: bulk\r\n"),
        "bounce": bounce_of(ours),
        "our forward inside": person_attaching(ours),
    }
    assert not any(helpers.append(account, "INBOX", [(m, [], None) for m in incoming.values()]))
    rules = 'rule "f" { when all then forward to "boss@example.org", redirect to "deputy@example.org" }'
    with helpers.smtp_sink() as (sink, port):
        result = cli("run", "--config", config(tmp_path, account, rules, port))
    assert result.exit_code == 0, result.output  # skipped is not failed
    assert [m.rcpt_tos for m in sink.messages] == [["boss@example.org"], ["deputy@example.org"]]
    assert all(b"Subject: t-personal" in m.content for m in sink.messages)
    skipped = sorted(e[3] or "" for e in journal(tmp_path / "state.db", "skipped"))
    reasons = [
        "automatic mail (Auto-Submitted)",
        "a bounce (empty Return-Path)",
        "bulk or list mail (Precedence)",
        "a bounce (empty Return-Path)",  # the DSN: its empty Return-Path is seen first
        "sent by this mailrules already (X-Mailrules-Loop)",
    ]
    assert skipped == sorted(2 * reasons)
    assert "forward skipped 5" in result.stdout and "redirect skipped 5" in result.stdout


def test_sends_to_one_address_stop_at_the_hourly_limit_across_runs(
    account: ConnectionParams, tmp_path: Path
) -> None:
    rules = 'rule "f" { when all then forward to "boss@example.org" }'
    limits = "forwards_per_address_per_hour = 3"
    assert not any(helpers.append(account, "INBOX", [(make_message(f"t-{i}"), [], None) for i in range(5)]))
    with helpers.smtp_sink() as (sink, port):
        first = cli("run", "--config", config(tmp_path, account, rules, port, limits))
        assert len(sink.messages) == 3
        assert "forward ok 3" in first.stdout and "forward skipped 2" in first.stdout
        assert first.exit_code == 0
        assert first.stderr.count("forwards/redirects to boss@example.org in the last hour") == 1
        # a new process: the count comes back from the state, not from zero
        assert not any(helpers.append(account, "INBOX", [(make_message("t-late"), [], None)]))
        again = cli("run", "--config", config(tmp_path, account, rules, port, limits))
        assert len(sink.messages) == 3 and "forward ok" not in again.stdout
    reasons = [e[3] or "" for e in journal(tmp_path / "state.db", "skipped")]
    rate = "rate limit reached: 3 sends to boss@example.org in the last hour"
    assert sum(r.startswith(rate) for r in reasons) == 2 + 3  # the first run's two; again, with the new one
    assert reasons.count("already sent (journal)") == 3


def test_a_run_creates_no_more_mailboxes_than_its_limit(account: ConnectionParams, tmp_path: Path) -> None:
    lists = [make_message(f"t-{i}", extra=f"List-Id: <l{i}.example.org>\r\n") for i in range(4)]
    assert not any(helpers.append(account, "INBOX", [(m, [], None) for m in lists]))
    rules = 'rule "lists" { when list matches /^(l[0-9])/ then move to "Lists/{match.1}" }'
    result = cli("run", "--config", config(tmp_path, account, rules, None, "mailboxes_created_per_run = 2"))
    assert result.exit_code == 1  # the refused moves are failed actions
    assert "move ok 2" in result.stdout and "move failed 2" in result.stdout
    snap = helpers.snapshot(account)
    assert sorted(n for n in snap if n.startswith("Lists/")) == ["Lists/l0", "Lists/l1"]
    assert len(snap["INBOX"].messages) == 2  # left where they were
    assert "mailbox creation limit reached: 2 mailboxes created in this run" in result.stderr


def test_a_stranger_who_sends_first_under_the_same_message_id_does_not_stop_the_forward(
    account: ConnectionParams, tmp_path: Path
) -> None:
    rules = 'rule "f" { when all then forward to "boss@example.org" }'
    fake = make_message("t-fake").replace(b"Message-ID: <", b"Message-ID: <predicted-", 1)
    mid = fake.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0]
    real = make_message("t-real", extra="X-Real: yes\r\n")
    real = real.replace(real.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0], mid, 1)
    with helpers.smtp_sink() as (sink, port):
        assert not any(helpers.append(account, "INBOX", [(fake, [], None)]))
        cli("run", "--config", config(tmp_path, account, rules, port))
        assert not any(helpers.append(account, "INBOX", [(real, [], None)]))
        cli("run", "--config", config(tmp_path, account, rules, port))
    assert [b"Subject: t-real" in m.content for m in sink.messages] == [False, True]


def test_a_forward_that_comes_back_is_not_forwarded_again(dovecot: DovecotServer, tmp_path: Path) -> None:
    """The target forwards it back, then bounces it: the daemon sends once, not back and forth."""
    user, pw = dovecot.fresh_user()
    with helpers.smtp_sink() as (sink, port):
        d = Running(tmp_path, dovecot, user, pw, port)
        (d.rules / "10-main.rules").write_text(
            'rule "f" { when all then forward to "boss@example.org" }\n'
            'rule "filed" { when subject contains "file me" then move to "Filed" }\n'
        )
        d.start()
        try:
            append(dovecot, user, pw, [make_message("hello boss")])
            wait_until(lambda: len(sink.messages) == 1, 30, "the first forward", d)
            came_back = sink.messages[0].content
            append(dovecot, user, pw, [came_back, bounce_of(came_back), make_message("then file me")])
            wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 1, 30, "the marker to be filed", d)
            assert len(sink.messages) == 2  # the marker itself was forwarded once, as any mail
            assert b"Subject: then file me" in sink.messages[1].content
            reasons = [e[3] for e in journal(tmp_path / "state.db", "skipped")]
            assert reasons == ["automatic mail (Auto-Submitted)", "a bounce (empty Return-Path)"]
            assert d.metric("mailrules_actions_skipped_total") == 2
        finally:
            assert d.stop() == 0


def test_the_daemons_arrivals_create_no_more_mailboxes_per_hour_than_the_limit(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    """A sender who writes a new List-Id into each message cannot make the daemon create mailboxes
    without end: past the limit the moves fail and the mail stays in INBOX."""
    user, pw = dovecot.fresh_user()
    d = Running(tmp_path, dovecot, user, pw, None)
    (d.rules / "10-main.rules").write_text(
        'rule "lists" { when list matches /^(l[0-9])/ then move to "Lists/{match.1}" }\n'
    )
    d.config.write_text(d.config.read_text() + "\n[limits]\nmailboxes_created_per_run = 2\n")
    d.start()
    try:
        for i in range(4):  # one by one: each its own batch, the budget still holds for the hour
            append(dovecot, user, pw, [make_message(f"post {i}", extra=f"List-Id: <l{i}.example.org>\r\n")])

            def acted_on(n: int = i + 1) -> bool:
                return acted(tmp_path / "state.db") == n

            wait_until(acted_on, 30, f"message {i} to be acted on", d)
        with ImapSession.connect(dovecot.params(user, pw)) as s:
            names = sorted(m.name for m in s.list_mailboxes() if m.name.startswith("Lists/"))
        assert names == ["Lists/l0", "Lists/l1"]
        assert len(inbox(dovecot, user, pw)) == 2
        failed = [e[3] or "" for e in journal(tmp_path / "state.db", "failed")]
        assert len(failed) == 2
        assert all(
            f.startswith("mailbox creation limit reached: 2 mailboxes created in the last hour")
            for f in failed
        )
        assert d.metric("mailrules_mailbox_creations_refused_total") == 2
    finally:
        assert d.stop() == 0
