"""SQL the two state backends share, written once with `?` parameters (SQLite's) and translated
for psycopg by `pg()`: where SQLite and PostgreSQL agree, the statement is the same text.

Both dialects have `INSERT ... ON CONFLICT ... DO NOTHING / DO UPDATE ... WHERE` (SQLite 3.24+),
`excluded.`, and `RETURNING` (SQLite 3.35+). They differ in `IS ?` against NULL (PostgreSQL:
`IS NOT DISTINCT FROM`), in JSON access and in timestamp types (SQLite: ISO text, rows.py;
PostgreSQL: timestamptz): those statements live with their backend.
"""

from __future__ import annotations

INSERT_RUN = "INSERT INTO runs (run_id, trigger, dry_run, started_at) VALUES (?, ?, ?, ?)"
END_RUN = "UPDATE runs SET ended_at = ?, summary = ? WHERE run_id = ?"

INSERT_INTENT = "INSERT INTO intents (key, entry, created_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING"
CONFIRM_INTENT = "UPDATE intents SET confirmed_at = COALESCE(confirmed_at, ?) WHERE key = ?"
RELEASE_INTENT = "DELETE FROM intents WHERE key = ? AND confirmed_at IS NULL"
INTENT_CONFIRMED_AT = "SELECT confirmed_at FROM intents WHERE key = ?"
PENDING_INTENTS = (
    "SELECT key, entry, created_at, confirmed_at FROM intents "
    "WHERE confirmed_at IS NULL ORDER BY created_at, key"
)

SELECT_CHECKPOINT = (
    "SELECT uidvalidity, last_uid, highestmodseq, updated_at FROM checkpoints "
    "WHERE account = ? AND mailbox = ?"
)
# Never backwards: a lower UID under the same UIDVALIDITY is ignored (a slower writer must not
# make the daemon process mail again); a new UIDVALIDITY replaces it whatever its UID, since the
# old UIDs mean nothing any more (RFC 9051 §2.3.1.1).
UPSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (account, mailbox, uidvalidity, last_uid, highestmodseq, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account, mailbox) DO UPDATE SET "
    "uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, "
    "highestmodseq = excluded.highestmodseq, updated_at = excluded.updated_at "
    "WHERE excluded.uidvalidity != checkpoints.uidvalidity "
    "OR excluded.last_uid >= checkpoints.last_uid"
)

# `on flag change` (engine/flagpass.py): per mailbox, the HIGHESTMODSEQ and highest UID of the last
# look, and the MODSEQs mailrules' own STOREs gave (a message whose latest change is one of them did
# not change for anyone else); those at or below the mark are spent and go when it moves.
SELECT_FLAG_MARK = (
    "SELECT uidvalidity, highestmodseq, last_uid FROM flag_marks WHERE account = ? AND mailbox = ?"
)
UPSERT_FLAG_MARK = (
    "INSERT INTO flag_marks (account, mailbox, uidvalidity, highestmodseq, last_uid) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (account, mailbox) DO UPDATE SET uidvalidity = excluded.uidvalidity, "
    "highestmodseq = excluded.highestmodseq, last_uid = excluded.last_uid"
)
SELECT_OWN_MODSEQS = (
    "SELECT uid, modseq FROM own_modseqs WHERE account = ? AND mailbox = ? AND uidvalidity = ?"
)
SPEND_OWN_MODSEQS = (
    "DELETE FROM own_modseqs WHERE account = ? AND mailbox = ? AND (uidvalidity != ? OR modseq <= ?)"
)
UPSERT_OWN_MODSEQ = (
    "INSERT INTO own_modseqs (account, mailbox, uidvalidity, uid, modseq) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (account, mailbox, uidvalidity, uid) DO UPDATE SET modseq = CASE "
    "WHEN excluded.modseq > own_modseqs.modseq THEN excluded.modseq ELSE own_modseqs.modseq END"
)

SELECT_RETRIES = "SELECT uid, tries FROM retries WHERE account = ? AND mailbox = ? AND uidvalidity = ?"
DELETE_RETRIES = "DELETE FROM retries WHERE account = ? AND mailbox = ?"
INSERT_RETRY = "INSERT INTO retries (account, mailbox, uidvalidity, uid, tries) VALUES (?, ?, ?, ?, ?)"


def pg(statement: str) -> str:
    """`statement` with psycopg's `%s` for each `?` (a literal `%` doubled). The shared statements
    hold no `?` or `%` inside a string literal, which this would break."""
    return statement.replace("%", "%%").replace("?", "%s")


def journal_filter(
    rule: str | None, message_id: str | None, run_id: str | None, account: str | None
) -> tuple[str, list[str]]:
    """The ` WHERE ...` clause (`?` placeholders; "" for no filter) and its parameters that keep the
    journal rows matching every filter given (`find` of both backends)."""
    given = [
        (column, value)
        for column, value in (
            ("rule", rule),
            ("message_id", message_id),
            ("run_id", run_id),
            ("account", account),
        )
        if value is not None
    ]
    where = " WHERE " + " AND ".join(f"{column} = ?" for column, _ in given) if given else ""
    return where, [value for _, value in given]
