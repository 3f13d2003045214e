"""The state store: schema and migrations, runs, journal, transactions, intents, checkpoints."""

from __future__ import annotations

import re
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from mailrules.state import (
    SCHEMA_VERSION,
    Checkpoint,
    JournalEntry,
    StateError,
    StateStore,
    intent_key,
    migrate,
)
from mailrules.state.rows import JOURNAL_COLUMNS, ROWS_PER_INSERT, entry_row, journal_inserts

T0 = datetime(2026, 11, 26, 15, 8, 12, tzinfo=UTC)


def entry(run_id: str, **changes: object) -> JournalEntry:
    base = JournalEntry(
        run_id=run_id,
        rule="lists",
        rule_span="rules.d/20-lists.rules:12",
        account="work",
        mailbox="INBOX",
        uidvalidity=7,
        uid=100,
        message_id="<a@example.com>",
        action="move",
        detail="",
        destination="Lists",
        new_uidvalidity=9,
        new_uid=500,
        outcome="ok",
        error=None,
        at=T0,
    )
    return base._replace(**changes)  # type: ignore[arg-type]


@pytest.fixture
def store() -> StateStore:
    return StateStore.open(":memory:")


def test_open_creates_parent_dir_schema_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "state.db"
    with StateStore.open(path):
        pass
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "journal", "intents", "checkpoints"} <= tables


def test_reopen_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore.open(path) as s:
        run = s.begin_run("manual", dry_run=False)
        s.record(entry(run))
    schema = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    with StateStore.open(path) as s:
        assert len(s.find(run_id=run)) == 1
    assert sqlite3.connect(path).execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == schema


def test_migrate_runs_only_pending_steps_in_order() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    assert migrate(conn, ["CREATE TABLE a (x INTEGER);"]) == 1
    steps = ["CREATE TABLE a (x INTEGER);", "ALTER TABLE a ADD COLUMN y TEXT; CREATE TABLE b (z INTEGER);"]
    assert migrate(conn, steps) == 2  # step 1 is not re-run (it would fail: table a exists)
    assert migrate(conn, steps) == 2
    assert [r[1] for r in conn.execute("PRAGMA table_info(a)")] == ["x", "y"]


def test_failed_migration_step_rolls_back_and_keeps_version() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn, ["CREATE TABLE a (x INTEGER);"])
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, ["CREATE TABLE a (x INTEGER);", "CREATE TABLE c (x); CREATE TABLE a (x);"])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'c'").fetchone() is None


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StateError, match="newer"):
        StateStore.open(path)


def test_run_ids_are_short_and_sortable(store: StateStore) -> None:
    first = store.begin_run("idle", dry_run=False, now=T0)
    second = store.begin_run("schedule", dry_run=True, now=T0 + timedelta(seconds=1))
    assert re.fullmatch(r"20261126T150812-[0-9a-f]{6}", first)
    assert first < second
    store.record_many([entry(first), entry(first, uid=101)])
    store.end_run(first, {"moved": 2}, now=T0 + timedelta(seconds=5))
    runs = store.runs(10)
    assert [r.run_id for r in runs] == [second, first]
    assert runs[0].dry_run and runs[0].ended_at is None and runs[0].summary is None
    assert runs[1].trigger == "idle" and runs[1].summary == {"moved": 2} and runs[1].entries == 2
    assert runs[1].ended_at == T0 + timedelta(seconds=5)
    assert store.runs(1) == runs[:1]


def test_end_of_unknown_run_is_an_error(store: StateStore) -> None:
    with pytest.raises(StateError, match="unknown run"):
        store.end_run("nope", {})


def test_journal_round_trip(store: StateStore) -> None:
    run = store.begin_run("manual", dry_run=False)
    original = entry(run, at=T0.astimezone(timezone(timedelta(hours=2))), error=None, message_id=None)
    store.record(original)
    (back,) = store.find(run_id=run)
    assert back == original  # equal instants compare equal across time zones
    assert back.at.tzinfo is not None


def test_journal_rejects_naive_time_and_bad_outcome(store: StateStore) -> None:
    run = store.begin_run("manual", dry_run=False)
    with pytest.raises(ValueError, match="timezone"):
        store.record(entry(run, at=datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="outcome"):
        store.record(entry(run, outcome="maybe"))
    assert store.find() == []


def test_journal_needs_a_known_run(store: StateStore) -> None:
    with pytest.raises(StateError, match="cannot record the journal: FOREIGN KEY") as raised:
        store.record(entry("no-such-run"))
    assert isinstance(raised.value.__cause__, sqlite3.IntegrityError)


def test_journal_is_append_only(store: StateStore) -> None:
    run = store.begin_run("manual", dry_run=False)
    store.record(entry(run))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._conn.execute("UPDATE journal SET outcome = 'failed'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store._conn.execute("DELETE FROM journal")


def test_find_filters_and_orders_newest_first(store: StateStore) -> None:
    r1 = store.begin_run("manual", dry_run=False)
    r2 = store.begin_run("manual", dry_run=False)
    store.record_many(
        [
            entry(r1, uid=1, at=T0),
            entry(r1, uid=2, at=T0 + timedelta(minutes=2), rule="spam", message_id="<s@x>"),
            entry(r2, uid=3, at=T0 + timedelta(minutes=1), account="home"),
            entry(r2, uid=4, at=T0 + timedelta(minutes=1)),  # same instant: later insert first
        ]
    )
    assert [e.uid for e in store.find()] == [2, 4, 3, 1]
    assert [e.uid for e in store.find(rule="lists")] == [4, 3, 1]
    assert [e.uid for e in store.find(message_id="<s@x>")] == [2]
    assert [e.uid for e in store.find(run_id=r2)] == [4, 3]
    assert [e.uid for e in store.find(account="work", run_id=r2)] == [4]
    assert [e.uid for e in store.find(limit=2)] == [2, 4]
    assert [e.uid for e in store.run_entries(r2)] == [3, 4]


def test_transaction_rollback_leaves_no_half_batch(store: StateStore) -> None:
    run = store.begin_run("idle", dry_run=False)
    store.set_checkpoint("work", "INBOX", Checkpoint(7, 99, None, T0))
    with pytest.raises(RuntimeError), store.transaction():
        store.record_many([entry(run, uid=100), entry(run, uid=101)])
        store.set_checkpoint("work", "INBOX", Checkpoint(7, 101, 55, T0))
        raise RuntimeError("connection lost")
    assert store.find() == []
    assert store.get_checkpoint("work", "INBOX") == Checkpoint(7, 99, None, T0)


def test_record_many_is_atomic_on_a_bad_row(store: StateStore) -> None:
    run = store.begin_run("idle", dry_run=False)
    with pytest.raises(StateError, match="FOREIGN KEY"):
        store.record_many([entry(run, uid=1), entry("unknown-run", uid=2)])
    assert store.find() == []


def test_record_many_over_several_insert_statements_keeps_every_row_in_order(store: StateStore) -> None:
    run = store.begin_run("manual", dry_run=False)
    n = 2 * ROWS_PER_INSERT + 7  # three INSERT statements: full, full, 7 rows
    batch = [
        entry(run, uid=i, message_id=None if i % 3 else f"<{i}@x>", new_uid=i + 1000 if i % 2 else None)
        for i in range(1, n + 1)
    ]
    statements = list(journal_inserts(batch))
    assert [len(params) for _, params in statements] == [
        ROWS_PER_INSERT * len(JOURNAL_COLUMNS),
        ROWS_PER_INSERT * len(JOURNAL_COLUMNS),
        7 * len(JOURNAL_COLUMNS),
    ]
    # the parameters are the rows of entry_row, one after the other
    assert [p for _, params in statements for p in params] == [v for e in batch for v in entry_row(e)]
    store.record_many(batch)
    assert store.run_entries(run) == batch
    ids = [row[0] for row in store._conn.execute("SELECT id FROM journal ORDER BY uid")]
    assert ids == sorted(ids) and len(ids) == n


def test_record_many_is_atomic_when_a_later_statement_fails(store: StateStore) -> None:
    run = store.begin_run("idle", dry_run=False)
    batch = [entry(run, uid=i) for i in range(ROWS_PER_INSERT + 5)] + [entry("unknown-run", uid=999)]
    with pytest.raises(StateError, match="FOREIGN KEY"):
        store.record_many(batch)
    assert store.find() == []


def test_transaction_commits_batch_with_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore.open(path) as s:
        run = s.begin_run("idle", dry_run=False)
        with s.transaction():
            s.record_many([entry(run, uid=100), entry(run, uid=101)])
            s.set_checkpoint("work", "INBOX", Checkpoint(7, 101, 55, T0))
    with StateStore.open(path) as s:
        assert len(s.find(run_id=run)) == 2
        assert s.get_checkpoint("work", "INBOX") == Checkpoint(7, 101, 55, T0)


def test_nested_transaction_is_a_savepoint(store: StateStore) -> None:
    run = store.begin_run("idle", dry_run=False)
    with store.transaction():
        store.record(entry(run, uid=1))
        with pytest.raises(KeyError), store.transaction():
            store.record(entry(run, uid=2))
            raise KeyError("inner")
        store.record(entry(run, uid=3))
    assert [e.uid for e in store.run_entries(run)] == [1, 3]


def test_transaction_excludes_other_threads(store: StateStore) -> None:
    run = store.begin_run("idle", dry_run=False)
    inside = threading.Event()
    release = threading.Event()
    seen: list[int] = []

    def other() -> None:
        inside.wait()
        store.record(entry(run, uid=99))  # must wait for the batch to finish
        seen.append(len(store.find(run_id=run)))

    t = threading.Thread(target=other)
    t.start()
    with store.transaction():
        store.record(entry(run, uid=1))
        inside.set()
        release.wait(0.2)
        store.record(entry(run, uid=2))
    t.join()
    assert [e.uid for e in store.run_entries(run)] == [1, 2, 99]
    assert seen == [3]


def test_checkpoints(store: StateStore) -> None:
    assert store.get_checkpoint("work", "INBOX") is None
    store.set_checkpoint("work", "INBOX", Checkpoint(7, 10, None, T0))
    store.set_checkpoint("work", "Lists", Checkpoint(8, 3, 12, T0))
    store.set_checkpoint("work", "INBOX", Checkpoint(7, 20, 40, T0 + timedelta(hours=1)))
    assert store.get_checkpoint("work", "INBOX") == Checkpoint(7, 20, 40, T0 + timedelta(hours=1))
    assert store.get_checkpoint("work", "Lists") == Checkpoint(8, 3, 12, T0)
    assert store.get_checkpoint("home", "INBOX") is None


def test_a_checkpoint_never_moves_backwards(tmp_path: Path) -> None:
    """Two writers on one state (a slow batch finishing after a faster one): the higher UID stays;
    only a new UIDVALIDITY may lower it."""
    path = tmp_path / "state.db"
    with StateStore.open(path) as a, StateStore.open(path) as b:
        a.set_checkpoint("work", "INBOX", Checkpoint(7, 100, None, T0))
        b.set_checkpoint("work", "INBOX", Checkpoint(7, 200, None, T0 + timedelta(minutes=1)))
        a.set_checkpoint("work", "INBOX", Checkpoint(7, 150, None, T0 + timedelta(minutes=2)))
        assert a.get_checkpoint("work", "INBOX") == Checkpoint(7, 200, None, T0 + timedelta(minutes=1))
        # the same UID refreshes it
        a.set_checkpoint("work", "INBOX", Checkpoint(7, 200, 9, T0 + timedelta(minutes=3)))
        assert b.get_checkpoint("work", "INBOX") == Checkpoint(7, 200, 9, T0 + timedelta(minutes=3))
        b.set_checkpoint("work", "INBOX", Checkpoint(8, 5, None, T0 + timedelta(minutes=4)))  # renumbered
        assert a.get_checkpoint("work", "INBOX") == Checkpoint(8, 5, None, T0 + timedelta(minutes=4))
        a.set_checkpoint("work", "INBOX", Checkpoint(8, 4, None, T0 + timedelta(minutes=5)))
        assert a.get_checkpoint("work", "INBOX") == Checkpoint(8, 5, None, T0 + timedelta(minutes=4))


# -- intents --------------------------------------------------------------------------------


def test_intent_key_is_stable_and_covers_redirect() -> None:
    fwd = intent_key("work", "INBOX", 7, 100, "boss", "forward", "Me@Example.com")
    assert fwd == "work/INBOX/7/100/boss/forward/me@example.com"
    assert intent_key("work", "INBOX", 7, 100, "boss", "redirect", "me@example.com") != fwd
    # a slash inside a name cannot shift the parts
    assert intent_key("w", "a/7", 1, 2, "r", "forward", "x@y.z") != intent_key(
        "w", "a", 7, 1, "2/r", "forward", "x@y.z"
    )
    assert intent_key("w", "Lists/py", 1, 2, "r", "forward", "x@y.z") == "w/Lists%2Fpy/1/2/r/forward/x@y.z"


def test_intent_then_confirm_is_not_repeatable(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    key = intent_key("work", "INBOX", 7, 100, "boss", "forward", "me@example.com")
    with StateStore.open(path) as s:
        run = s.begin_run("idle", dry_run=False)
        e = entry(run, action="forward", detail="me@example.com", destination=None)
        assert s.intent(key, e) is True  # go ahead
        s.confirm(key)
        assert s.is_confirmed(key)
        assert s.intent(key, e) is False
    with StateStore.open(path) as s:  # after a restart, too
        assert s.intent(key, e) is False
        assert s.pending_intents() == []
        assert s.release(key) is False  # a confirmed intent cannot be released


def test_crash_between_intent_and_confirm_is_reported_not_resent(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    key = intent_key("work", "INBOX", 7, 100, "boss", "redirect", "me@example.com")
    s = StateStore.open(path)
    run = s.begin_run("idle", dry_run=False)
    e = entry(run, action="redirect", detail="me@example.com", destination=None)
    assert s.intent(key, e, now=T0) is True
    s._conn.close()  # the process dies here: the mail may or may not have left
    with StateStore.open(path) as s:
        assert s.intent(key, e) is False  # at most once: not sent again automatically
        (pending,) = s.pending_intents()
        assert pending.key == key and pending.entry == e and pending.created_at == T0
        assert pending.confirmed_at is None
        assert not s.is_confirmed(key)
        # an operator who knows it did not leave releases it; the next run may send
        assert s.release(key) is True
        assert s.pending_intents() == []
        assert s.intent(key, e) is True


def test_confirm_unknown_intent_is_an_error(store: StateStore) -> None:
    with pytest.raises(StateError):
        store.confirm("nope")


def test_intent_is_refused_inside_a_transaction(store: StateStore) -> None:
    run = store.begin_run("idle", dry_run=False)
    e = entry(run, action="forward", detail="a@b.c")
    with pytest.raises(StateError, match="outside transaction"), store.transaction():
        store.intent("k", e)
    assert store.intent("k", e) is True


def test_confirm_commits_with_the_journal_entry(store: StateStore) -> None:
    run = store.begin_run("idle", dry_run=False)
    e = entry(run, action="forward", detail="a@b.c")
    assert store.intent("k", e)
    with pytest.raises(RuntimeError), store.transaction():
        store.confirm("k")
        store.record(e)
        raise RuntimeError
    assert not store.is_confirmed("k") and store.find() == []
    with store.transaction():
        store.confirm("k")
        store.record(e)
    assert store.is_confirmed("k") and store.find() == [e]
