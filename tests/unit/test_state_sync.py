"""The SQLite state's disk syncs: only what must be on disk before a side effect (an intent, a
claim) commits under synchronous=FULL; everything else under NORMAL, which in WAL mode still
survives the death of the process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailrules.state import Checkpoint, JournalEntry, StateError, StateStore

T0 = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
NORMAL, FULL = 1, 2  # PRAGMA synchronous's answers


def entry(run_id: str, uid: int, action: str = "copy") -> JournalEntry:
    fields = ("r", "r.rules:1", "work", "INBOX", 7, uid, f"<{uid}@t>", action, "", "Keep")
    return JournalEntry(run_id, *fields, None, None, "ok", None, T0)


def commit_levels(store: StateStore, work: Callable[[], object]) -> list[int]:
    """The synchronous level in force at each COMMIT `work` makes (read as the COMMIT starts)."""
    conn = store._conn
    seen: list[int] = []

    def traced(statement: str) -> None:
        if statement == "COMMIT":
            seen.append(int(conn.execute("PRAGMA synchronous").fetchone()[0]))

    conn.set_trace_callback(traced)
    try:
        work()
    finally:
        conn.set_trace_callback(None)
    return seen


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore.open(tmp_path / "state.db")


def test_only_intents_and_claims_commit_under_full(store: StateStore) -> None:
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == NORMAL  # after open
    run = store.begin_run("run", False, now=T0)
    rows = [entry(run, uid) for uid in range(1, 4)]
    keys = [f"k{e.uid}" for e in rows]
    # a claim before a COPY, then the journal rows, confirms and releases after it
    assert commit_levels(store, lambda: store.claim(list(zip(keys, rows, strict=True)))) == [FULL]
    assert commit_levels(store, lambda: store.record_many(rows)) == [NORMAL]
    assert commit_levels(store, lambda: store.confirm_many(keys[:2])) == [NORMAL]
    assert commit_levels(store, lambda: store.release_many(keys[2:])) == [NORMAL]
    # one send: the intent before it, the confirm (with its journal row) after it
    send = entry(run, 9, "forward")
    assert commit_levels(store, lambda: store.intent("send", send)) == [FULL]

    def confirmed() -> None:
        with store.transaction():
            store.confirm("send")
            store.record(send)

    assert commit_levels(store, confirmed) == [NORMAL]
    assert commit_levels(store, lambda: store.intent("again", send)) == [FULL]
    assert commit_levels(store, lambda: store.release("again")) == [NORMAL]
    checkpoint = Checkpoint(7, 3, None, T0)
    assert commit_levels(store, lambda: store.set_checkpoint("work", "INBOX", checkpoint)) == [NORMAL]
    assert commit_levels(store, lambda: store.set_retries("work", "INBOX", 7, {2: 1})) == [NORMAL]
    assert commit_levels(store, lambda: store.end_run(run, {"ok": 1})) == [NORMAL]
    # what was written is all there, read on another connection
    with StateStore.open(store.path) as other:
        assert len(other.run_entries(run)) == 4
        assert {i.key for i in other.pending_intents()} == set()
        assert other.is_confirmed("k1") and other.is_confirmed("send") and not other.is_confirmed("k3")


def test_a_durable_transaction_cannot_be_nested(store: StateStore) -> None:
    run = store.begin_run("run", False, now=T0)
    with pytest.raises(StateError, match="cannot be nested"), store.transaction():
        store.record(entry(run, 1))
        with store.transaction(durable=True):
            pass  # never reached
    assert store.run_entries(run) == []  # the outer block rolled back too
    assert commit_levels(store, lambda: store.record(entry(run, 1))) == [NORMAL]


def test_a_failed_claim_leaves_the_next_commits_normal(store: StateStore) -> None:
    run = store.begin_run("run", False, now=T0)
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
    big = [(f"k{u}", entry(run, u)._replace(message_id="<" + "x" * 6000 + ">")) for u in range(3)]
    with pytest.raises(StateError, match="disk is full"):
        store.claim(big)
    store._conn.execute("PRAGMA max_page_count = 1073741823")  # room again
    assert commit_levels(store, lambda: store.record(entry(run, 2))) == [NORMAL]
    assert commit_levels(store, lambda: store.claim([("k", entry(run, 3))])) == [FULL]


CRASH = """
import os, signal, sys
from datetime import UTC, datetime
from mailrules.state import JournalEntry, StateStore
s = StateStore.open(sys.argv[1], lock="mailrules run")
run = s.begin_run("run", False)
s.record_many([JournalEntry(run, "r", "r.rules:1", "work", "INBOX", 7, u, None, "move", "", "Keep",
               None, None, "ok", None, datetime.now(UTC)) for u in range(1, 101)])
print(run, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close: the WAL is neither checkpointed nor synced
"""


def test_normal_commits_survive_the_death_of_the_process(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    done = subprocess.run(
        [sys.executable, "-c", CRASH, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -9, done.stderr
    with StateStore.open(path, lock="mailrules run") as s:  # the dead process's lock is gone with it
        assert [e.uid for e in s.run_entries(done.stdout.strip())] == list(range(1, 101))
