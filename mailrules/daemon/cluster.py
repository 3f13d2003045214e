"""This daemon's share of the accounts: the lease keeper (state/keeper.py) run on its own thread.

With a PostgreSQL state several daemons share the accounts: each works only on those it holds a
lease on, through `view(account)`, a state whose writes of that account carry the lease's fencing
token (a replica that lost the lease writes nothing). `begin()` registers the replica and runs the
first round; a thread then runs a round every `interval` (a third of `lease_seconds`) and checks
the local deadlines every second between rounds. The accounts taken are started, and those given
up (lost, handed over) stopped, on another thread (state/starts.py), so a round is never held up
by starting or stopping them. `shutdown()` (SIGTERM) releases every lease at once. With a SQLite
state (`SoloLeases`) the daemon owns every account from the start, its views are the state
itself, and no thread runs. docs/dev/leases.md says why it is built this way.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mailrules.daemon.lease_guard import LeaseGuard
from mailrules.state.factory import open_leases
from mailrules.state.interface import Lease, State
from mailrules.state.keeper import KeeperObserver, LeaseKeeper

if TYPE_CHECKING:
    from mailrules.config.model import Settings

log = logging.getLogger(__name__)

#: Between rounds, leases whose local deadline passed are stopped within this many seconds.
EXPIRE_CHECK_SECONDS = 1.0


class Cluster:
    """Which accounts this daemon works on, and the fenced state of each."""

    def __init__(
        self,
        state: State,
        settings: Settings,
        *,
        started: Callable[[str], None],
        stopping: Callable[[str], None],
        observer: KeeperObserver | None = None,
    ) -> None:
        self.state = state
        self.leases = open_leases(state, settings)
        self._started = started
        self._stopping = stopping
        self._views: dict[str, State] = {}
        self._guard = threading.Lock()
        self._observer = observer or KeeperObserver()
        self.keeper = LeaseKeeper(
            self.leases,
            list(settings.accounts),
            start=self._start,
            stop=self._stop,
            stop_many=self._stop_many,
            dropped=self._forget,
            observer=observer,
            # Shared: accounts start on a thread of their own, so a round that takes many never
            # holds back the renewal of those held (state/starts.py).
            background_starts=math.isfinite(self.leases.lease_seconds),
        )
        self.rounds = 0
        self._warm = False  # the accounts taken by the first round have all been started
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()

    @property
    def shared(self) -> bool:
        """Whether other daemons may share the accounts (a PostgreSQL state): leases expire."""
        return math.isfinite(self.leases.lease_seconds)

    @property
    def replica(self) -> str:
        return self.leases.replica

    def view(self, account: str) -> State | None:
        """The state to work on `account` with (fenced by its lease), None when not owned."""
        with self._guard:
            return self._views.get(account)

    def owns(self, account: str) -> bool:
        """Whether this daemon works on `account` now (its OAuth2 token is refreshed here only)."""
        with self._guard:
            return account in self._views

    def lease_check(self, account: str) -> LeaseGuard | None:
        """What the engine asks before it acts on `account`'s server (daemon/lease_guard.py), or
        None with a SQLite state (its one daemon holds every account for good: no check)."""
        if not self.shared:
            return None
        return LeaseGuard(self.keeper, account, stopped=self._observer.stopped)

    def owned(self) -> list[str]:
        """The accounts this daemon holds now, by name."""
        with self._guard:
            return sorted(self._views)

    def _start(self, lease: Lease) -> None:
        with self._guard:
            self._views[lease.account] = self.state.fenced([lease])
        try:
            self._started(lease.account)
        except BaseException:
            with self._guard:
                self._views.pop(lease.account, None)
            raise
        if self.shared:
            log.info(
                "replica %s: working on account %s (lease token %d)", self.replica, lease.account, lease.token
            )

    def _forget(self, accounts: Sequence[str]) -> None:
        """In the keeper's round, for accounts no longer held: no new work on them from here on
        (their stop follows on the starts' thread; it must not hold the round)."""
        with self._guard:
            for account in accounts:
                self._views.pop(account, None)

    def _stop(self, account: str) -> None:
        with self._guard:
            self._views.pop(account, None)  # no new work from here on
        self._stopping(account)
        if self.shared:
            log.info("replica %s: stopped working on account %s", self.replica, account)

    def _stop_many(self, accounts: Sequence[str]) -> None:
        """Stop several accounts at once: each stop waits for its watchers (up to a round), so one
        after another, N accounts lost or handed over together would hold the round for N waits
        while the other leases wait for their renewal (and run out)."""
        if len(accounts) <= 1:
            for account in accounts:
                self._stop(account)
            return
        failed: list[str] = []

        def stop(account: str) -> None:
            try:
                self._stop(account)
            except Exception:
                log.exception("leases: stopping %s failed", account)
                failed.append(account)

        threads = [threading.Thread(target=stop, args=(a,), name=f"stop {a}") for a in accounts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failed:
            raise RuntimeError(f"stopping {', '.join(sorted(failed))} failed (logged above)")

    def begin(self) -> None:
        """Register this replica and take a first share; then keep it on a thread of its own."""
        changes = self.keeper.begin()
        self.rounds = 1
        if self.shared:
            log.info(
                "replica %s: %d of %d accounts after the first round (leases of %.0f s)",
                self.replica,
                len(changes.taken),
                len(self.keeper.accounts),
                self.leases.lease_seconds,
            )
            self._thread = threading.Thread(target=self._loop, name="leases", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        # Rounds start every `interval` from the start of the previous one (not from its end): a
        # slow round (many accounts taken) does not push the next renewal towards the expiry.
        interval = self.keeper.interval
        next_round = time.monotonic() + interval
        while not self._halt.is_set():
            due = next_round - time.monotonic()
            while due > 0 and not self._halt.wait(min(EXPIRE_CHECK_SECONDS, due)):
                self._guarded(self.keeper.expire)
                due = next_round - time.monotonic()
            if self._halt.is_set():
                return
            next_round = time.monotonic() + interval
            self._guarded(self.keeper.round)
            self.rounds += 1

    def _guarded(self, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:  # a bug must not end the keeper: the leases would all run out
            log.exception("leases: round failed; trying again")

    def ready(self) -> tuple[bool, str]:
        """Whether the first round is done, and how many accounts this replica owns."""
        if self.rounds == 0:
            return False, "leases: first round not done"
        if not self._warm:
            starting = self.keeper.starting()
            if starting:
                return False, f"leases: starting {starting} accounts"
            self._warm = True
        owned, total = len(self.owned()), len(self.keeper.accounts)
        return True, f"replica {self.replica} owns {owned} of {total} accounts"

    def halt(self) -> None:
        """No more rounds (the round in hand finishes): what is held stays held until `shutdown`."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join()

    def shutdown(self) -> None:
        """Stop the rounds, release every lease at once, retire the replica, close the leases."""
        self.halt()
        try:
            self.keeper.shutdown()
        finally:
            self.leases.close()
