"""SQLite schema migrations: a database of an earlier mailrules opens and migrates, every step is
recorded once in schema_migrations, and two processes opening a new file do not race."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailrules.state import SCHEMA_VERSION, Checkpoint, JournalEntry, StateStore, intent_key
from mailrules.state.schema import MIGRATIONS, migrate, schema_version

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "state"
T = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)


def steps(path: Path) -> list[tuple[int, str | None]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version").fetchall()
    finally:
        conn.close()


def schema_of(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()


def test_a_database_of_the_previous_release_opens_migrates_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript((FIXTURES / "v2.sql").read_text())
    conn.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (2,)

    with StateStore.open(path) as s:
        (run,) = s.runs()
        assert run.run_id == "20260501T100000-abc123" and run.summary == {"stopped": "signal"}
        assert [(e.uid, e.action) for e in s.run_entries(run.run_id)] == [(42, "move"), (43, "forward")]
        key = intent_key("work", "INBOX", 7, 43, "boss", "forward", "me@example.org")
        assert s.is_confirmed(key) and s.pending_intents() == []
        assert s.get_checkpoint("work", "INBOX") == Checkpoint(7, 43, None, T)
        assert s.undo_plan(run.run_id).moves[0].source.uid == 500
        s.set_retries("work", "INBOX", 7, {44: 1})  # the new table
        assert s.get_retries("work", "INBOX", 7) == {44: 1}

    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    recorded = steps(path)
    # the steps applied before the table existed have no time; the new ones do
    assert [v for v, _ in recorded] == list(range(1, SCHEMA_VERSION + 1))
    assert [at for _, at in recorded[:2]] == [None, None]
    assert all(at is not None and datetime.fromisoformat(at).tzinfo is not None for _, at in recorded[2:])


def test_a_new_database_records_every_step_and_a_reopen_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore.open(path).close()
    recorded = steps(path)
    assert [v for v, _ in recorded] == list(range(1, len(MIGRATIONS) + 1))
    assert all(at is not None for _, at in recorded)
    schema = schema_of(path)
    tables = {"runs", "journal", "intents", "checkpoints", "retries", "schema_migrations"}
    assert tables <= {n for n, _ in schema}
    StateStore.open(path).close()
    assert steps(path) == recorded and schema_of(path) == schema


def test_stores_opening_a_new_file_together_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_() -> None:
        start.wait()
        try:
            StateStore.open(path).close()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [v for v, _ in steps(path)] == list(range(1, SCHEMA_VERSION + 1))


def journal_indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'journal'")
        return {r[0] for r in rows if not r[0].startswith("sqlite_")}
    finally:
        conn.close()


def test_step_5_drops_the_rule_and_account_indexes_and_log_still_filters(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, MIGRATIONS[:4])  # a database of the release before step 5
    conn.close()
    kept = {"journal_run", "journal_message_id", "journal_message", "journal_at"}
    assert journal_indexes(path) == kept | {"journal_rule", "journal_account"}
    with StateStore.open(path) as s:
        run = s.begin_run("run", False, now=T)
        rows = [
            JournalEntry(run, rule, "rules.d/a.rules:1", account, "INBOX", 7, uid, f"<{uid}@x>", "move",
                         "", "Lists", None, None, "ok", None, T + timedelta(seconds=uid // 2))
            for uid, rule, account in [(1, "a", "work"), (2, "b", "home"), (3, "a", "home"), (4, "a", "work")]
        ]  # fmt: skip
        s.record_many(rows)
    assert journal_indexes(path) == kept
    assert [v for v, _ in steps(path)] == list(range(1, SCHEMA_VERSION + 1))
    with StateStore.open(path) as s:
        assert [e.uid for e in s.find(rule="a")] == [4, 3, 1]  # newest first, equal times by id
        assert [e.uid for e in s.find(account="home")] == [3, 2]
        assert [e.uid for e in s.find(rule="a", account="work", limit=1)] == [4]
        assert [e.uid for e in s.find()] == [4, 3, 2, 1]
        assert s.find(rule="nothing") == []
        assert [e.uid for e in s.find(rule="a", message_id="<3@x>")] == [3]
        assert [e.uid for e in s.find(run_id=run, account="work")] == [4, 1]


def test_log_filters_by_rule_or_account_walk_the_time_index(tmp_path: Path) -> None:
    """Not journal_message for an account: it would read and sort every row of the account."""
    with StateStore.open(tmp_path / "state.db") as s:
        traced: list[str] = []
        s._conn.set_trace_callback(traced.append)
        s.find()
        s.find(account="work")
        s.find(rule="a", account="work")
        s.find(message_id="<1@x>")
        s._conn.set_trace_callback(None)
        plans = [
            " ".join(str(r[-1]) for r in s._conn.execute(f"EXPLAIN QUERY PLAN {q}"))
            for q in traced
            if q.startswith("SELECT")
        ]
    assert [p.split(" (")[0] for p in plans] == [
        "SCAN journal USING INDEX journal_at",
        "SCAN journal USING INDEX journal_at",
        "SCAN journal USING INDEX journal_at",
        "SEARCH journal USING INDEX journal_message_id",
    ]


def test_the_pending_steps_go_in_one_transaction_and_a_failing_one_leaves_none(tmp_path: Path) -> None:
    """One COMMIT (one fdatasync with synchronous=FULL) for a new file, not one per step."""
    conn = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    traced: list[str] = []
    conn.set_trace_callback(traced.append)
    assert migrate(conn) == SCHEMA_VERSION
    assert traced.count("COMMIT") == 1 and migrate(conn) == SCHEMA_VERSION
    assert traced.count("BEGIN IMMEDIATE") == 1  # at the latest version: no write lock taken
    conn.close()

    broken = (*MIGRATIONS, "CREATE TABLE extra (x INTEGER); CREATE TABLE journal (x INTEGER);")
    conn = sqlite3.connect(tmp_path / "broken.db", isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        migrate(conn, broken)
    assert schema_version(conn) == 0
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    conn.close()
