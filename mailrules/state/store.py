"""The SQLite state store: runs, the action journal, side-effect intents and mailbox checkpoints."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailrules.errors import StateError, StateOpenError
from mailrules.state import sql
from mailrules.state.files import StateLock, create_private_file, make_private_dir
from mailrules.state.guard import guarded as _guarded
from mailrules.state.guard import state_error
from mailrules.state.interface import Lease
from mailrules.state.keys import intent_key as intent_key  # re-exported: callers import it from here
from mailrules.state.keys import message_intent_key as message_intent_key
from mailrules.state.keys import new_run_id as new_run_id
from mailrules.state.models import Checkpoint, FlagMark, Intent, JournalEntry, RunInfo, UndoPlan
from mailrules.state.rows import SELECT_JOURNAL as _SELECT_JOURNAL
from mailrules.state.rows import entry_from_json as _entry_from_json
from mailrules.state.rows import entry_from_row as _entry_from_row
from mailrules.state.rows import entry_to_json as _entry_to_json
from mailrules.state.rows import flag_mark_row, journal_inserts, own_rows
from mailrules.state.rows import parse_ts as _dt
from mailrules.state.rows import ts as _ts
from mailrules.state.schema import migrate
from mailrules.state.undo import plan_undo


class StateStore:
    """Durable state of mailrules in one SQLite file.

    Threads: one connection shared by all threads, serialised by a re-entrant lock; a
    `transaction()` holds the lock for its whole block, so another thread's writes never land in
    the middle of a batch. (One connection per thread would not work for `:memory:` and buys
    little: SQLite allows a single writer anyway.)

    Exactly-once policy for forward/redirect is *at most once*, see `intent()`.
    """

    def __init__(
        self, conn: sqlite3.Connection, path: str | Path = ":memory:", lock: StateLock | None = None
    ) -> None:
        self._conn = conn
        self.path = str(path)
        self._flock = lock
        self._lock = threading.RLock()
        self._depth = 0  # nesting of transaction(); > 0 means writes join the open transaction
        self._full = False  # PRAGMA synchronous is FULL now (open sets NORMAL; transaction switches)
        self._doing: str | None = None  # what the guarded method running now does (for errors)

    @classmethod
    def open(cls, path: str | Path, *, lock: str | None = None) -> StateStore:
        """Open (creating the parent directory, the file and the schema as needed) a state store.

        `lock`: the command that is to act on the state (e.g. "mailrules daemon"): the state's
        exclusive lock is taken first, or StateLocked says who holds it. A new directory is made
        0700 and a new file 0600 (mailrules/state/files.py). Every failure is a StateOpenError
        naming the file and the reason.
        """
        name = str(path)
        flock: StateLock | None = None
        if name != ":memory:":
            try:
                make_private_dir(Path(name).parent)
                create_private_file(Path(name))
            except OSError as exc:
                raise state_error(name, "create it", exc, StateOpenError) from exc
            if lock is not None:
                flock = StateLock.acquire(Path(name), lock)
        conn: sqlite3.Connection | None = None
        try:
            # autocommit mode: we issue BEGIN/COMMIT ourselves (sqlite3's implicit transactions
            # would commit a half batch on the next DDL, and hide where a transaction starts)
            conn = sqlite3.connect(name, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a WAL commit survives the process's crash unsynced (an OS crash or power loss
            # may lose the last ones, never corrupts); intent and claim: transaction(durable=True)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate(conn)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if flock is not None:
                flock.release()
            if isinstance(exc, StateError):  # a schema newer than this mailrules knows
                raise StateOpenError(f"state {name}: {exc}") from exc
            if isinstance(exc, sqlite3.Error):
                raise state_error(name, "open it", exc, StateOpenError) from exc
            raise
        return cls(conn, name, flock)

    @property
    def where(self) -> str:
        """The database file's path (the State interface's name for messages)."""
        return self.path

    def fenced(self, leases: Iterable[Lease]) -> StateStore:
        """Itself: a SQLite state has one daemon, made alone by its file lock (no leases)."""
        return self

    def close(self) -> None:
        """Close the connection and let the lock go, if this store held it."""
        with self._lock:
            try:
                self._conn.close()
            finally:
                if self._flock is not None:
                    self._flock.release()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[None]:
        """Everything written inside the block commits together, or not at all.

        Nested blocks are savepoints: an exception inside rolls back only the inner block, if the
        outer block catches it. `durable` (outermost only): COMMIT returns once the batch is on
        disk (synchronous=FULL: the WAL's fdatasync carries earlier commits too); others sync nothing.
        """
        commit: tuple[str, ...]
        rollback: tuple[str, ...]
        with self._lock:
            if self._depth == 0:
                begin, commit, rollback = "BEGIN IMMEDIATE", ("COMMIT",), ("ROLLBACK",)
            else:
                name = f"sp{self._depth}"
                begin, commit = f"SAVEPOINT {name}", (f"RELEASE {name}",)
                rollback = (f"ROLLBACK TO {name}", f"RELEASE {name}")
            doing = self._doing or "write a batch"
            if durable and self._depth > 0:
                raise StateError("a durable transaction() cannot be nested: it commits with the outer one")
            try:
                if self._depth == 0 and durable != self._full:  # SQLite refuses it inside a transaction
                    self._conn.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
                    self._full = durable
                self._conn.execute(begin)
            except sqlite3.Error as exc:
                raise state_error(self.path, doing, exc) from exc
            self._depth += 1
            try:
                yield
                for statement in commit:
                    self._conn.execute(statement)
            except BaseException as exc:
                # also when COMMIT itself fails (disk full, busy): never leave a transaction open
                try:
                    if self._conn.in_transaction:
                        for statement in rollback:
                            self._conn.execute(statement)
                except sqlite3.Error:
                    pass  # SQLite rolled back already (a full disk can end the transaction itself)
                if isinstance(exc, sqlite3.Error):
                    raise state_error(self.path, doing, exc) from exc
                raise
            finally:
                self._depth -= 1

    # -- runs ---------------------------------------------------------------------------------

    @_guarded("record the start of a run")
    def begin_run(self, trigger: str, dry_run: bool, *, now: datetime | None = None) -> str:
        """Record the start of a run; return its id."""
        moment = now or datetime.now(UTC)
        run_id = new_run_id(moment)
        with self.transaction():
            self._conn.execute(sql.INSERT_RUN, (run_id, trigger, int(dry_run), _ts(moment)))
        return run_id

    @_guarded("record the end of a run")
    def end_run(self, run_id: str, summary: dict[str, Any], *, now: datetime | None = None) -> None:
        """Record the end of a run with its summary (JSON-serialisable; other values as text)."""
        with self.transaction():
            cur = self._conn.execute(
                sql.END_RUN,
                (_ts(now or datetime.now(UTC)), json.dumps(summary, sort_keys=True, default=str), run_id),
            )
            if cur.rowcount != 1:
                raise StateError(f"unknown run {run_id!r}")

    def runs(self, limit: int = 20, *, trigger: str | None = None) -> list[RunInfo]:
        """The latest runs, newest first (optionally only those with `trigger`)."""
        if trigger is None:
            return self._runs("", [], limit)
        return self._runs("WHERE r.trigger = ?", [trigger], limit)

    def get_run(self, run_id: str) -> RunInfo | None:
        """One run by id."""
        found = self._runs("WHERE r.run_id = ?", [run_id], 1)
        return found[0] if found else None

    @_guarded("read the runs")
    def _runs(self, where: str, params: list[Any], limit: int) -> list[RunInfo]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT r.run_id, r.trigger, r.dry_run, r.started_at, r.ended_at, r.summary, "
                "(SELECT COUNT(*) FROM journal j WHERE j.run_id = r.run_id) "
                f"FROM runs r {where} ORDER BY r.started_at DESC, r.rowid DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [
            RunInfo(
                run_id=r[0],
                trigger=r[1],
                dry_run=bool(r[2]),
                started_at=_dt(r[3]),
                ended_at=_dt(r[4]) if r[4] else None,
                summary=json.loads(r[5]) if r[5] else None,
                entries=int(r[6]),
            )
            for r in rows
        ]

    # -- journal ------------------------------------------------------------------------------

    def record(self, entry: JournalEntry) -> None:
        """Append one entry to the journal."""
        self.record_many((entry,))

    @_guarded("record the journal")
    def record_many(self, entries: Iterable[JournalEntry]) -> None:
        """Append a batch of entries, all or none."""
        batch = list(entries)
        with self.transaction():
            for statement, params in journal_inserts(batch):  # not executemany: see journal_inserts
                self._conn.execute(statement, params)

    @_guarded("read the journal")
    def find(
        self,
        rule: str | None = None,
        message_id: str | None = None,
        run_id: str | None = None,
        account: str | None = None,
        limit: int = 100,
    ) -> list[JournalEntry]:
        """Journal entries matching every given filter, newest first. By run or Message-ID their
        indexes find them; else `journal_at` is walked from the newest row until `limit` match (no
        index by rule or account, schema step 5; without the hint SQLite sorts an account's rows)."""
        where, params = sql.journal_filter(rule, message_id, run_id, account)
        hint = " INDEXED BY journal_at" if message_id is None and run_id is None else ""
        with self._lock:
            rows = self._conn.execute(
                f"{_SELECT_JOURNAL}{hint}{where} ORDER BY at DESC, id DESC LIMIT ?", [*params, limit]
            ).fetchall()
        return [_entry_from_row(r) for r in rows]

    @_guarded("read the journal")
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
        found: set[int] = set()
        ordered = sorted(set(uids))
        for i in range(0, len(ordered), 500):  # SQLite's host-parameter limit
            chunk = ordered[i : i + 500]
            marks = ",".join("?" for _ in chunk)
            with self._lock:
                rows = self._conn.execute(
                    "SELECT DISTINCT uid FROM journal WHERE account = ? AND mailbox = ? AND uidvalidity = ? "
                    f"AND uid IN ({marks}) AND rule = ? AND action = ? AND destination IS ? "
                    "AND outcome = 'ok'",
                    (account, mailbox, uidvalidity, *chunk, rule, action, destination),
                ).fetchall()
            found.update(int(r[0]) for r in rows)
        return found

    @_guarded("read the journal")
    def run_entries(self, run_id: str) -> list[JournalEntry]:
        """Every entry of one run, in the order they were recorded."""
        with self._lock:
            rows = self._conn.execute(f"{_SELECT_JOURNAL} WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
        return [_entry_from_row(r) for r in rows]

    # -- intents (exactly-once side effects) --------------------------------------------------

    @_guarded("record an intent")
    def intent(self, key: str, entry: JournalEntry, *, now: datetime | None = None) -> bool:
        """Announce a side effect before attempting it; True means "go ahead and send".

        Policy: **at most once**. SMTP has no idempotency, and between the send and `confirm()` a
        crash leaves us unable to know whether the mail left. So the first call for a key writes
        the intent (durably, before returning True); any later call for the same key returns
        False, whether the intent was confirmed (done) or not (in doubt: listed by
        `pending_intents()` for a human, never re-sent automatically). A send that certainly did
        not happen (the server refused it) should be `release()`d so a later run may try again.
        The forwarded mail's Message-ID is derived from the key, so if an operator does release
        an in-doubt intent, a duplicate is recognisable as such by the recipient.
        """
        if self._depth > 0:
            # inside a batch the row would only reach the disk at the batch's end, after the send
            raise StateError("intent() must be called outside transaction(): it must be durable first")
        with self.transaction(durable=True):
            cur = self._conn.execute(
                sql.INSERT_INTENT, (key, _entry_to_json(entry), _ts(now or datetime.now(UTC)))
            )
            return cur.rowcount == 1

    @_guarded("confirm an intent")
    def confirm(self, key: str, *, now: datetime | None = None) -> None:
        """Mark the side effect announced under `key` as done."""
        with self.transaction():
            cur = self._conn.execute(sql.CONFIRM_INTENT, (_ts(now or datetime.now(UTC)), key))
            if cur.rowcount != 1:
                raise StateError(f"confirm of unknown intent {key!r}")

    @_guarded("release an intent")
    def release(self, key: str) -> bool:
        """Forget an unconfirmed intent (the send certainly did not happen); False if none was."""
        with self.transaction():
            cur = self._conn.execute(sql.RELEASE_INTENT, (key,))
            return cur.rowcount == 1

    @_guarded("read an intent")
    def is_confirmed(self, key: str) -> bool:
        """Whether the side effect under `key` is known to be done."""
        with self._lock:
            row = self._conn.execute(sql.INTENT_CONFIRMED_AT, (key,)).fetchone()
        return row is not None and row[0] is not None

    @_guarded("read the intents")
    def sends_since(self, account: str, address: str, since: datetime) -> list[datetime]:
        """When the forwards/redirects of `account` to `address` (any case) announced at or after
        `since` were announced, confirmed or in doubt (the per-address rate limit reads them)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT created_at FROM intents WHERE created_at >= ? "
                "AND json_extract(entry, '$.account') = ? AND lower(json_extract(entry, '$.detail')) = ?",
                (_ts(since), account, address.lower()),
            ).fetchall()
        return [_dt(r[0]) for r in rows]

    @_guarded("read the intents")
    def pending_intents(self) -> list[Intent]:
        """Intents never confirmed, oldest first: sends that may or may not have happened."""
        with self._lock:
            rows = self._conn.execute(sql.PENDING_INTENTS).fetchall()
        return [Intent(r[0], _entry_from_json(r[1]), _dt(r[2]), None) for r in rows]

    # -- claims: the intents of many IMAP actions at once ---------------------------------------

    @_guarded("record intents")
    def claim(self, items: Sequence[tuple[str, JournalEntry]], *, now: datetime | None = None) -> set[str]:
        """`intent()` for many side effects, in one durable transaction; the keys that are new.

        A key not returned was announced before (done, or in doubt): its action must not be
        repeated. Nothing is returned, and nothing may be done, when this raises.
        """
        if self._depth > 0:
            raise StateError("claim() must be called outside transaction(): it must be durable first")
        stamp = _ts(now or datetime.now(UTC))
        new: set[str] = set()
        with self.transaction(durable=True):
            for key, entry in items:
                cur = self._conn.execute(sql.INSERT_INTENT, (key, _entry_to_json(entry), stamp))
                if cur.rowcount == 1:
                    new.add(key)
        return new

    @_guarded("confirm intents")
    def confirm_many(self, keys: Iterable[str], *, now: datetime | None = None) -> None:
        """Mark the side effects announced under `keys` as done (unknown keys are ignored)."""
        stamp = _ts(now or datetime.now(UTC))
        with self.transaction():
            self._conn.executemany(sql.CONFIRM_INTENT, [(stamp, k) for k in keys])

    @_guarded("release intents")
    def release_many(self, keys: Iterable[str]) -> None:
        """Forget the unconfirmed intents under `keys`: those actions certainly did not happen."""
        with self.transaction():
            self._conn.executemany(sql.RELEASE_INTENT, [(k,) for k in keys])

    @_guarded("read the intents")
    def confirmed_keys(self, keys: Sequence[str]) -> set[str]:
        """Those of `keys` whose side effect is known to be done."""
        found: set[str] = set()
        with self._lock:  # the connection is shared between threads, as every other read
            for i in range(0, len(keys), 500):  # SQLite's host-parameter limit
                chunk = list(keys[i : i + 500])
                marks = ",".join("?" for _ in chunk)
                rows = self._conn.execute(
                    f"SELECT key FROM intents WHERE key IN ({marks}) AND confirmed_at IS NOT NULL", chunk
                ).fetchall()
                found.update(str(r[0]) for r in rows)
        return found

    # -- checkpoints --------------------------------------------------------------------------

    @_guarded("read a checkpoint")
    def get_checkpoint(self, account: str, mailbox: str) -> Checkpoint | None:
        """How far `mailbox` of `account` has been processed, if at all."""
        with self._lock:
            row = self._conn.execute(sql.SELECT_CHECKPOINT, (account, mailbox)).fetchone()
        if row is None:
            return None
        return Checkpoint(int(row[0]), int(row[1]), row[2], _dt(row[3]))

    @_guarded("store a checkpoint")
    def set_checkpoint(self, account: str, mailbox: str, checkpoint: Checkpoint) -> None:
        """Store the checkpoint; inside `transaction()` it commits with that batch's journal.

        A checkpoint never moves backwards: a lower UID under the same UIDVALIDITY is ignored (a
        slower writer must not make the daemon process mail again). A new UIDVALIDITY replaces
        it whatever its UID: the old UIDs mean nothing any more (RFC 9051 §2.3.1.1).
        """
        with self.transaction():
            self._conn.execute(
                sql.UPSERT_CHECKPOINT,
                (
                    account,
                    mailbox,
                    checkpoint.uidvalidity,
                    checkpoint.last_uid,
                    checkpoint.highestmodseq,
                    _ts(checkpoint.updated_at),
                ),
            )

    @_guarded("read a flag-change mark")
    def get_flag_mark(self, account: str, mailbox: str) -> FlagMark | None:
        """Where `on flag change` last looked at `mailbox`, with the own MODSEQs since."""
        with self._lock:
            row = self._conn.execute(sql.SELECT_FLAG_MARK, (account, mailbox)).fetchone()
            if row is None:
                return None
            own = self._conn.execute(sql.SELECT_OWN_MODSEQS, (account, mailbox, row[0])).fetchall()
        return FlagMark(int(row[0]), int(row[1]), int(row[2]), own={int(u): int(m) for u, m in own})

    @_guarded("store a flag-change mark")
    def set_flag_mark(self, account: str, mailbox: str, mark: FlagMark) -> None:
        """Move the mark; the own MODSEQs at or below it (or of another UIDVALIDITY) are spent."""
        with self.transaction():
            self._conn.execute(sql.UPSERT_FLAG_MARK, flag_mark_row(account, mailbox, mark))
            spent = (account, mailbox, mark.uidvalidity, mark.highestmodseq)
            self._conn.execute(sql.SPEND_OWN_MODSEQS, spent)

    @_guarded("remember our own flag changes")
    def note_own_changes(
        self, account: str, mailbox: str, uidvalidity: int, changes: Mapping[int, int]
    ) -> None:
        """Remember the MODSEQ each of our STOREs gave (UID -> MODSEQ), keeping the highest."""
        with self.transaction():
            self._conn.executemany(sql.UPSERT_OWN_MODSEQ, own_rows(account, mailbox, uidvalidity, changes))

    # -- retries ----------------------------------------------------------------------------------

    @_guarded("read the retry counts")
    def get_retries(self, account: str, mailbox: str, uidvalidity: int) -> dict[int, int]:
        """UID -> how many times the server refused it (under this UIDVALIDITY only)."""
        with self._lock:
            rows = self._conn.execute(sql.SELECT_RETRIES, (account, mailbox, uidvalidity)).fetchall()
        return {int(r[0]): int(r[1]) for r in rows}

    @_guarded("store the retry counts")
    def set_retries(self, account: str, mailbox: str, uidvalidity: int, tries: Mapping[int, int]) -> None:
        """Replace the mailbox's retry counts by `tries` (empty: forget them all)."""
        with self.transaction():
            self._conn.execute(sql.DELETE_RETRIES, (account, mailbox))
            self._conn.executemany(
                sql.INSERT_RETRY,
                [(account, mailbox, uidvalidity, uid, n) for uid, n in sorted(tries.items())],
            )

    # -- undo ---------------------------------------------------------------------------------

    @_guarded("read the run to undo")
    def undo_plan(self, run_id: str) -> UndoPlan:
        """What undoing `run_id` takes, from its journal (see `mailrules.state.undo.plan_undo`)."""
        run = self.get_run(run_id)
        if run is None:
            raise StateError(f"unknown run {run_id!r}")
        # undo runs say which run they undid in their summary ({"undo_of": run_id})
        undone_by = [
            r.run_id
            for r in self._runs(
                "WHERE r.trigger = 'undo' AND r.dry_run = 0 AND json_extract(r.summary, '$.undo_of') = ?",
                [run_id],
                -1,
            )
        ]
        return plan_undo(run_id, self.run_entries(run_id), undone_by=sorted(undone_by))
