"""Hostile mail and a fragile state through the command line on Dovecot: forged log lines, broken or
full state files, two processes on one state."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailrules.accounts import Account
from mailrules.cli import main
from mailrules.daemon.watcher import MailboxWatcher, WatchContext, WatchHooks
from mailrules.imap.session import ConnectionParams
from mailrules.logs import UNSAFE
from mailrules.state.models import JournalEntry
from mailrules.state.store import StateStore
from tests.integration.helpers import append, load, snapshot, write_config
from tests.integration.servers import DovecotServer, make_message
from tests.integration.test_daemon import Running

pytestmark = pytest.mark.integration

#: A record's first line in the text log.
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
FAKE_STAMP = "1999-01-01 00:00:00,000"
#: The Message-ID decodes (RFC 2047) to `<x@y>` CR LF and a record of our own making.
FORGED = (
    b"From: a@example.com\r\n"
    b"To: me@example.com\r\n"
    b"Subject: invoice\r\n"
    b"Message-ID: =?utf-8?q?=3Cx=40y=3E=0D=0A1999-01-01_00:00:00,000_ERROR_mailrules:_FAKE?=\r\n"
    b"Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n"
    b"\r\nbody\r\n"
)


def mailrules(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailrules", *args], capture_output=True, text=True, timeout=120
    )


def test_a_forged_message_id_cannot_add_a_log_line(account: ConnectionParams, tmp_path: Path) -> None:
    assert not any(append(account, "INBOX", [(FORGED, [], None)]))
    rules = 'rule "r" { when subject is "invoice" then flag, copy to "Copies" }'
    config = write_config(tmp_path, account, rules)
    for fmt in ("text", "json"):
        # -v: the lines per message and action are DEBUG (house style 10)
        ran = mailrules("run", "-v", "--config", str(config), "--log-format", fmt)
        assert ran.returncode == 0, ran.stderr
        lines = ran.stderr.splitlines()
        forged = [ln for ln in lines if "FAKE" in ln]
        if fmt == "text":
            assert all(RECORD.match(ln) for ln in lines), ran.stderr
            assert not any(ln.startswith(FAKE_STAMP) for ln in lines)
            # the first run flags and copies; the second finds both done: two action lines each time
            assert len(forged) == 2, ran.stderr
            assert all(f"message-id=<x@y>\\r\\n{FAKE_STAMP} ERROR mailrules: FAKE" in ln for ln in forged)
        else:
            assert len(forged) == 2 and all(ln.startswith("{") and ln.endswith("}") for ln in lines)
    assert len(snapshot(account)["Copies"].messages) == 1

    db = sqlite3.connect(tmp_path / "state.db")
    rows = db.execute("SELECT message_id, detail, destination, error FROM journal").fetchall()
    assert len(rows) == 4  # flag ok, copy ok; flag skipped (already so), copy skipped (journal)
    for row in rows:
        assert all(v is None or not any(c in UNSAFE for c in v) for v in row), row
        assert row[0] == f"<x@y>\\r\\n{FAKE_STAMP} ERROR mailrules: FAKE"
    logged = mailrules("log", "--config", str(config))
    assert logged.returncode == 0 and len([ln for ln in logged.stdout.splitlines() if "FAKE" in ln]) == 4


# -- a state that fills up ----------------------------------------------------------------------------


def long_id_message(subject: str, n: int) -> bytes:
    """A message whose journal row needs pages of its own (a 3,000-character Message-ID)."""
    raw = make_message(subject, f"body {n}\r\n")
    return re.sub(rb"Message-ID: <[^>]+>", f"Message-ID: <{n}.{'x' * 3000}@example.com>".encode(), raw)


COPY_RULE = 'rule "c" { when subject contains "copy me" then copy to "Copies" }'


def twenty() -> list[tuple[bytes, list[str], None]]:
    return [(long_id_message("copy me", i), [], None) for i in range(20)]


class FullAtJournal(StateStore):
    """While `full`, the disk fills up just before a journal row is written (after the copy)."""

    full = True

    def record_many(self, entries: Iterable[JournalEntry]) -> None:
        if self.full:
            pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
            self._conn.execute(f"PRAGMA max_page_count = {pages}")
        else:
            self._conn.execute("PRAGMA max_page_count = 1073741823")
        super().record_many(entries)


class Hooks(WatchHooks):
    def __init__(self) -> None:
        self.state_errors = 0
        self.syncs = 0

    def state_error(self, account: str) -> None:
        self.state_errors += 1

    def synced(self, account: str, mailbox: str) -> None:
        self.syncs += 1


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_full_state_stops_the_watcher_and_its_restarts_never_copy_again(
    account: ConnectionParams, tmp_path: Path
) -> None:
    config = write_config(tmp_path, account, COPY_RULE)
    settings, rules = load(config)
    assert isinstance(settings.state, Path)  # a SQLite file
    opened = StateStore.open(settings.state, lock="mailrules daemon")
    state = FullAtJournal(opened._conn, opened.path, opened._flock)
    hooks = Hooks()
    ctx = WatchContext(
        state=state,
        tz=dt.UTC,
        rules=lambda: rules,
        lock_for=lambda a, m: threading.Lock(),
        hooks=hooks,
        run_id=state.begin_run("daemon", False),
    )
    watcher = MailboxWatcher(Account(settings.accounts["main"]), "INBOX", ctx)
    watcher.start()
    try:
        wait_for(lambda: state.get_checkpoint("main", "INBOX") is not None, "the first sync")
        start = state.get_checkpoint("main", "INBOX")
        assert start is not None
        assert not any(append(account, "INBOX", twenty()))
        wait_for(lambda: hooks.state_errors >= 4, "four failed attempts (the first and three restarts)")
        # /readyz says why the watcher does nothing (Daemon.ready): the state's error, not "not connected"
        assert watcher.problem is not None and "database or disk is full" in watcher.problem
        copies = len(snapshot(account)["Copies"].messages)
        assert copies == 20  # made once, before the journal failed; never again by a restart
        assert state.get_checkpoint("main", "INBOX") == start  # the batch was not passed over
        assert state.pending_intents() == []  # each copy is known done (confirmed)
        FullAtJournal.full = False  # room again: the next attempt journals and moves on
        wait_for(lambda: state.get_checkpoint("main", "INBOX") != start, "the checkpoint to move on")
        wait_for(lambda: watcher.problem is None, "the problem to clear")
        after = snapshot(account)
        assert len(after["Copies"].messages) == 20 and len(after["INBOX"].messages) == 20
        rows = [e for e in state.find(limit=100) if e.action == "copy"]
        assert len(rows) == 20 and {e.error for e in rows} == {"already copied (journal)"}
    finally:
        FullAtJournal.full = True
        watcher.stop()
        watcher.join(15)
        state.close()


def test_a_run_whose_state_fills_up_stops_and_exits_1(
    account: ConnectionParams, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not any(append(account, "INBOX", twenty()))
    config = write_config(tmp_path, account, COPY_RULE)
    plain_open = StateStore.open

    def capped(path: str | Path, *, lock: str | None = None) -> StateStore:
        store = plain_open(path, lock=lock)
        store.begin_run("earlier", False)
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages + 1}")
        return store

    monkeypatch.setattr(StateStore, "open", capped)
    ran = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert ran.exit_code == 1, ran.output
    assert f"mailrules: state {tmp_path / 'state.db'}: cannot record" in ran.stderr
    assert "database or disk is full" in ran.stderr and "the run stopped there" in ran.stderr
    assert "Traceback" not in ran.output
    assert "Copies" not in snapshot(account)  # nothing was copied without its intent


# -- two processes on one state ----------------------------------------------------------------------


def test_a_second_daemon_or_a_run_on_the_same_state_says_who_holds_it(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    user, pw = dovecot.fresh_user()
    d = Running(tmp_path, dovecot, user, pw, None)
    d.start()
    try:
        assert d.proc is not None
        holder = f"is in use by pid {d.proc.pid} (mailrules daemon, since "
        ran = mailrules("run", "--config", str(d.config))
        assert ran.returncode == 75 and holder in ran.stderr, ran.stderr
        second = mailrules("daemon", "--config", str(d.config))
        assert second.returncode == 75 and holder in second.stderr, second.stderr
        assert mailrules("run", "--dry-run", "--config", str(d.config)).returncode == 0  # reads only
        assert mailrules("log", "--config", str(d.config)).returncode == 0
        doctor = mailrules("doctor", "--json", "--config", str(d.config))
        rows = {r["check"]: r for r in json.loads(doctor.stdout)["general"]}
        assert rows["state lock"]["status"] == "INFO"
        assert rows["state lock"]["result"].startswith(f"held by pid {d.proc.pid} (mailrules daemon")
        assert rows["state file"]["status"] == "OK" and "mode 0600" in rows["state file"]["result"]
    finally:
        assert d.stop() == 0
    assert mailrules("run", "--config", str(d.config)).returncode == 0  # free once it stopped
