"""The PostgreSQL schema of the state and its migrations, recorded in `schema_migrations`.

Every replica migrates at start, under a session advisory lock: two replicas starting together
take turns, and the second finds the steps done. A step runs in one transaction with its row in
`schema_migrations`, so it is applied entirely or not at all. Steps only add (tables, indexes,
columns with defaults) or drop an index: replicas of the previous release keep working beside a
migrated schema until they are upgraded in turn. A schema with a step this mailrules does not know is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from mailrules.errors import StateError, StateLocked


@dataclass(frozen=True, slots=True)
class Migration:
    """Step `version` of the schema: `script` holds plain statements (no parameters)."""

    version: int
    name: str
    script: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "runs, journal, intents, checkpoints, retries", """
    CREATE TABLE runs (
        run_id      text PRIMARY KEY,
        trigger     text NOT NULL,
        dry_run     boolean NOT NULL,
        started_at  timestamptz NOT NULL,
        ended_at    timestamptz,
        summary     jsonb,
        seq         bigint GENERATED ALWAYS AS IDENTITY  -- insertion order, for equal start times
    );
    CREATE INDEX runs_started ON runs (started_at DESC, seq DESC);
    CREATE TABLE journal (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id          text NOT NULL REFERENCES runs (run_id),
        rule            text NOT NULL,
        rule_span       text NOT NULL,
        account         text NOT NULL,
        mailbox         text NOT NULL,
        uidvalidity     bigint NOT NULL,
        uid             bigint NOT NULL,
        message_id      text,
        action          text NOT NULL,
        detail          text NOT NULL,
        destination     text,
        new_uidvalidity bigint,
        new_uid         bigint,
        outcome         text NOT NULL CHECK (outcome IN ('ok', 'failed', 'skipped', 'dry-run')),
        error           text,
        at              timestamptz NOT NULL
    );
    CREATE INDEX journal_run ON journal (run_id, id);
    CREATE INDEX journal_rule ON journal (rule, at);
    CREATE INDEX journal_message_id ON journal (message_id, at);
    CREATE INDEX journal_account ON journal (account, at);
    CREATE INDEX journal_at ON journal (at);
    CREATE INDEX journal_message ON journal (account, mailbox, uidvalidity, uid);
    -- the journal is append-only: history that can be rewritten cannot be trusted for undo
    CREATE FUNCTION journal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'the journal is append-only'; END $$;
    CREATE TRIGGER journal_no_change BEFORE UPDATE OR DELETE ON journal
        FOR EACH ROW EXECUTE FUNCTION journal_append_only();
    CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal
        FOR EACH STATEMENT EXECUTE FUNCTION journal_append_only();
    -- one row per side effect ever announced: the primary key is what makes a forward happen
    -- at most once across every replica (INSERT ... ON CONFLICT DO NOTHING: one wins)
    CREATE TABLE intents (
        key          text PRIMARY KEY,
        entry        jsonb NOT NULL,
        account      text GENERATED ALWAYS AS (entry ->> 'account') STORED,
        created_at   timestamptz NOT NULL,
        confirmed_at timestamptz
    );
    CREATE INDEX intents_pending ON intents (created_at) WHERE confirmed_at IS NULL;
    CREATE INDEX intents_sends ON intents (account, created_at);
    CREATE TABLE checkpoints (
        account       text NOT NULL,
        mailbox       text NOT NULL,
        uidvalidity   bigint NOT NULL,
        last_uid      bigint NOT NULL,
        highestmodseq bigint,
        updated_at    timestamptz NOT NULL,
        PRIMARY KEY (account, mailbox)
    );
    CREATE TABLE retries (
        account     text NOT NULL,
        mailbox     text NOT NULL,
        uidvalidity bigint NOT NULL,
        uid         bigint NOT NULL,
        tries       integer NOT NULL CHECK (tries > 0),
        PRIMARY KEY (account, mailbox, uid)
    );
    """),
    Migration(2, "leases and replicas (several daemons sharing the accounts)", """
    -- state/leases.py and docs/dev/leases.md: one row per account ever owned; `token` grows by
    -- one at each acquisition and fences every write of the holder
    CREATE TABLE leases (
        account     text PRIMARY KEY,
        owner       text,
        token       bigint NOT NULL CHECK (token > 0),
        expires_at  timestamptz NOT NULL,
        acquired_at timestamptz NOT NULL
    );
    CREATE TABLE replicas (
        replica     text PRIMARY KEY,
        incarnation text NOT NULL,
        started_at  timestamptz NOT NULL,
        seen_at     timestamptz NOT NULL
    );
    """),
    Migration(3, "flag-change marks and the MODSEQs of our own STOREs (on flag change)", """
    CREATE TABLE flag_marks (
        account       text NOT NULL,
        mailbox       text NOT NULL,
        uidvalidity   bigint NOT NULL,
        highestmodseq bigint NOT NULL,
        last_uid      bigint NOT NULL,
        PRIMARY KEY (account, mailbox)
    );
    CREATE TABLE own_modseqs (
        account     text NOT NULL,
        mailbox     text NOT NULL,
        uidvalidity bigint NOT NULL,
        uid         bigint NOT NULL,
        modseq      bigint NOT NULL,
        PRIMARY KEY (account, mailbox, uidvalidity, uid)
    );
    """),
    Migration(4, "OAuth2 tokens shared by the daemons (state/pg_tokens.py)", """
    -- one row per OAuth2 account: what its token file would hold (access and refresh token in
    -- clear, as in the 0600 file), so that whichever daemon owns the account refreshes with the
    -- refresh token the previous owner rotated
    CREATE TABLE oauth_tokens (
        account    text PRIMARY KEY,
        tokens     jsonb NOT NULL,
        updated_at timestamptz NOT NULL
    );
    """),
    Migration(5, "the journal's indexes by rule and by account go (only log's filters read them)", """
    -- every journal row inserted paid for both (bench/README.md, session 19); `mailrules log
    -- --rule/--account` walk journal_at from the newest row instead. Dropping an index leaves the
    -- replicas of the previous release working: no statement of theirs names one.
    DROP INDEX IF EXISTS journal_rule;
    DROP INDEX IF EXISTS journal_account;
    """),
)  # fmt: skip

SCHEMA_VERSION = len(MIGRATIONS)

#: pg_advisory_lock key for migrations (within the database): any fixed number no other
#: application of the same database uses; this one spells "mailrule" in ASCII.
MIGRATION_LOCK = 0x6D61696C72756C65

#: pg_advisory_lock key of `PostgresState.open(lock=...)`: one process acting on the state.
STATE_LOCK = MIGRATION_LOCK + 1

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def applied(conn: psycopg.Connection[Any]) -> list[int]:
    """The versions recorded in schema_migrations (none before the first migration)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    return [int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def migrate(conn: psycopg.Connection[Any], migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Apply the steps of `migrations` not yet recorded, in order, each in its own transaction,
    under the migration lock; return the newest version. `conn` must be in autocommit mode."""
    known = {m.version for m in migrations}
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        conn.execute(_BOOKKEEPING)
        done = set(applied(conn))
        unknown = sorted(done - known)
        if unknown:
            raise StateError(
                f"state database schema version {unknown[-1]} is newer than this mailrules knows "
                f"({max(known, default=0)})"
            )
        for step in sorted(migrations, key=lambda m: m.version):
            if step.version in done:
                continue
            with conn.transaction():
                conn.execute(step.script.encode())  # bytes: a `%` in a script is no placeholder
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (step.version, step.name)
                )
    finally:
        if not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return max(applied(conn), default=0)


def take_lock(conn: psycopg.Connection[Any], where: str) -> None:
    """Take the state's exclusive lock on `conn` for as long as it stays open, or StateLocked
    naming the session that holds it (its application_name says which command, on which host)."""
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (STATE_LOCK,)).fetchone()
    if got is not None and got[0]:
        return
    row = conn.execute(
        "SELECT a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
        "AND (l.classid::bigint << 32 | l.objid::bigint) = %s AND l.objsubid = 1",
        (STATE_LOCK,),
    ).fetchone()
    holder = "another process"
    if row is not None:
        since = row[2].isoformat(timespec="seconds") if row[2] is not None else "?"
        holder = f"{row[0] or 'another process'} (from {row[1] or 'a local socket'}, since {since})"
    raise StateLocked(
        f"state {where} is in use by {holder}: one process at a time may act on a state "
        "(stop it first, or give this one another `state`)"
    )
