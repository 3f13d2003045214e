"""SQLite schema migrations: a database of an earlier mailrules opens and migrates, every step is
recorded once in schema_migrations, and two processes opening a new file do not race."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from mailrules.state import SCHEMA_VERSION, Checkpoint, StateStore, intent_key
from mailrules.state.schema import MIGRATIONS

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
