"""The PostgreSQL state: the State interface for several daemons sharing one database.

Same behaviour as the SQLite store (tests/unit/test_state_contract.py runs against both), with
what sharing adds: the intents' primary key decides which replica sends a forward (INSERT ... ON
CONFLICT DO NOTHING: exactly one wins), a checkpoint never moves back whoever writes it, and a
`fenced()` view writes an account's journal, intents, checkpoints and retry counts only while
its lease (state/leases.py) is still the current one: the SQL checks the fencing token in the
same transaction, and holds the lease row (FOR SHARE) until it commits, so a takeover waits for
a write in flight and every later write of the old holder is refused (LeaseLost).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

from mailrules.errors import StateError, StateOpenError
from mailrules.state import sql
from mailrules.state.interface import Lease, LeaseLost
from mailrules.state.keys import new_run_id
from mailrules.state.models import Checkpoint, FlagMark, Intent, JournalEntry, RunInfo, UndoPlan
from mailrules.state.pg_conn import POOL_MAX, RETRY_SECONDS, Conn, Database, describe
from mailrules.state.pg_schema import migrate, take_lock
from mailrules.state.rows import (
    INSERT_JOURNAL,
    SELECT_JOURNAL,
    aware,
    entry_data,
    entry_from_data,
    entry_row,
    flag_mark_row,
    own_rows,
)
from mailrules.state.undo import plan_undo

_INSERT_JOURNAL = sql.pg(INSERT_JOURNAL)
_FENCE = (
    "SELECT 1 FROM leases WHERE account = %s AND owner = %s AND token = %s "
    "AND expires_at > clock_timestamp() FOR SHARE"
)
_RUNS = (
    "SELECT r.run_id, r.trigger, r.dry_run, r.started_at, r.ended_at, r.summary, "
    "(SELECT COUNT(*) FROM journal j WHERE j.run_id = r.run_id) FROM runs r "
)


def _summary(summary: dict[str, Any]) -> Jsonb:
    return Jsonb(summary, dumps=lambda o: json.dumps(o, sort_keys=True, default=str))


class PostgresState:
    """Durable state of mailrules in a PostgreSQL database, shared by every replica.

    Threads: each operation takes a connection from the pool; `transaction()` binds one to the
    calling thread until the block ends, and the writes of that thread inside it use it.
    """

    def __init__(self, db: Database, fence: Mapping[str, Lease] | None = None) -> None:
        self._db = db
        self._fence = fence
        self._holder: Conn | None = None  # the connection holding `open(lock=...)`'s lock
        self._view = False

    @classmethod
    def open(
        cls,
        url: str,
        *,
        password: str | None = None,
        replica: str = "",
        lease_seconds: float = 15.0,
        retry_seconds: float = RETRY_SECONDS,
        max_size: int | None = None,
        lock: str | None = None,
    ) -> PostgresState:
        """Connect (the password from `password`, else the URL, else libpq's PGPASSWORD or
        .pgpass), migrate the schema under the migration lock, start the pool. StateOpenError
        when the server cannot be reached or refuses, or the schema is newer than this mailrules.

        `lock` (e.g. "mailrules run"): as with SQLite, this process alone may act on the state
        while it is open, or StateLocked names who does (a session advisory lock, held by one
        connection kept for it). Daemons sharing the state by leases pass no lock."""
        db = Database(
            url,
            password,
            application_name=f"mailrules {replica}".strip()[:63],
            retry_seconds=retry_seconds,
            idle_seconds=lease_seconds,
            max_size=POOL_MAX if max_size is None else max_size,
        )
        holder = db.connect(f"{lock} ({replica})" if replica else lock) if lock else None
        try:
            if holder is not None:
                take_lock(holder, db.where)
            conn = db.connect()
            try:
                migrate(conn)
            except StateError as exc:
                raise StateOpenError(f"state {db.where}: {exc}") from None
            except Exception as exc:
                why = describe(exc)
                raise StateOpenError(f"state {db.where}: cannot migrate the schema: {why}") from None
            finally:
                conn.close()
        except BaseException:
            if holder is not None:
                holder.close()
            raise
        db.open_pool()
        state = cls(db)
        state._holder = holder
        return state

    @property
    def where(self) -> str:
        """The URL without its password."""
        return self._db.where

    @property
    def database(self) -> Database:
        """The pool and its retries (the leases use its URL and password)."""
        return self._db

    def __repr__(self) -> str:
        return f"PostgresState({self._db.where!r})"

    def fenced(self, leases: Iterable[Lease]) -> PostgresState:
        """A view writing for the accounts of `leases` only, each write checking its token."""
        view = copy.copy(self)
        view._fence = {lease.account: lease for lease in leases}
        view._holder = None
        view._view = True  # shares the pool: closing the view leaves it to the state
        return view

    def close(self) -> None:
        """Close the pool, and let the lock go (its connection closes) if this store held it.
        A `fenced()` view closes nothing: the state it came from does."""
        if self._view:
            return
        try:
            self._db.close()
        finally:
            if self._holder is not None:
                self._holder.close()

    def __enter__(self) -> PostgresState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything this thread writes inside the block commits together, or not at all."""
        with self._db.transaction("write a batch"):
            yield

    def _check_fence(self, conn: Conn, accounts: Iterable[str]) -> None:
        if self._fence is None:
            return
        for account in sorted(set(accounts)):
            lease = self._fence.get(account)
            if lease is None:
                raise LeaseLost(f"state {self.where}: account {account!r} is not held by this replica")
            if conn.execute(_FENCE, (account, lease.owner, lease.token)).fetchone() is None:
                raise LeaseLost(
                    f"state {self.where}: the lease of account {account!r} (token {lease.token}) "
                    "was lost: another replica owns it now, or will"
                )

    # -- runs -----------------------------------------------------------------------------------

    def begin_run(self, trigger: str, dry_run: bool, *, now: datetime | None = None) -> str:
        """Record the start of a run; return its id."""
        moment = aware(now or datetime.now(UTC))
        run_id = new_run_id(moment)
        self._db.run(
            "record the start of a run",
            lambda c: c.execute(sql.pg(sql.INSERT_RUN), (run_id, trigger, dry_run, moment)),
            write=True,
            idempotent=False,
        )
        return run_id

    def end_run(self, run_id: str, summary: dict[str, Any], *, now: datetime | None = None) -> None:
        """Record the end of a run with its summary (JSON-serialisable; other values as text)."""
        moment = aware(now or datetime.now(UTC))
        changed = self._db.run(
            "record the end of a run",
            lambda c: c.execute(sql.pg(sql.END_RUN), (moment, _summary(summary), run_id)).rowcount,
            write=True,
        )
        if changed != 1:
            raise StateError(f"unknown run {run_id!r}")

    def runs(self, limit: int = 20, *, trigger: str | None = None) -> list[RunInfo]:
        """The latest runs, newest first (optionally only those with `trigger`)."""
        if trigger is None:
            return self._runs("", (), limit)
        return self._runs("WHERE r.trigger = %s", (trigger,), limit)

    def get_run(self, run_id: str) -> RunInfo | None:
        """One run by id."""
        found = self._runs("WHERE r.run_id = %s", (run_id,), 1)
        return found[0] if found else None

    def _runs(self, where: str, params: tuple[Any, ...], limit: int | None) -> list[RunInfo]:
        query = f"{_RUNS}{where} ORDER BY r.started_at DESC, r.seq DESC LIMIT %s"
        rows = self._db.run("read the runs", lambda c: c.execute(query, (*params, limit)).fetchall())
        return [RunInfo(r[0], r[1], bool(r[2]), r[3], r[4], r[5], int(r[6])) for r in rows]

    # -- journal ----------------------------------------------------------------------------------

    def record(self, entry: JournalEntry) -> None:
        """Append one entry to the journal."""
        self.record_many((entry,))

    def record_many(self, entries: Iterable[JournalEntry]) -> None:
        """Append a batch of entries, all or none."""
        batch = list(entries)
        rows = [entry_row(e, aware) for e in batch]
        if not rows:
            return

        def write(conn: Conn) -> None:
            self._check_fence(conn, (e.account for e in batch))
            with conn.cursor() as cur:
                cur.executemany(_INSERT_JOURNAL, rows)

        self._db.run("record the journal", write, write=True, idempotent=False)

    def find(
        self,
        rule: str | None = None,
        message_id: str | None = None,
        run_id: str | None = None,
        account: str | None = None,
        limit: int = 100,
    ) -> list[JournalEntry]:
        """Journal entries matching every given filter, newest first."""
        where, params = sql.journal_filter(rule, message_id, run_id, account)
        where = sql.pg(where)
        query = f"{SELECT_JOURNAL}{where} ORDER BY at DESC, id DESC LIMIT %s"
        rows = self._db.run("read the journal", lambda c: c.execute(query, [*params, limit]).fetchall())
        return [JournalEntry(*r) for r in rows]

    def already_done(
        self,
        account: str,
        mailbox: str,
        uidvalidity: int,
        uids: Sequence[int],
        rule: str,
        action: str,
        destination: str | None,
    ) -> set[int]:
        """The UIDs for which this rule's action to this destination is journalled `ok` already."""
        if not uids:
            return set()
        query = (
            "SELECT DISTINCT uid FROM journal WHERE account = %s AND mailbox = %s AND uidvalidity = %s "
            "AND uid = ANY(%s) AND rule = %s AND action = %s AND destination IS NOT DISTINCT FROM %s "
            "AND outcome = 'ok'"
        )
        params = (account, mailbox, uidvalidity, sorted(set(uids)), rule, action, destination)
        rows = self._db.run("read the journal", lambda c: c.execute(query, params).fetchall())
        return {int(r[0]) for r in rows}

    def run_entries(self, run_id: str) -> list[JournalEntry]:
        """Every entry of one run, in the order they were recorded."""
        query = f"{SELECT_JOURNAL} WHERE run_id = %s ORDER BY id"
        rows = self._db.run("read the journal", lambda c: c.execute(query, (run_id,)).fetchall())
        return [JournalEntry(*r) for r in rows]

    # -- intents ---------------------------------------------------------------------------------

    def _outside_transaction(self, what: str) -> None:
        if self._db.bound() is not None:
            # inside a batch the row would only be committed at the batch's end, after the send
            raise StateError(f"{what}() must be called outside transaction(): it must be durable first")

    def intent(self, key: str, entry: JournalEntry, *, now: datetime | None = None) -> bool:
        """Announce a side effect before attempting it; True means "go ahead and send".

        At most once, across every replica: the first INSERT of `key` wins, every later one
        (here or on another replica, confirmed or in doubt) returns False. See StateStore.intent.
        """
        self._outside_transaction("intent")
        moment = aware(now or datetime.now(UTC))

        def write(conn: Conn) -> bool:
            self._check_fence(conn, (entry.account,))
            params = (key, Jsonb(entry_data(entry)), moment)
            return conn.execute(sql.pg(sql.INSERT_INTENT), params).rowcount == 1

        return self._db.run("record an intent", write, write=True, idempotent=False)

    def confirm(self, key: str, *, now: datetime | None = None) -> None:
        """Mark the side effect announced under `key` as done.

        Not fenced: the side effect happened, whoever holds the account now must know it."""
        moment = aware(now or datetime.now(UTC))
        changed = self._db.run(
            "confirm an intent",
            lambda c: c.execute(sql.pg(sql.CONFIRM_INTENT), (moment, key)).rowcount,
            write=True,
        )
        if changed != 1:
            raise StateError(f"confirm of unknown intent {key!r}")

    def release(self, key: str) -> bool:
        """Forget an unconfirmed intent (the send certainly did not happen); False if none was.
        Not fenced, as `confirm`."""
        return bool(
            self._db.run(
                "release an intent",
                lambda c: c.execute(sql.pg(sql.RELEASE_INTENT), (key,)).rowcount == 1,
                write=True,
            )
        )

    def is_confirmed(self, key: str) -> bool:
        """Whether the side effect under `key` is known to be done."""
        query = sql.pg(sql.INTENT_CONFIRMED_AT)
        row = self._db.run("read an intent", lambda c: c.execute(query, (key,)).fetchone())
        return row is not None and row[0] is not None

    def sends_since(self, account: str, address: str, since: datetime) -> list[datetime]:
        """When the forwards/redirects of `account` to `address` (any case) announced at or after
        `since` were announced, confirmed or in doubt."""
        query = (
            "SELECT created_at FROM intents WHERE account = %s AND created_at >= %s "
            "AND lower(entry ->> 'detail') = %s"
        )
        params = (account, aware(since), address.lower())
        rows = self._db.run("read the intents", lambda c: c.execute(query, params).fetchall())
        return [r[0] for r in rows]

    def pending_intents(self) -> list[Intent]:
        """Intents never confirmed, oldest first: sends that may or may not have happened."""
        rows = self._db.run("read the intents", lambda c: c.execute(sql.PENDING_INTENTS).fetchall())
        return [Intent(r[0], entry_from_data(r[1]), r[2], None) for r in rows]

    def claim(self, items: Sequence[tuple[str, JournalEntry]], *, now: datetime | None = None) -> set[str]:
        """`intent()` for many side effects, in one transaction; the keys that are new."""
        self._outside_transaction("claim")
        if not items:
            return set()
        moment = aware(now or datetime.now(UTC))
        query = (
            "INSERT INTO intents (key, entry, created_at) SELECT k, e, %s "
            "FROM unnest(%s::text[], %s::jsonb[]) AS t(k, e) ON CONFLICT (key) DO NOTHING RETURNING key"
        )
        # in key order: two replicas claiming overlapping groups wait for each other in the same
        # order (unique index entries), never in a deadlock
        ordered = sorted(items, key=lambda item: item[0])
        keys = [k for k, _ in ordered]
        entries = [Jsonb(entry_data(e)) for _, e in ordered]

        def write(conn: Conn) -> set[str]:
            self._check_fence(conn, (e.account for _, e in items))
            return {str(r[0]) for r in conn.execute(query, (moment, keys, entries)).fetchall()}

        return self._db.run("record intents", write, write=True, idempotent=False)

    def confirm_many(self, keys: Iterable[str], *, now: datetime | None = None) -> None:
        """Mark the side effects announced under `keys` as done (unknown keys are ignored)."""
        moment = aware(now or datetime.now(UTC))
        query = "UPDATE intents SET confirmed_at = COALESCE(confirmed_at, %s) WHERE key = ANY(%s)"
        listed = list(keys)
        self._db.run("confirm intents", lambda c: c.execute(query, (moment, listed)), write=True)

    def release_many(self, keys: Iterable[str]) -> None:
        """Forget the unconfirmed intents under `keys`: those actions certainly did not happen."""
        query = "DELETE FROM intents WHERE key = ANY(%s) AND confirmed_at IS NULL"
        listed = list(keys)
        self._db.run("release intents", lambda c: c.execute(query, (listed,)), write=True)

    def confirmed_keys(self, keys: Sequence[str]) -> set[str]:
        """Those of `keys` whose side effect is known to be done."""
        query = "SELECT key FROM intents WHERE key = ANY(%s) AND confirmed_at IS NOT NULL"
        listed = list(keys)
        rows = self._db.run("read the intents", lambda c: c.execute(query, (listed,)).fetchall())
        return {str(r[0]) for r in rows}

    # -- checkpoints and retries --------------------------------------------------------------------

    def get_checkpoint(self, account: str, mailbox: str) -> Checkpoint | None:
        """How far `mailbox` of `account` has been processed, if at all."""
        row = self._db.run(
            "read a checkpoint",
            lambda c: c.execute(sql.pg(sql.SELECT_CHECKPOINT), (account, mailbox)).fetchone(),
        )
        return None if row is None else Checkpoint(int(row[0]), int(row[1]), row[2], row[3])

    def set_checkpoint(self, account: str, mailbox: str, checkpoint: Checkpoint) -> None:
        """Store the checkpoint (never backwards under the same UIDVALIDITY, in SQL)."""
        cp = checkpoint
        params = (account, mailbox, cp.uidvalidity, cp.last_uid, cp.highestmodseq, aware(cp.updated_at))

        def write(conn: Conn) -> None:
            self._check_fence(conn, (account,))
            conn.execute(sql.pg(sql.UPSERT_CHECKPOINT), params)

        self._db.run("store a checkpoint", write, write=True)

    def get_retries(self, account: str, mailbox: str, uidvalidity: int) -> dict[int, int]:
        """UID -> how many times the server refused it (under this UIDVALIDITY only)."""
        rows = self._db.run(
            "read the retry counts",
            lambda c: c.execute(sql.pg(sql.SELECT_RETRIES), (account, mailbox, uidvalidity)).fetchall(),
        )
        return {int(r[0]): int(r[1]) for r in rows}

    def set_retries(self, account: str, mailbox: str, uidvalidity: int, tries: Mapping[int, int]) -> None:
        """Replace the mailbox's retry counts by `tries` (empty: forget them all)."""
        rows = [(account, mailbox, uidvalidity, uid, n) for uid, n in sorted(tries.items())]

        def write(conn: Conn) -> None:
            self._check_fence(conn, (account,))
            conn.execute(sql.pg(sql.DELETE_RETRIES), (account, mailbox))
            if rows:
                with conn.cursor() as cur:
                    cur.executemany(sql.pg(sql.INSERT_RETRY), rows)

        self._db.run("store the retry counts", write, write=True)

    def get_flag_mark(self, account: str, mailbox: str) -> FlagMark | None:
        """Where `on flag change` last looked at `mailbox`, with the own MODSEQs since."""

        def read(c: Conn) -> FlagMark | None:
            row = c.execute(sql.pg(sql.SELECT_FLAG_MARK), (account, mailbox)).fetchone()
            if row is None:
                return None
            own = c.execute(sql.pg(sql.SELECT_OWN_MODSEQS), (account, mailbox, row[0])).fetchall()
            return FlagMark(int(row[0]), int(row[1]), int(row[2]), own={int(u): int(m) for u, m in own})

        return self._db.run("read a flag-change mark", read)

    def set_flag_mark(self, account: str, mailbox: str, mark: FlagMark) -> None:
        """Move the mark; the own MODSEQs at or below it (or of another UIDVALIDITY) are spent."""

        def write(conn: Conn) -> None:
            self._check_fence(conn, (account,))
            conn.execute(sql.pg(sql.UPSERT_FLAG_MARK), flag_mark_row(account, mailbox, mark))
            spent = (account, mailbox, mark.uidvalidity, mark.highestmodseq)
            conn.execute(sql.pg(sql.SPEND_OWN_MODSEQS), spent)

        self._db.run("store a flag-change mark", write, write=True)

    def note_own_changes(
        self, account: str, mailbox: str, uidvalidity: int, changes: Mapping[int, int]
    ) -> None:
        """Remember the MODSEQ each of our STOREs gave (UID -> MODSEQ), keeping the highest.

        Not fenced: it records what this process already did on the server; a replica that lost
        the lease can at most keep a flag-change rule from running on its own last STORE."""
        rows = own_rows(account, mailbox, uidvalidity, changes)

        def write(conn: Conn) -> None:
            with conn.cursor() as cur:
                cur.executemany(sql.pg(sql.UPSERT_OWN_MODSEQ), rows)

        if rows:
            self._db.run("remember our own flag changes", write, write=True)

    # -- undo -------------------------------------------------------------------------------------

    def undo_plan(self, run_id: str) -> UndoPlan:
        """What undoing `run_id` takes, from its journal (see `mailrules.state.undo.plan_undo`)."""
        if self.get_run(run_id) is None:
            raise StateError(f"unknown run {run_id!r}")
        where = "WHERE r.trigger = 'undo' AND NOT r.dry_run AND r.summary ->> 'undo_of' = %s"
        undone_by = sorted(r.run_id for r in self._runs(where, (run_id,), None))
        return plan_undo(run_id, self.run_entries(run_id), undone_by=undone_by)
