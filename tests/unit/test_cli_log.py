"""`mailrules log --pending` lists forwards in doubt; limit-stopped runs exit 1."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from click.testing import CliRunner

from mailrules.cli import main
from mailrules.state.models import JournalEntry
from mailrules.state.store import StateStore


def test_log_pending_lists_sends_in_doubt(tmp_path: Path) -> None:
    config = tmp_path / "mailrules.toml"
    config.write_text(
        'state = "state.db"\n[accounts.w]\nhost = "imap.example.com"\nusername = "u"\npassword = "p"\n'
    )
    state = StateStore.open(tmp_path / "state.db")
    run = state.begin_run("run", False)
    entry = JournalEntry(
        run_id=run,
        rule="boss",
        rule_span="r.rules:1",
        account="w",
        mailbox="INBOX",
        uidvalidity=1,
        uid=7,
        message_id="<m@x>",
        action="forward",
        detail="boss@example.org",
        destination=None,
        new_uidvalidity=None,
        new_uid=None,
        outcome="ok",
        error=None,
        at=dt.datetime.now(dt.UTC),
    )
    assert state.intent("k1", entry)
    state.close()
    result = CliRunner().invoke(main, ["log", "--pending", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (
        'rule "boss" account=w mailbox="INBOX" uid=7 message-id=<m@x>: forward boss@example.org'
        in result.output
    )
    assert "1 action(s) in doubt" in result.output


def test_config_shows_what_is_read_without_secrets(tmp_path: Path) -> None:
    import json

    config = tmp_path / "mailrules.toml"
    config.write_text(
        '[accounts.w]\nprovider = "gmail"\nusername = "me@gmail.com"\npassword = "hunter2-long"\n'
    )
    result = CliRunner().invoke(
        main, ["config", "--config", str(config)], env={"MAILRULES_TIMEZONE": "Europe/Paris"}
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["timezone"] == "Europe/Paris"  # the environment wins
    assert shown["accounts"]["w"]["host"] == "imap.gmail.com"  # the preset filled it
    assert "hunter2-long" not in result.output and shown["accounts"]["w"]["password"] == "***"
