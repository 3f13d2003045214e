"""One replica's side of sharing the accounts: a round of renew, hand over, take.

The daemon calls `round()` every `interval` (a third of `lease_seconds`) and `expire()` before
trusting a lease between rounds; it starts an account's watchers and schedules in `start(lease)`
(with `state.fenced([lease])`) and stops them in `stop(account)`. The order inside a round keeps
an account from ever being written twice: a lease that was lost is dropped before anything
else; an account handed over is dropped (its stop begun: below) before its lease is released; an
account is started only after its lease was acquired. `shutdown()` (SIGTERM) stops everything
and releases every lease at once, so the other replicas take the accounts over in their next
round.

Take work never holds back a renewal: renewals come first in a round; taking stops once
`take_seconds` (half an interval) have passed since the take phase began, and the rest waits for
the next round, which renews first; with `background_starts` the starts run on a thread of their
own (state/starts.py), so a round only acquires.

Nor does stopping: with `background_starts` an account no longer held (lost, expired, claimed,
handed over) is only forgotten in the round (`dropped`, then its lease released if it was given
up) and stopped on that same thread, after a start of it in flight, never on the keeper's thread
(a stop waits up to a round for the account's watchers, and under load much longer for the lock
its starts hold: the survivors of a failover at 3,000 IDLE mailboxes went 49-81 s without a round,
bench/README.md). Its writes are refused once its lease is released or past its expiry in the
database (the fencing token and that expiry are checked by every write of `state.fenced`, and no
other replica can hold the account before then), so stopping it a little later loses no journal
row, intent or checkpoint; nor does the batch in hand act on the server from the drop on (the
engine asks daemon/lease_guard.py before each command, which reads `held`), but for a command
already sent. Without it (a SQLite state's one daemon, whose leases never expire) each start and
stop runs in the round.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailrules.errors import StateError
from mailrules.state.interface import Lease, LeaseStore
from mailrules.state.share import wanted
from mailrules.state.starts import Starts

log = logging.getLogger(__name__)


#: The owner the fair share sees for an account a command claims: no replica's name.
CLAIMED = "\x00claimed"


@dataclass(frozen=True, slots=True)
class Changes:
    """What one round changed: accounts acquired, released (handed over) and lost."""

    taken: tuple[str, ...] = ()
    given: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()


class KeeperObserver:
    """Hooks for metrics and logs (every call guarded: an observer never breaks the round)."""

    def acquired(self, lease: Lease) -> None:
        """`lease` was taken."""

    def released(self, account: str) -> None:
        """`account` was handed over (or let go at shutdown)."""

    def lost(self, account: str) -> None:
        """`account`'s lease ran out or was taken over before it could be renewed."""

    def view(self, owned: int, replicas: int) -> None:
        """After each round: how many accounts this replica owns, how many replicas are live."""

    def claimed(self, accounts: tuple[str, ...]) -> None:
        """Each round: the accounts a command (`mailrules run`, `undo`) claims now (no daemon
        works on them meanwhile, on purpose)."""

    def takes(self, deferred: int, starting: int) -> None:
        """After each round: how many accounts it left to take in the next round (its take time
        ran out), and how many held accounts have not finished starting."""

    def renewal_deferred(self, account: str) -> None:
        """`account`'s lease was kept, not renewed, in this round: a write in flight held its row
        past the renewal's short wait (state/leases.py); the next round renews it."""

    def stopped(self, account: str) -> None:
        """A pass over one of `account`'s mailboxes stopped before a command on its server or a
        send: this replica no longer held the lease (daemon/lease_guard.py)."""


class LeaseKeeper:
    """Keeps this replica's fair share of `accounts` leased."""

    def __init__(
        self,
        leases: LeaseStore,
        accounts: Sequence[str],
        *,
        start: Callable[[Lease], None],
        stop: Callable[[str], None],
        stop_many: Callable[[Sequence[str]], None] | None = None,
        dropped: Callable[[Sequence[str]], None] | None = None,
        observer: KeeperObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        background_starts: bool = False,
    ) -> None:
        self.leases = leases
        self.accounts = tuple(dict.fromkeys(accounts))
        self._start = start
        self._stop = stop
        # Several accounts stopped together (lost, handed over, shutdown): `stop_many` may stop
        # them at once (the daemon does, so a round never waits for one account after another
        # while the other leases wait for their renewal); by default one after another.
        self._stop_many = stop_many
        # Called in the round for accounts no longer held, before their (later) stop: must not
        # block (the daemon forgets their fenced views, so no new work starts on them).
        self._dropped = dropped
        self._observer = observer or KeeperObserver()
        self._clock = clock
        # The starts on a thread of their own (the daemon on PostgreSQL), or each in the round.
        name = f"lease-starts {leases.replica}"
        self._starts = Starts(start, self._stop_now, name=name) if background_starts else None
        self.held: dict[str, Lease] = {}
        #: accounts the fair share wanted taken in the last round but left for the next (the
        #: take phase had used its `take_seconds`)
        self.deferred = 0

    @property
    def interval(self) -> float:
        """Seconds between rounds: three renewals per lease."""
        return self.leases.lease_seconds / 3

    @property
    def take_seconds(self) -> float:
        """How long a round's take phase may go on: half an interval. A round then ends within
        an interval (rounds start every interval), so the next renewal comes on time whatever
        the round took; the accounts left are taken in the next round, after it renews."""
        return self.interval / 2

    def starting(self) -> int:
        """Accounts held whose start has not finished (background starts only; else 0)."""
        return 0 if self._starts is None else self._starts.pending()

    def begin(self) -> Changes:
        """Register this replica, then the first round."""
        self.leases.register()
        return self.round()

    def round(self) -> Changes:
        """Renew what is held, stop what was lost, hand over what exceeds the fair share, take
        free accounts up to it. A StateError (the database unreachable) ends the round early;
        leases whose local deadline passed meanwhile are stopped (`expire`)."""
        lost: list[str] = []
        given: list[str] = []
        taken: list[str] = []
        live: list[str] = []
        self.deferred = 0
        try:
            self.leases.heartbeat()
            renewed = {x.account: x for x in self.leases.renew(self.held.values())}
            lost = sorted(set(self.held) - set(renewed))
            for account, same in renewed.items():  # given back as it was: its row was busy
                if same == self.held.get(account) and math.isfinite(same.deadline):
                    self._notify(self._observer.renewal_deferred, account)
            self._drop(lost)
            for account in lost:
                self._notify(self._observer.lost, account)
            self.held.update(renewed)
            self._reap()  # background starts that failed: released now
            # Accounts a command claims (`mailrules run` beside the daemons): handed over now,
            # and neither free nor counted while the claim stands (owned by no live replica).
            claimed = self.leases.claimed(self.accounts)
            self._notify(self._observer.claimed, tuple(sorted(claimed)))
            yielded = self._drop(sorted(claimed & set(self.held)))
            if yielded:
                self.leases.release(yielded)
                for gone in yielded:
                    self._notify(self._observer.released, gone.account)
                    given.append(gone.account)
            holders = self.leases.owners()
            owners = {a: (h.owner if h.held else None) for a, h in holders.items()}
            owners.update(dict.fromkeys(claimed, CLAIMED))
            for account in self.held:  # what we hold is ours, whatever a late read says
                owners[account] = self.leases.replica
            live = self.leases.replicas()
            share = wanted(self.leases.replica, self.accounts, owners, live)
            handed = self._drop(share.give)
            if handed:
                self.leases.release(handed)
                for gone in handed:
                    self._notify(self._observer.released, gone.account)
                    given.append(gone.account)
            began = self._clock()
            for i, account in enumerate(share.take):
                if i and self._clock() - began >= self.take_seconds:
                    # The held leases must be renewed in time: the rest in the next round.
                    self.deferred = len(share.take) - i
                    log.info(
                        "leases: %d accounts to take left for the next round (%.1f s of taking)",
                        self.deferred,
                        self._clock() - began,
                    )
                    break
                lease = self.leases.acquire(account)
                if lease is None:
                    continue  # another replica was quicker: next round
                if self._starts is not None:
                    self._starts.submit(lease)  # started on its own thread; held (and renewed) from now
                else:
                    try:
                        self._start(lease)
                    except Exception:  # not worked on: let another replica (or the next round) have it
                        log.exception("leases: starting %s failed; releasing it", account)
                        self.leases.release([lease])
                        continue
                self.held[account] = lease
                self._notify(self._observer.acquired, lease)
                taken.append(account)
        except StateError as exc:
            log.warning("leases: %s; keeping what is held until its deadline", exc)
            lost += self.expire()
        self._notify(self._observer.view, len(self.held), len(live))
        self._notify(self._observer.takes, self.deferred, self.starting())
        return Changes(tuple(taken), tuple(given), tuple(lost))

    def expire(self) -> list[str]:
        """Stop the accounts whose lease is past its local deadline (not renewed in time)."""
        now = self._clock()
        late = sorted(a for a, x in self.held.items() if x.deadline <= now)
        self._drop(late)
        for account in late:
            self._notify(self._observer.lost, account)
        return late

    def shutdown(self) -> None:
        """Stop every account, release every lease and retire this replica (SIGTERM). The stops
        are done before the leases are released (closing the starts' thread waits for them)."""
        leases = self._drop(sorted(self.held))
        if self._starts is not None:
            self._starts.close()
        try:
            self.leases.release(leases)
            self.leases.retire()
        except StateError as exc:
            log.warning("leases: cannot release at shutdown (they expire by themselves): %s", exc)
        for lease in leases:
            self._notify(self._observer.released, lease.account)

    def _reap(self) -> None:
        """Release the leases whose background start failed: not worked on, so another replica (or
        a later round) may have them."""
        if self._starts is None:
            return
        failed = []
        for lease in self._starts.failed():
            held = self.held.get(lease.account)
            if held is not None and held.token == lease.token:  # (renewed since: same token)
                failed.append(self.held.pop(lease.account))
        if failed:
            self.leases.release(failed)
            for lease in failed:
                self._notify(self._observer.released, lease.account)

    def _drop(self, accounts: Sequence[str]) -> list[Lease]:
        """Forget `accounts`' leases and stop their work; the leases that were held. With
        background starts the stops run on the starts' thread (a start still waiting is
        cancelled, one in flight ends first) and this returns at once; else all of them are
        stopped before it returns."""
        leases = [lease for lease in (self.held.pop(a, None) for a in accounts) if lease is not None]
        if self._dropped is not None and leases:
            try:
                self._dropped([x.account for x in leases])
            except Exception:
                log.exception("leases: forgetting %s failed", ", ".join(x.account for x in leases))
        if self._starts is not None:
            self._starts.stop(accounts)
            return leases
        self._stop_now(accounts)
        return leases

    def stopping(self) -> int:
        """Accounts given up whose stop has not run yet (background starts only; else 0)."""
        return 0 if self._starts is None else self._starts.stopping()

    def _stop_now(self, accounts: Sequence[str]) -> None:
        """Stop `accounts`' work, all of them before returning (failures logged)."""
        if not accounts:
            return
        if self._stop_many is not None:
            try:
                self._stop_many(list(accounts))
            except Exception:  # the leases are gone either way; a failing stop must not keep them
                log.exception("leases: stopping %s failed", ", ".join(accounts))
            return
        for account in accounts:
            try:
                self._stop(account)
            except Exception:  # the lease is gone either way; a failing stop must not keep it
                log.exception("leases: stopping %s failed", account)

    def _notify(self, hook: Callable[..., None], *args: object) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("leases: observer failed")
