"""`mailrules run` end to end on Dovecot and Cyrus: every action, the summary, exit codes, limit, dry run.

The same rule files on each server (`server_account`: Dovecot, Cyrus with INBOX. and ".", Cyrus with
altnamespace): mailboxes are named portably ("New/Box", "Archive/{year}") and compared by portable
name, so what is asserted is what a user's rules do, whatever the server's namespace.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailrules.cli import main
from mailrules.imap.session import ConnectionParams, ImapSession
from tests.integration.helpers import (
    MailboxSnapshot,
    append,
    placement,
    portable,
    smtp_sink,
    where_is,
    write_config,
)
from tests.integration.helpers import snapshot as server_snapshot
from tests.integration.servers import DovecotServer, make_message

pytestmark = pytest.mark.integration


@pytest.fixture
def account(server_account: ConnectionParams) -> ConnectionParams:
    """Every test here runs on Dovecot, Cyrus and Cyrus with altnamespace (conftest.server_account)."""
    return server_account


def snapshot(params: ConnectionParams) -> dict[str, MailboxSnapshot]:
    """The account's mailboxes by portable name (`INBOX.New.Box` on Cyrus is `New/Box`)."""
    return portable(params, server_snapshot(params))


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def msg(subject: str, sender: str = "a@example.com", extra: str = "") -> bytes:
    return make_message(subject, f"body of {subject}\r\n", sender=sender, extra=extra)


ALL_ACTIONS = """
rule "move"         { when subject is "t-move"         then move to "New/Box" }
rule "copy"         { when subject is "t-copy"         then copy to "Copies" }
rule "archive"      { when subject is "t-archive"      then archive }
rule "archive-year" { when subject is "t-archive-year" then archive to "Archive/{year}" }
rule "delete"       { when subject is "t-delete"       then delete }
rule "purge"        { when subject is "t-purge"        then delete permanently }
rule "read"         { when subject is "t-read"         then mark read }
rule "unread"       { when subject is "t-unread"       then mark unread }
rule "flag"         { when subject is "t-flag"         then flag }
rule "unflag"       { when subject is "t-unflag"       then unflag }
rule "tag"          { when subject is "t-tag"          then tag "$Work" }
rule "untag"        { when subject is "t-untag"        then untag "$Work" }
rule "forward"      { when subject is "t-forward"      then forward to "fwd@example.org" }
rule "redirect"     { when subject is "t-redirect"     then redirect to "redir@example.org" }
rule "stop"         { when subject is "t-stop"         then stop }
rule "after stop"   { when subject contains "stop"     then tag "$Later" }
"""


def test_every_action_end_to_end(account: ConnectionParams, tmp_path: Path) -> None:
    when = dt.datetime(2023, 5, 17, 9, 30, tzinfo=dt.UTC)
    flags = {"t-unread": ["\\Seen"], "t-unflag": ["\\Flagged"], "t-untag": ["$Work", "\\Seen"]}
    subjects = [
        "t-move", "t-copy", "t-archive", "t-archive-year", "t-delete", "t-purge", "t-read", "t-unread",
        "t-flag", "t-unflag", "t-tag", "t-untag", "t-forward", "t-redirect", "t-stop", "t-nonstop",
        "t-bystander",
    ]  # fmt: skip
    raws = {s: msg(s) for s in subjects}
    assert not any(append(account, "INBOX", [(raws[s], flags.get(s, []), when) for s in subjects]))
    # Another client marks a message \Deleted: `delete permanently` must expunge only its own UIDs.
    with ImapSession.connect(account) as other:
        other.select("INBOX")
        (uid,) = other.search([b'SUBJECT "t-bystander"'])
        other.store_flags([uid], ["\\Deleted"], True)
    before = snapshot(account)
    assert "New/Box" not in before and "Copies" not in before

    with smtp_sink() as (sink, port):
        config = write_config(tmp_path, account, ALL_ACTIONS, smtp_port=port)
        result = cli("run", "--config", str(config))
    assert result.exit_code == 0, result.output
    after = snapshot(account)

    def at(subject: str) -> list[tuple[str, tuple[str, ...]]]:
        return where_is(after, f"Subject: {subject}\r\n".encode())

    assert at("t-move") == [("New/Box", ())]  # the missing mailbox was created
    assert sorted(at("t-copy")) == [("Copies", ()), ("INBOX", ())]
    assert at("t-archive") == [("Archive", ())]  # Dovecot's SPECIAL-USE \Archive
    assert at("t-archive-year") == [("Archive/2023", ())]  # {year} of INTERNALDATE
    assert at("t-delete") == [("Trash", ())]
    assert at("t-purge") == []
    assert at("t-bystander") == [("INBOX", ("\\Deleted",))]  # survived the UID EXPUNGE
    assert at("t-read") == [("INBOX", ("\\Seen",))]
    assert at("t-unread") == [("INBOX", ())]
    assert at("t-flag") == [("INBOX", ("\\Flagged",))]
    assert at("t-unflag") == [("INBOX", ())]
    assert at("t-tag") == [("INBOX", ("$Work",))]
    assert at("t-untag") == [("INBOX", ("\\Seen",))]
    assert at("t-stop") == [("INBOX", ())]  # `stop`: the later rule did not see it
    assert at("t-nonstop") == [("INBOX", ("$Later",))]
    # every other message kept its bytes and INTERNALDATE
    for name in ("INBOX", "Archive", "Trash", "New/Box"):
        assert all(d == when for _, _, d in after[name].messages)

    forwarded = [m for m in sink.messages if m.rcpt_tos == ["fwd@example.org"]]
    redirected = [m for m in sink.messages if m.rcpt_tos == ["redir@example.org"]]
    assert len(forwarded) == 1 and len(redirected) == 1 and len(sink.messages) == 2
    fwd = email.message_from_bytes(forwarded[0].content, policy=email.policy.default)
    assert [p.get_content_type() for p in fwd.walk()].count("message/rfc822") == 1
    boundary = fwd.get_boundary()
    assert boundary is not None
    attached = (
        forwarded[0].content.split(b"Content-Type: message/rfc822\r\n", 1)[1].split(b"\r\n\r\n", 1)[1]
    ).rsplit(b"\r\n--" + boundary.encode() + b"--", 1)[0]
    assert attached == raws["t-forward"]  # the original, byte for byte
    assert redirected[0].content.endswith(raws["t-redirect"])

    out = result.stdout
    for line in (
        '"move"', "move ok 1", "copy ok 1", "archive ok 1", "delete ok 1", "delete permanently ok 1",
        "mark read ok 1", "mark unread ok 1", "flag ok 1", "unflag ok 1", "tag ok 1", "untag ok 1",
        "forward ok 1", "redirect ok 1", "0 failed actions, 0 errors",
    ):  # fmt: skip
        assert line in out, out
    assert out.startswith("run ")
    # one INFO line per rule and mailbox (house style 10); the line per message and action is
    # DEBUG (`-v`), and the journal keeps it: rule, account, mailbox, uid, Message-ID, outcome
    assert (
        'INFO mailrules.run: rule "move" account=main mailbox="INBOX": matched 1: move ok 1' in result.stderr
    )
    assert 'rule "tag" account=main mailbox="INBOX": matched 1: tag ok 1' in result.stderr
    assert 'mailbox="INBOX" uid=' not in result.stderr
    logged = cli("log", "--config", str(config), "--rule", "move").stdout
    assert 'rule "move" account=main mailbox="INBOX" uid=1 message-id=<' in logged
    assert 'move to "New/Box": ok' in logged


def test_failed_action_gives_exit_1_and_leaves_the_message(account: ConnectionParams, tmp_path: Path) -> None:
    assert not any(append(account, "INBOX", [(msg("no list"), [], None)]))
    rules = 'rule "lists" { when all then move to "Lists/{list}" }\nrule "rest" { when all then flag }'
    result = cli("run", "--config", str(write_config(tmp_path, account, rules)))
    assert result.exit_code == 1
    assert '"lists"' in result.stdout and "move failed 1" in result.stdout
    assert "1 failed actions, 0 errors" in result.stdout
    # the per-message reading: a move that cannot happen leaves the message for later rules
    assert where_is(snapshot(account), b"Subject: no list") == [("INBOX", ("\\Flagged",))]


def test_gmail_label_name_fails_the_tag_on_dovecot_and_says_why(
    account: ConnectionParams, tmp_path: Path
) -> None:
    # `tag "Label with spaces"` is a Gmail label (the checker warns); Dovecot has no labels and
    # no keyword can hold a space: nothing is sent, the action fails, later rules still run.
    assert not any(append(account, "INBOX", [(msg("label me"), [], None)]))
    rules = 'rule "label" { when all then tag "Label with spaces" }\nrule "rest" { when all then flag }'
    result = cli("run", "--config", str(write_config(tmp_path, account, rules)))
    assert result.exit_code == 1
    assert "only Gmail takes it, as a label" in result.output  # the checker's warning at load
    assert "not a valid IMAP flag: 'Label with spaces'" in result.output
    assert "only Gmail takes other names, as labels" in result.output
    assert "1 failed actions, 0 errors" in result.stdout
    assert where_is(snapshot(account), b"Subject: label me") == [("INBOX", ("\\Flagged",))]


def test_limit_exceeded_does_nothing_until_forced(account: ConnectionParams, tmp_path: Path) -> None:
    assert not any(append(account, "INBOX", [(msg(f"bulk {i}"), [], None) for i in range(3)]))
    append(account, "INBOX", [(msg("other"), [], None)])
    rules = 'rule "wide" limit 2 { when subject starts with "bulk" then delete }'
    config = write_config(tmp_path, account, rules)
    before = snapshot(account)
    result = cli("run", "--config", str(config))
    # The guard rail held: nothing done, and exit 1 so that a cron job or script notices.
    assert result.exit_code == 1, result.output
    assert "LIMIT EXCEEDED: nothing done" in result.stdout and "matched     3" in result.stdout
    assert "more than its limit 2" in result.stderr and "--force" in result.stderr
    assert snapshot(account) == before

    forced = cli("run", "--config", str(config), "--force")
    assert forced.exit_code == 0, forced.output
    assert "delete ok 3" in forced.stdout and "LIMIT" not in forced.stdout
    after = placement(snapshot(account))
    assert len(after["Trash"]) == 3 and len(after["INBOX"]) == 1


DRY_RULES = """
rule "gh"     { when from contains "github" then move to "GitHub/{year}", mark read }
rule "copy"   { when subject contains "invoice" then copy to "Finance", flag }
rule "purge"  { when subject contains "junk" then delete permanently }
rule "bin"    { when subject contains "old" then delete }
rule "read"   { when subject is "plain" then mark read }
rule "tag"    { when all then tag "$Seen-By-Rules" }
rule "seen"   { when seen then archive }
rule "fwd"    { when subject contains "fwd" then forward to "x@example.org", redirect to "y@example.org" }
"""


def test_limit_counts_the_whole_run_across_mailboxes(account: ConnectionParams, tmp_path: Path) -> None:
    # language.md §2: "a run in which this rule would act on more than N messages acts on none":
    # 2 matches in INBOX and 2 in Lists are 4 in the run, over a limit of 3, though each
    # mailbox alone is under it. Before, each mailbox was judged alone and all 4 were flagged.
    assert not any(append(account, "INBOX", [(msg(f"bulk {i}"), [], None) for i in range(2)]))
    assert not any(append(account, "Lists", [(msg(f"bulk {i}"), [], None) for i in range(2, 4)]))
    rules = 'rule "wide" in "INBOX", "Lists" limit 3 { when subject starts with "bulk" then flag }'
    config = write_config(tmp_path, account, rules)
    before = snapshot(account)
    result = cli("run", "--config", str(config))
    assert result.exit_code == 1, result.output
    assert "LIMIT EXCEEDED: nothing done" in result.stdout
    assert "4 messages match in this run (2 in main/INBOX), more than its limit 3" in result.stderr
    assert snapshot(account) == before
    dry = cli("run", "--config", str(config), "--dry-run")
    assert dry.exit_code == 1 and "LIMIT EXCEEDED" in dry.stdout

    # Under the limit for the run: every pass acts.
    roomy = write_config(tmp_path, account, rules.replace("limit 3", "limit 4"))
    ok = cli("run", "--config", str(roomy))
    assert ok.exit_code == 0, ok.output
    flagged = [m for m, msgs in placement(snapshot(account)).items() for _, f in msgs if "\\Flagged" in f]
    assert sorted(flagged) == ["INBOX", "INBOX", "Lists", "Lists"]


def test_dry_run_changes_nothing_byte_for_byte(account: ConnectionParams, tmp_path: Path) -> None:
    msgs = [
        (msg("PR 1", sender="notifications@github.com"), [], dt.datetime(2024, 2, 2, tzinfo=dt.UTC)),
        (msg("your invoice"), ["\\Flagged"], None),
        (msg("junk mail"), [], None),
        (msg("old stuff"), ["\\Seen"], None),
        (msg("fwd me"), [], None),
        (msg("plain"), ["$Other"], None),
    ]
    assert not any(append(account, "INBOX", msgs))
    append(account, "Archive", [(msg("already archived"), ["\\Seen"], None)])
    before = snapshot(account)
    with smtp_sink() as (sink, port):
        config = write_config(tmp_path, account, DRY_RULES, smtp_port=port)
        result = cli("run", "--config", str(config), "--dry-run")
    assert result.exit_code == 0, result.output
    after = snapshot(account)
    # bodies, flags, INTERNALDATEs, UIDVALIDITY and UIDNEXT of every mailbox; no mailbox created
    assert after == before
    assert sink.messages == []
    out = result.stdout
    assert "(dry run: nothing was changed)" in out
    for line in (
        "move dry-run 1", "mark read dry-run 1", "copy dry-run 1", "delete permanently dry-run 1",
        "delete dry-run 1", "mark read dry-run 1", "tag dry-run 3", "archive dry-run 1",
        "forward dry-run 1", "redirect dry-run 1",
    ):  # fmt: skip
        assert line in out, out
    assert 'move to "GitHub/2024": dry-run' in result.stderr
    # `seen` is judged on the flags the run would have left: "plain" would be marked read, then archived
    assert 'rule "seen" account=main mailbox="INBOX" uid=6' in result.stderr


def test_message_expunged_by_another_client_mid_run_is_skipped_with_a_log_line(
    dovecot: DovecotServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dovecot answers a FETCH for a message another session expunged (not yet announced to us)
    with NIL body sections: that message is gone, not an empty message to evaluate and forward.
    (Dovecot only: Cyrus still answers the header FETCH, and the forward's FETCH finds nothing.)"""
    from mailrules.imap.store import ImapStore

    account = dovecot.params(*dovecot.fresh_user())

    assert not any(append(account, "INBOX", [(msg(f"m{i}"), [], None) for i in range(3)]))
    real_fetch = ImapStore.fetch_views
    gone: list[int] = []

    def fetch_after_someone_expunged(self: ImapStore, uids, needs):  # type: ignore[no-untyped-def]
        if not gone:  # between SEARCH and FETCH another client expunges the second message
            with ImapSession.connect(account) as other:
                other.select("INBOX")
                gone.append(sorted(uids)[1])
                other.store_flags(gone, ["\\Deleted"], True)
                other.expunge_uids(gone)
        return real_fetch(self, uids, needs)

    monkeypatch.setattr(ImapStore, "fetch_views", fetch_after_someone_expunged)
    rules = 'rule "all" { when not subject contains "zzz" then forward to "f@x.org", move to "Done" }'
    with smtp_sink() as (sink, port):
        result = cli("run", "--config", str(write_config(tmp_path, account, rules, smtp_port=port)))
    assert result.exit_code == 0, result.output
    assert "main/INBOX: 1 message(s) skipped (see log)" in result.stdout, result.stdout
    assert "forward ok 2" in result.stdout and "move ok 2" in result.stdout
    (line,) = [ln for ln in result.stderr.splitlines() if f"uid {gone[0]}" in ln]
    assert 'rule "all"' in line and "skipped" in line
    assert len(sink.messages) == 2 and all(b"Subject: m" in m.content for m in sink.messages)
    assert len(placement(snapshot(account))["Done"]) == 2


def test_later_rules_searched_ahead_on_a_second_connection_opened_by_the_prefetch_thread(
    dovecot: DovecotServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search-ahead path on a real server (a mailbox this small only uses it with the size
    lowered: below SEARCH_AHEAD_MIN_MESSAGES it costs more than it saves, engine/prefetch.py)."""
    import mailrules.engine.core

    account = dovecot.params(*dovecot.fresh_user())
    subjects = ["t-move", "t-flag", "t-both", "t-none"]
    assert not any(append(account, "INBOX", [(msg(s), [], None) for s in subjects]))
    rules = (
        'rule "move" { when subject contains "move" then move to "Moved" }\n'
        'rule "flag" { when subject contains "t-" then flag }\n'
        'rule "both" { when flagged and subject contains "both" then move to "Both" }\n'
    )
    config = str(write_config(tmp_path, account, rules))
    connected: list[str] = []
    real_connect = ImapSession.connect

    def connect(params: ConnectionParams) -> ImapSession:
        connected.append(threading.current_thread().name)
        return real_connect(params)

    monkeypatch.setattr(ImapSession, "connect", connect)
    small = cli("run", "--print-metrics", "--config", config)  # 4 messages: never ahead
    assert small.exit_code == 0, small.output
    assert 'mailrules_search_ahead_total{account="main"} 0.0' in small.stdout
    assert connected == ["MainThread"] and "move ok 1" in small.stdout

    assert not any(append(account, "INBOX", [(msg(s), [], None) for s in subjects]))
    monkeypatch.setattr(mailrules.engine.core, "SEARCH_AHEAD_MIN_MESSAGES", 2)
    connected.clear()
    ran = cli("run", "--print-metrics", "--config", config)
    assert ran.exit_code == 0, ran.output
    assert 'mailrules_search_ahead_total{account="main"} 1.0' in ran.stdout
    assert connected == ["MainThread", "prefetch:INBOX"]  # the first rule did not wait for its login
    after = snapshot(account)
    assert where_is(after, b"Subject: t-move\r\n") == [("Moved", ())] * 2  # gone before "flag"
    assert where_is(after, b"Subject: t-both\r\n") == [("Both", ("\\Flagged",))] * 2
    assert where_is(after, b"Subject: t-none\r\n") == [("INBOX", ("\\Flagged",))] * 2
