"""The SQLite schema of the state store and its migrations: `PRAGMA user_version` and `schema_migrations`.

The PostgreSQL schema has its own list (state/pg_schema.py); both record each step applied in a
`schema_migrations` table (version, applied_at). Here `user_version` stays the number that decides
(a mailrules older than the table reads it to refuse a newer database); the table is kept in the
same transaction, and a database written before it existed gets rows for its earlier steps with
`applied_at` NULL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from mailrules.errors import StateError

# Each migration takes the schema from version i to i + 1. Append; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    # 1: runs, the append-only journal, intents for exactly-once side effects, checkpoints
    """
    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        trigger     TEXT NOT NULL,
        dry_run     INTEGER NOT NULL,
        started_at  TEXT NOT NULL,
        ended_at    TEXT,
        summary     TEXT
    );
    CREATE TABLE journal (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id          TEXT NOT NULL REFERENCES runs(run_id),
        rule            TEXT NOT NULL,
        rule_span       TEXT NOT NULL,
        account         TEXT NOT NULL,
        mailbox         TEXT NOT NULL,
        uidvalidity     INTEGER NOT NULL,
        uid             INTEGER NOT NULL,
        message_id      TEXT,
        action          TEXT NOT NULL,
        detail          TEXT NOT NULL,
        destination     TEXT,
        new_uidvalidity INTEGER,
        new_uid         INTEGER,
        outcome         TEXT NOT NULL CHECK (outcome IN ('ok', 'failed', 'skipped', 'dry-run')),
        error           TEXT,
        at              TEXT NOT NULL
    );
    CREATE INDEX journal_run ON journal(run_id, id);
    CREATE INDEX journal_rule ON journal(rule, at);
    CREATE INDEX journal_message_id ON journal(message_id, at);
    CREATE INDEX journal_account ON journal(account, at);
    CREATE INDEX journal_at ON journal(at);
    -- the journal is append-only: history that can be rewritten cannot be trusted for undo
    CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal
        BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
    CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal
        BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
    CREATE TABLE intents (
        key          TEXT PRIMARY KEY,
        entry        TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        confirmed_at TEXT
    );
    CREATE INDEX intents_pending ON intents(confirmed_at, created_at);
    CREATE TABLE checkpoints (
        account       TEXT NOT NULL,
        mailbox       TEXT NOT NULL,
        uidvalidity   INTEGER NOT NULL,
        last_uid      INTEGER NOT NULL,
        highestmodseq INTEGER,
        updated_at    TEXT NOT NULL,
        PRIMARY KEY (account, mailbox)
    );
    """,
    # 2: find what was already done to one message (copies are made once per rule and mailbox)
    """
    CREATE INDEX journal_message ON journal(account, mailbox, uidvalidity, uid);
    """,
    # 3: how many times the server refused a message that is to be tried again (kept across
    # restarts, and across replicas with PostgreSQL)
    """
    CREATE TABLE retries (
        account     TEXT NOT NULL,
        mailbox     TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid         INTEGER NOT NULL,
        tries       INTEGER NOT NULL CHECK (tries > 0),
        PRIMARY KEY (account, mailbox, uid)
    );
    """,
    # 4: `on flag change`: the HIGHESTMODSEQ mark of each mailbox, and the MODSEQs of our own STOREs
    """
    CREATE TABLE flag_marks (
        account       TEXT NOT NULL,
        mailbox       TEXT NOT NULL,
        uidvalidity   INTEGER NOT NULL,
        highestmodseq INTEGER NOT NULL,
        last_uid      INTEGER NOT NULL,
        PRIMARY KEY (account, mailbox)
    );
    CREATE TABLE own_modseqs (
        account     TEXT NOT NULL,
        mailbox     TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid         INTEGER NOT NULL,
        modseq      INTEGER NOT NULL,
        PRIMARY KEY (account, mailbox, uidvalidity, uid)
    );
    """,
    # 5: the journal's indexes by rule and by account go: only `mailrules log --rule/--account`
    # read them, and every row inserted paid for both (bench/README.md, session 19). Those filters
    # walk `journal_at` from the newest row (store.find); undo, `log --run-id`, `log
    # --message-id` and the copy guard keep their indexes.
    """
    DROP INDEX IF EXISTS journal_rule;
    DROP INDEX IF EXISTS journal_account;
    """,
)

#: The bookkeeping table, made with the first step this code applies (not a step itself: a
#: database of an older mailrules has its steps but not the table).
_BOOKKEEPING = "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)"

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The `user_version` of the database behind `conn`."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema up to `len(migrations)`, every step pending in one transaction (each
    recorded in schema_migrations); return the final version.

    Idempotent: a database already at the latest version is left untouched. A database written by
    a newer mailrules is refused rather than guessed at. `conn` must be in autocommit mode
    (`isolation_level=None`), since the transactions are ours. One transaction, not one per step:
    with `synchronous=FULL` each COMMIT was an fdatasync, and a new state file took one per step
    before the first connection (bench/README.md, session 19); a failing step leaves none applied.
    """
    target = len(migrations)
    if _refuse_newer(schema_version(conn), target) == target:
        return target
    # BEGIN IMMEDIATE takes the write lock first, so two processes opening the same new file
    # cannot both run the steps; the second one sees the new user_version and runs none.
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = _refuse_newer(schema_version(conn), target)
        for version in range(current, target):
            for statement in _statements(migrations[version]):
                conn.execute(statement)
            _note(conn, version + 1)
        conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return schema_version(conn)


def _refuse_newer(current: int, target: int) -> int:
    if current > target:
        raise StateError(
            f"state database schema version {current} is newer than this mailrules knows ({target})"
        )
    return current


def _note(conn: sqlite3.Connection, version: int) -> None:
    """Record step `version` in schema_migrations, and the earlier steps applied before the table."""
    conn.execute(_BOOKKEEPING)
    conn.executemany(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, NULL) ON CONFLICT DO NOTHING",
        [(v,) for v in range(1, version)],
    )
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
        (version, datetime.now(UTC).isoformat(timespec="microseconds")),
    )


def _statements(script: str) -> list[str]:
    """Split a migration script into complete statements (a trigger body holds inner semicolons).

    Not `executescript`: it commits any open transaction first, so a step would not be atomic.
    """
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    statements: list[str] = []
    buffer = ""
    for piece in "\n".join(lines).split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \n;"):
        raise StateError(f"incomplete statement in migration: {buffer.strip()[:60]!r}")
    return statements
