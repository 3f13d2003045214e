"""Loop safety on a real Dovecot: a message cannot make the daemon copy it into its own mailbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mailrules.imap.session import ImapSession
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
