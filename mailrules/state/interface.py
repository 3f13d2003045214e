"""The one state interface: what the daemon, the commands and the engine ask of a state.

Two implementations satisfy it: `StateStore` (SQLite, state/store.py: one process at a time, by
its file lock) and `PostgresState` (state/postgres.py: several daemons sharing one database, each
account owned by one of them through a lease, state/leases.py). Code above state/ names `State`,
never either class, and gets one from `open_state(settings)` (state/factory.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from mailrules.errors import StateError
from mailrules.state.models import Checkpoint, FlagMark, Intent, JournalEntry, RunInfo, UndoPlan


class LeaseLost(StateError):
    """A write for an account this replica no longer holds (its lease expired or was taken over).

    Nothing of the refused write was done. The daemon stops working on the account: another
    replica owns it now and catches up from the checkpoint this one could not move.
    """


@dataclass(frozen=True, slots=True)
class Lease:
    """One account held by one replica until `expires_at` (the database's clock).

    `token` is the fencing token: it grows by one at every acquisition of the account by any
    replica, and every write of the holder for this account carries it (`State.fenced`), so a
    replica that lost the lease while paused cannot write after the next holder started.
    `deadline` is this process's `time.monotonic()` before which the lease is surely still held
    (the renewal's start plus `lease_seconds`, less a margin): work on the account stops after it
    even if the database cannot be reached to learn more.
    """

    account: str
    owner: str
    token: int
    expires_at: dt.datetime
    deadline: float


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds one account as the database sees it: `held` while `owner` is set and the lease
    has not expired."""

    account: str
    owner: str | None
    token: int
    expires_at: dt.datetime
    held: bool


class LeaseStore(Protocol):
    """What the lease keeper (state/keeper.py) asks of the leases: `state/leases.py: Leases`
    (PostgreSQL) or `state/solo.py: SoloLeases` (SQLite); `factory.open_leases` picks."""

    @property
    def replica(self) -> str:
        """This daemon's name in the cluster."""

    @property
    def lease_seconds(self) -> float:
        """How long a lease lasts without a renewal."""

    def register(self) -> None:
        """Announce this replica (at start)."""

    def heartbeat(self) -> None:
        """Say this replica is alive."""

    def acquire(self, account: str) -> Lease | None:
        """Take `account` if it is free or its lease expired."""

    def renew(self, leases: Iterable[Lease]) -> list[Lease]:
        """The leases still held, with their new expiry."""

    def release(self, leases: Iterable[Lease]) -> None:
        """Let the leases go at once."""

    def owners(self) -> dict[str, Holder]:
        """Every account leased, and by whom."""

    def replicas(self) -> list[str]:
        """The replicas seen within `lease_seconds`."""

    def claimed(self, accounts: Iterable[str]) -> set[str]:
        """Those of `accounts` a command (`mailrules run`, `undo`) claims: hand over, never take."""

    def retire(self) -> None:
        """Forget this replica (at a clean stop, after releasing its leases)."""

    def close(self) -> None:
        """Let the leases' connections go (after `retire`)."""


class State(Protocol):
    """The durable state of mailrules: runs, the append-only journal, intents for at-most-once
    side effects, checkpoints per mailbox, retry counts, and undo plans read from the journal.

    Every failure of the database is a `StateError` naming the state and what was being done;
    `LeaseLost` (a StateError) when a fenced write's lease is gone. Timestamps are aware
    datetimes; `now=` arguments exist for tests and default to the current UTC time.
    """

    @property
    def where(self) -> str:
        """The state's name for messages: the SQLite path, or the URL without its password."""

    def close(self) -> None:
        """Let every connection (and the SQLite file lock) go."""

    def __enter__(self) -> State:
        """The state itself: `with open_state(settings) as state:` closes it at the end."""

    def __exit__(self, *exc: object) -> None:
        """`close()`."""

    def transaction(self) -> AbstractContextManager[None]:
        """Everything this thread writes inside the block commits together, or not at all;
        nested blocks are savepoints. `intent` and `claim` refuse to run inside one."""

    def fenced(self, leases: Iterable[Lease]) -> State:
        """This state, writing for the accounts of `leases` only, each write carrying its token.

        A fenced write for an account the lease no longer covers raises `LeaseLost`; a write for
        an account not among `leases` too. SQLite (one daemon, by its lock) returns itself."""

    # -- runs --------------------------------------------------------------------------------

    def begin_run(self, trigger: str, dry_run: bool, *, now: dt.datetime | None = None) -> str:
        """Record the start of a run; return its id."""

    def end_run(self, run_id: str, summary: dict[str, Any], *, now: dt.datetime | None = None) -> None:
        """Record the end of a run with its summary."""

    def runs(self, limit: int = 20, *, trigger: str | None = None) -> list[RunInfo]:
        """The latest runs, newest first."""

    def get_run(self, run_id: str) -> RunInfo | None:
        """One run by id."""

    # -- journal -----------------------------------------------------------------------------

    def record(self, entry: JournalEntry) -> None:
        """Append one entry to the journal."""

    def record_many(self, entries: Iterable[JournalEntry]) -> None:
        """Append a batch of entries, all or none."""

    def find(
        self,
        rule: str | None = None,
        message_id: str | None = None,
        run_id: str | None = None,
        account: str | None = None,
        limit: int = 100,
    ) -> list[JournalEntry]:
        """Journal entries matching every given filter, newest first."""

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
        """The UIDs for which this rule's action to this destination is journalled `ok`."""

    def run_entries(self, run_id: str) -> list[JournalEntry]:
        """Every entry of one run, in the order they were recorded."""

    # -- intents -----------------------------------------------------------------------------

    def intent(self, key: str, entry: JournalEntry, *, now: dt.datetime | None = None) -> bool:
        """Announce a side effect durably before attempting it; True: go ahead (at most once)."""

    def confirm(self, key: str, *, now: dt.datetime | None = None) -> None:
        """Mark the side effect announced under `key` as done."""

    def release(self, key: str) -> bool:
        """Forget an unconfirmed intent (it certainly did not happen); False if none was."""

    def is_confirmed(self, key: str) -> bool:
        """Whether the side effect under `key` is known to be done."""

    def sends_since(self, account: str, address: str, since: dt.datetime) -> list[dt.datetime]:
        """When the forwards/redirects of `account` to `address` announced since `since` were."""

    def pending_intents(self) -> list[Intent]:
        """Intents never confirmed, oldest first: side effects that may or may not have happened."""

    def claim(self, items: Sequence[tuple[str, JournalEntry]], *, now: dt.datetime | None = None) -> set[str]:
        """`intent()` for many side effects in one durable transaction; the keys that are new."""

    def confirm_many(self, keys: Iterable[str], *, now: dt.datetime | None = None) -> None:
        """Mark the side effects under `keys` as done (unknown keys are ignored)."""

    def release_many(self, keys: Iterable[str]) -> None:
        """Forget the unconfirmed intents under `keys`."""

    def confirmed_keys(self, keys: Sequence[str]) -> set[str]:
        """Those of `keys` whose side effect is known to be done."""

    # -- checkpoints and retries -------------------------------------------------------------

    def get_checkpoint(self, account: str, mailbox: str) -> Checkpoint | None:
        """How far `mailbox` of `account` has been processed, if at all."""

    def set_checkpoint(self, account: str, mailbox: str, checkpoint: Checkpoint) -> None:
        """Store the checkpoint; never lowers `last_uid` under the same UIDVALIDITY."""

    def get_retries(self, account: str, mailbox: str, uidvalidity: int) -> dict[int, int]:
        """UID -> how many times the server refused it, for messages to try again."""

    def set_retries(self, account: str, mailbox: str, uidvalidity: int, tries: Mapping[int, int]) -> None:
        """Replace the mailbox's retry counts by `tries` (empty: forget them all)."""

    def get_flag_mark(self, account: str, mailbox: str) -> FlagMark | None:
        """Where `on flag change` last looked at `mailbox` (HIGHESTMODSEQ, highest UID), with the
        MODSEQs of our own STOREs since, under the mark's UIDVALIDITY."""

    def set_flag_mark(self, account: str, mailbox: str, mark: FlagMark) -> None:
        """Move the mark (`mark.own` is not written); own MODSEQs at or below it are forgotten."""

    def note_own_changes(
        self, account: str, mailbox: str, uidvalidity: int, changes: Mapping[int, int]
    ) -> None:
        """Remember UID -> the MODSEQ one of our STOREs gave it (the highest is kept)."""

    # -- undo --------------------------------------------------------------------------------

    def undo_plan(self, run_id: str) -> UndoPlan:
        """What undoing `run_id` takes, from its journal."""
