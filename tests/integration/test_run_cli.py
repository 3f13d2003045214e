"""The journal through the command line: `mailrules log`, `undo` (on Cyrus too), forward exactly once."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailrules.cli import main
from mailrules.commands.run import open_store, run_rules
from mailrules.imap.session import ConnectionParams
from mailrules.state.store import StateStore
from tests.integration.helpers import (
    MailboxSnapshot,
    append,
    load,
    portable,
    smtp_sink,
    snapshot,
    where_is,
    write_config,
)
from tests.integration.servers import make_message

pytestmark = pytest.mark.integration


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run_id_of(result: Result) -> str:
    m = re.match(r"run (\S+)", result.stdout)
    assert m, result.output
    return m.group(1)


def msg(subject: str, message_id: str) -> bytes:
    raw = make_message(subject, f"body of {subject}\r\n")
    return re.sub(rb"Message-ID: <[^>]+>", f"Message-ID: <{message_id}>".encode(), raw)


JOURNAL_RULES = """
rule "file"   { when subject is "to-move"    then mark read, tag "$Filed", move to "Filed" }
rule "arch"   { when subject is "to-archive" then flag, mark unread, archive }
rule "flags"  { when subject is "to-flag"    then flag, mark read, untag "$Keep", copy to "Copies" }
rule "purge"  { when subject is "purge-me"   then delete permanently }
rule "fwd"    { when subject is "fwd-me"     then forward to "boss@example.org" }
"""


def test_log_says_which_rule_moved_a_message_and_undo_restores(
    server_account: ConnectionParams, tmp_path: Path
) -> None:
    # On Dovecot and on Cyrus in two namespaces: the journal records the portable names the rules
    # wrote ("Filed", "Archive"), and undo maps them again (INBOX.Filed on Cyrus).
    account = server_account

    def snap(params: ConnectionParams) -> dict[str, MailboxSnapshot]:
        return portable(params, snapshot(params))

    messages = [
        (msg("to-move", "move-1@example.com"), [], None),
        (msg("to-archive", "arch-1@example.com"), ["\\Seen"], None),
        (msg("to-flag", "flag-1@example.com"), ["$Keep"], None),
        (msg("purge-me", "purge-1@example.com"), [], None),
        (msg("fwd-me", "fwd-1@example.com"), ["\\Answered"], None),
        (msg("bystander", "by-1@example.com"), ["\\Seen"], None),
    ]
    assert not any(append(account, "INBOX", messages))
    before = snap(account)
    with smtp_sink() as (sink, port):
        config = write_config(tmp_path, account, JOURNAL_RULES, smtp_port=port)
        ran = cli("run", "--config", str(config))
        assert ran.exit_code == 0, ran.output
        assert len(sink.messages) == 1
    run_id = run_id_of(ran)
    assert where_is(snap(account), b"to-move") == [("Filed", ("$Filed", "\\Seen"))]

    # "which rule moved this message, and where?" -- with or without the angle brackets
    for mid in ("move-1@example.com", "<move-1@example.com>"):
        logged = cli("log", "--config", str(config), "--message-id", mid)
        assert logged.exit_code == 0, logged.output
        lines = logged.stdout.splitlines()
        (moved,) = [ln for ln in lines if " move " in ln or ': move to "' in ln]
        assert run_id in moved and 'rule "file"' in moved and 'move to "Filed": ok' in moved
        assert "message-id=<move-1@example.com>" in moved
        assert any('rule "file"' in ln and "mark read: ok" in ln for ln in lines)
    archived = cli("log", "--config", str(config), "--message-id", "arch-1@example.com").stdout
    assert 'rule "arch"' in archived and 'archive to "Archive": ok' in archived
    assert "no matching actions" in cli("log", "--config", str(config), "--message-id", "nope@x").stdout
    assert run_id in cli("log", "--config", str(config)).stdout  # recent runs

    undone = cli("undo", "--config", str(config), run_id)
    assert undone.exit_code == 0, undone.output
    out = undone.stdout
    assert re.search(r"undo \S+ of run " + re.escape(run_id) + r": \d+ change\(s\) undone", out), out
    assert "not undone: purge: delete permanently" in out and "cannot be brought back" in out
    assert "not undone: fwd: forward" in out and "cannot be recalled" in out
    assert "not undone: flags: copy" in out and "undo never removes mail" in out
    after = snap(account)
    # Everything but the expunged message is back in INBOX with its flags and INTERNALDATE.
    purged = msg("purge-me", "purge-1@example.com")
    expected_inbox = tuple(m for m in before["INBOX"].messages if m[0] != purged)
    assert after["INBOX"].messages == expected_inbox
    assert not after["Filed"].messages and not after["Archive"].messages
    assert len(after["Copies"].messages) == 1  # the copy stays: undo never removes mail
    assert after["INBOX"].uidvalidity == before["INBOX"].uidvalidity

    again = cli("undo", "--config", str(config), run_id)
    assert again.exit_code == 1 and f"run {run_id} was already undone by" in again.stderr
    assert snap(account)["INBOX"].messages == expected_inbox
    unknown = cli("undo", "--config", str(config), "20000101T000000-000000")
    assert unknown.exit_code == 1 and "no run" in unknown.stderr


def test_forward_is_sent_once_across_runs(account: ConnectionParams, tmp_path: Path) -> None:
    assert not any(append(account, "INBOX", [(msg("fwd-me", "f-1@example.com"), [], None)]))
    rules = 'rule "fwd" { when subject is "fwd-me" then forward to "boss@x.org", redirect to "pa@x.org" }'
    with smtp_sink() as (sink, port):
        config = write_config(tmp_path, account, rules, smtp_port=port)
        first = cli("run", "--config", str(config))
        second = cli("run", "--config", str(config))
        # and once more as a separate process, as cron would run it
        third = subprocess.run(
            [sys.executable, "-m", "mailrules", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert first.exit_code == second.exit_code == third.returncode == 0, third.stderr
    assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["boss@x.org", "pa@x.org"]
    assert "forward ok 1" in first.stdout and "redirect ok 1" in first.stdout
    for later, err in ((second.stdout, second.stderr), (third.stdout, third.stderr)):
        assert "forward skipped 1" in later and "redirect skipped 1" in later
        assert "forward boss@x.org: skipped (already sent (journal))" in err


class Crash(BaseException):
    """The process dying between the send and the journal's confirmation."""


def test_crash_between_intent_and_confirm_is_not_resent(
    account: ConnectionParams, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not any(append(account, "INBOX", [(msg("fwd-me", "c-1@example.com"), [], None)]))
    rules = 'rule "fwd" { when subject is "fwd-me" then forward to "boss@example.org" }'
    with smtp_sink() as (sink, port):
        config = write_config(tmp_path, account, rules, smtp_port=port)
        settings, parsed = load(config)

        def crash(self: StateStore, key: str, **kw: object) -> None:
            raise Crash(key)

        monkeypatch.setattr(StateStore, "confirm", crash)
        with open_store(settings) as state, pytest.raises(Crash):
            run_rules(settings, parsed, state=state)
        monkeypatch.undo()
        assert len(sink.messages) == 1  # it left before the crash
        with open_store(settings) as state:
            (pending,) = state.pending_intents()
            assert pending.entry.rule == "fwd" and pending.entry.message_id == "<c-1@example.com>"

        again = cli("run", "--config", str(config))
    assert again.exit_code == 0, again.output
    assert len(sink.messages) == 1  # at most once: not sent again
    assert "forward skipped 1" in again.stdout
    assert "skipped (an earlier attempt may have sent it (journal))" in again.stderr
