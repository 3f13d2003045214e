"""A message another client expunges between the engine's FETCH and its MOVE or COPY, on Dovecot and
Cyrus: the journal says it was skipped, not moved (engine/sending.py `_made`), and `mailrules log`
shows it so."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailrules.cli import main
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.engine.core import Engine
from mailrules.engine.loops import VANISHED
from mailrules.engine.ports import AccountContext, RunOptions
from mailrules.imap.session import ConnectionParams, ImapSession
from mailrules.imap.store import ImapStore
from mailrules.state.store import StateStore
from tests.integration.helpers import snapshot, write_config
from tests.integration.servers import make_message

pytestmark = pytest.mark.integration


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rf, diags = parse_text(text, "10.rules")
    assert rf is not None and not [d for d in diags if d.severity == "error"], diags
    return rf.rules


class RacingStore(ImapStore):
    """Before the engine's first MOVE or COPY (its SEARCH and FETCH done), `other`, a second
    connection, expunges `doomed` from INBOX: the race with a phone or webmail, made certain.
    `synced`: our session hears of the expunge before the command (as it does when any command
    between, a flag STORE of the same rule, gets the untagged EXPUNGE)."""

    def __init__(self, session: ImapSession, other: ImapSession, doomed: int, synced: bool) -> None:
        super().__init__(session)
        self.other = other
        self.doomed: int | None = doomed
        self.synced = synced

    def _expunge(self) -> None:
        if self.doomed is not None:
            self.other.select("INBOX")
            self.other.store_flags([self.doomed], ["\\Deleted"], True)
            self.other.expunge_uids([self.doomed])
            self.doomed = None
            if self.synced:
                self.session.noop()

    def move(self, uids: Sequence[int], dest: str, *, create: bool) -> tuple[int | None, dict[int, int]]:
        self._expunge()
        return super().move(uids, dest, create=create)

    def copy(self, uids: Sequence[int], dest: str, *, create: bool) -> tuple[int | None, dict[int, int]]:
        self._expunge()
        return super().copy(uids, dest, create=create)


@pytest.mark.parametrize("synced", [True, False], ids=["synced", "unsynced"])
@pytest.mark.parametrize("action", ["move", "copy"])
def test_a_message_expunged_before_the_command_is_journalled_skipped(
    server_account: ConnectionParams,
    tmp_path: Path,
    action: str,
    synced: bool,
    request: pytest.FixtureRequest,
) -> None:
    """Cyrus answers OK and COPYUID for the others; so does Dovecot once our session knows of the
    expunge, but before that it refuses the whole command (NO [EXPUNGEISSUED], nothing moved):
    every message fails, a move is tried again later, a copy's intents are released."""
    params = server_account
    refused = request.node.callspec.params["server_account"] == "dovecot" and not synced
    rules = f'rule "race" {{ when subject contains "race" then {action} to "Done" }}\n'
    with ImapSession.connect(params) as s:
        s.create("Done")
        uids = []
        for i in range(3):
            got = s.append("INBOX", make_message(f"race {i}"))
            assert got is not None
            uids.append(got[1])
    state = StateStore.open(tmp_path / "state.db")
    run_id = state.begin_run("run", False)
    now = dt.datetime.now(dt.UTC)
    with ImapSession.connect(params) as s, ImapSession.connect(params) as other:
        store = RacingStore(s, other, doomed=uids[1], synced=synced)
        report = Engine(RunOptions(now, dt.UTC, run_id), journal=state).process(
            store, AccountContext("main"), "INBOX", rules_of(rules)
        )
    rows = sorted((e.uid, e.outcome, e.error, e.new_uid is not None) for e in state.run_entries(run_id))
    assert not state.pending_intents()  # a copy's intents of what was not copied: released
    state.close()
    done = next(v for k, v in snapshot(params).items() if k.rsplit(".", 1)[-1] == "Done")
    if refused:
        assert [(uid, outcome) for uid, outcome, _, _ in rows] == [(u, "failed") for u in uids]
        assert all("EXPUNGEISSUED" in (error or "") for _, _, error, _ in rows)
        assert not done.messages
        assert report.retry == (uids if action == "move" else [])  # tried again later: a MOVE can be
        return
    assert rows == [
        (uids[0], "ok", None, True),
        (uids[1], "skipped", VANISHED, False),
        (uids[2], "ok", None, True),
    ]
    assert report.rules[0].outcomes[f"{action} ok"] == 2
    assert report.rules[0].outcomes[f"{action} skipped"] == 1
    assert len(done.messages) == 2

    config = write_config(tmp_path, params, rules)
    logged = CliRunner().invoke(main, ["log", "--config", str(config), "--rule", "race"])
    assert logged.exit_code == 0, logged.output
    lines = [ln for ln in logged.stdout.splitlines() if f"uid={uids[1]} " in ln]
    assert len(lines) == 1 and lines[0].endswith(f'{action} to "Done": skipped ({VANISHED})'), logged.stdout
