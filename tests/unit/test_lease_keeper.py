"""The lease keeper's rounds when starting accounts is slow (state/keeper.py, state/starts.py).

A round that took many accounts used to start each in the round and renew nothing meanwhile: at
3,000 watched mailboxes the leases taken first expired while the round went on (bench/README.md,
cluster_bench). Here, on a fake clock and a fake lease store that refuses to renew an expired
lease: every held lease is renewed within an interval whatever the starts cost, takes are spread
over rounds, and background starts are cancelled, waited for or released as the keeper needs.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import threading
from collections.abc import Iterable, Sequence

import pytest

from mailrules.state.interface import Holder, Lease
from mailrules.state.keeper import KeeperObserver, LeaseKeeper
from mailrules.state.starts import Starts
from tests.waiting import WAIT, until

EPOCH = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeLeases:
    """One PostgreSQL's leases as one replica sees them, on the fake clock: a lease expires
    `lease_seconds` after it was acquired or renewed, and an expired one is never renewed."""

    def __init__(self, clock: Clock, lease_seconds: float = 15.0, replica: str = "r0") -> None:
        self.clock = clock
        self._seconds = lease_seconds
        self._replica = replica
        self.expiry: dict[str, float] = {}  # account -> when its lease runs out (fake seconds)
        self.tokens: dict[str, int] = {}
        self.renewed: dict[str, list[float]] = {}  # account -> the times it was acquired or renewed
        self.released: list[str] = []
        self.others: list[str] = []  # other live replicas

    @property
    def replica(self) -> str:
        return self._replica

    @property
    def lease_seconds(self) -> float:
        return self._seconds

    def register(self) -> None:
        return None

    def heartbeat(self) -> None:
        return None

    def _lease(self, account: str) -> Lease:
        now = self.clock.now
        self.expiry[account] = now + self._seconds
        self.renewed.setdefault(account, []).append(now)
        return Lease(account, self._replica, self.tokens[account], EPOCH, now + 0.9 * self._seconds)

    def acquire(self, account: str) -> Lease | None:
        if self.expiry.get(account, -1.0) > self.clock.now:
            return None
        self.tokens[account] = self.tokens.get(account, 0) + 1
        return self._lease(account)

    def renew(self, leases: Iterable[Lease]) -> list[Lease]:
        return [
            self._lease(x.account)
            for x in leases
            if self.tokens.get(x.account) == x.token and self.expiry.get(x.account, -1.0) > self.clock.now
        ]

    def release(self, leases: Iterable[Lease]) -> None:
        for x in leases:
            if self.tokens.get(x.account) == x.token:
                self.expiry.pop(x.account, None)
                self.released.append(x.account)

    def owners(self) -> dict[str, Holder]:
        now = self.clock.now
        return {
            a: Holder(a, self._replica, self.tokens[a], EPOCH, True)
            for a, t in self.expiry.items()
            if t > now
        }

    def replicas(self) -> list[str]:
        return sorted([self._replica, *self.others])

    def claimed(self, accounts: Iterable[str]) -> set[str]:
        return set()

    def retire(self) -> None:
        return None

    def close(self) -> None:
        return None

    def lose(self, account: str) -> None:
        """The lease runs out in the database (as if this replica had been paused)."""
        self.expiry[account] = self.clock.now


class Rounds:
    """Drives `keeper` like the daemon's thread: a round every interval from the start of the
    previous one, or at once when a round took longer than that."""

    def __init__(self, keeper: LeaseKeeper, clock: Clock) -> None:
        self.keeper = keeper
        self.clock = clock
        self.next = clock.now

    def run(self, n: int = 1) -> list[tuple[str, ...]]:
        taken = []
        for _ in range(n):
            self.clock.now = max(self.clock.now, self.next)
            self.next = self.clock.now + self.keeper.interval
            taken.append(self.keeper.round().taken)
        return taken


def gaps(leases: FakeLeases) -> list[float]:
    """Every interval between two renewals (or the acquisition and the first renewal) of a lease."""
    return [b - a for times in leases.renewed.values() for a, b in itertools.pairwise(times)]


ACCOUNTS = [f"u{i:02d}" for i in range(20)]


def test_slow_starts_in_the_round_are_spread_over_rounds_and_no_lease_waits_past_an_interval() -> None:
    clock = Clock()
    leases = FakeLeases(clock)  # 15 s: a round every 5 s, 2.5 s of taking per round
    started: list[str] = []

    def start(lease: Lease) -> None:  # each start costs 1 s (30 watchers on a loaded replica)
        started.append(lease.account)
        clock.now += 1.0

    deferred: list[int] = []

    class Takes(KeeperObserver):
        def takes(self, left: int, starting: int) -> None:
            deferred.append(left)

    keeper = LeaseKeeper(leases, ACCOUNTS, start=start, stop=lambda a: None, clock=clock, observer=Takes())
    keeper.leases.register()
    taken = Rounds(keeper, clock).run(8)
    # 3 per round (the third starts at 2 s < 2.5 s), none lost, every account started once
    assert [len(t) for t in taken] == [3, 3, 3, 3, 3, 3, 2, 0]
    assert deferred == [17, 14, 11, 8, 5, 2, 0, 0]  # (mailrules_lease_takes_deferred_total)
    assert keeper.deferred == 0 and sorted(keeper.held) == ACCOUNTS == sorted(started)
    assert all(gap <= keeper.interval for gap in gaps(leases))
    assert [x.token for x in keeper.held.values()] == [1] * 20


class Unlimited(LeaseKeeper):
    """The keeper before the fix: every take in one round, however long it lasts."""

    @property
    def take_seconds(self) -> float:
        return math.inf


def test_without_the_take_limit_the_fake_store_shows_the_benchs_lost_leases() -> None:
    # The same 20 one-second starts with no take limit: the leases taken first are past their
    # expiry when the next round renews them (what cluster_bench saw at 3,000 mailboxes).
    clock = Clock()
    leases = FakeLeases(clock)
    keeper = Unlimited(
        leases, ACCOUNTS, start=lambda x: setattr(clock, "now", clock.now + 1.0), stop=lambda a: None
    )
    keeper.leases.register()
    (taken,) = Rounds(keeper, clock).run()  # one round of 20 s
    assert len(taken) == 20
    assert keeper.round().lost == tuple(sorted(taken[:6]))  # taken at 0..5 s: their 15 s ran out at 20 s


def test_a_background_start_longer_than_the_lease_holds_back_no_renewal() -> None:
    clock = Clock()
    leases = FakeLeases(clock)
    begun: list[str] = []
    first_begun, let_go = threading.Event(), threading.Event()
    all_started = threading.Event()

    def start(lease: Lease) -> None:
        begun.append(lease.account)
        if len(begun) == 1:
            first_begun.set()
            assert let_go.wait(WAIT)  # this start lasts as long as the test says: longer than a lease
        if len(begun) == 6:
            all_started.set()

    keeper = LeaseKeeper(
        leases, ACCOUNTS[:6], start=start, stop=lambda a: None, clock=clock, background_starts=True
    )
    keeper.leases.register()
    rounds = Rounds(keeper, clock)
    assert rounds.run() == [("u03", "u05", "u01", "u02", "u04", "u00")]  # all acquired, in rendezvous order
    assert first_begun.wait(WAIT)
    assert keeper.starting() == 6  # one in flight, five waiting
    rounds.run(9)  # 45 s: three lease lengths while the first start goes on
    assert begun == ["u03"] and sorted(keeper.held) == ACCOUNTS[:6]
    assert [x.token for x in keeper.held.values()] == [1] * 6  # never lost, never taken again
    assert all(gap <= keeper.interval for gap in gaps(leases))
    assert all(len(times) == 10 for times in leases.renewed.values())  # renewed in every round
    let_go.set()
    assert all_started.wait(WAIT)
    keeper.shutdown()
    assert keeper.starting() == 0 and sorted(leases.released) == ACCOUNTS[:6]


class Recorder(KeeperObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def acquired(self, lease: Lease) -> None:
        self.events.append(("acquired", lease.account))

    def released(self, account: str) -> None:
        self.events.append(("released", account))

    def lost(self, account: str) -> None:
        self.events.append(("lost", account))


def test_a_lost_account_waiting_to_start_is_cancelled_and_one_starting_is_stopped_after_its_start() -> None:
    clock = Clock()
    leases = FakeLeases(clock)
    log: list[str] = []
    entered, let_go = threading.Event(), threading.Event()

    def start(lease: Lease) -> None:
        log.append(f"start {lease.account}#{lease.token}")
        if lease.account == "a":
            entered.set()
            assert let_go.wait(WAIT)
        log.append(f"started {lease.account}#{lease.token}")

    keeper = LeaseKeeper(
        leases,
        ["a", "b", "c"],
        start=start,
        stop=lambda a: log.append(f"stop {a}"),
        clock=clock,
        background_starts=True,
    )
    keeper.leases.register()
    rounds = Rounds(keeper, clock)
    rounds.run()
    assert entered.wait(WAIT)
    leases.lose("a")  # in flight
    leases.lose("b")  # waiting behind it
    # The round returns while a's start goes on: a's stop waits for it on the starts' thread (and
    # both are taken again at once, with new tokens: nobody else is live).
    assert keeper.round().lost == ("a", "b")
    assert "stop a" not in log and keeper.stopping() == 1
    assert keeper.starting() == 4  # b#1 cancelled; a#1 in flight; c, a#2, b#2 waiting
    let_go.set()
    assert until(lambda: keeper.starting() == 0 and keeper.stopping() == 0)
    # never a stop beside the same account's start, and the stop before the account's next start
    assert log.index("started a#1") < log.index("stop a") < log.index("start a#2")
    assert "start b#1" not in log and "stop b" not in log  # cancelled: never started, nothing to stop
    keeper.shutdown()
    assert "start c#1" in log and "stop c" in log


def test_a_background_start_that_fails_is_released_in_the_next_round() -> None:
    clock = Clock()
    leases = FakeLeases(clock)
    failed, again = threading.Event(), threading.Event()
    recorder = Recorder()

    def start(lease: Lease) -> None:
        if lease.token == 1:
            failed.set()
            raise RuntimeError("cannot start")
        again.set()

    stopped: list[str] = []
    keeper = LeaseKeeper(
        leases,
        ["only"],
        start=start,
        stop=stopped.append,
        observer=recorder,
        clock=clock,
        background_starts=True,
    )
    keeper.leases.register()
    rounds = Rounds(keeper, clock)
    assert rounds.run() == [("only",)]
    assert failed.wait(WAIT) and until(lambda: keeper.starting() == 0)  # the failure is recorded
    # next round: released (not stopped: it never started), then taken again with a new token
    assert rounds.run() == [("only",)]
    assert leases.released == ["only"] and stopped == []
    assert keeper.held["only"].token == 2
    assert recorder.events == [("acquired", "only"), ("released", "only"), ("acquired", "only")]
    assert again.wait(WAIT)  # started (or being started: shutdown waits for it, then stops it)
    keeper.shutdown()
    assert stopped == ["only"] and recorder.events[-1] == ("released", "only")


def test_handing_over_cancels_the_starts_still_waiting() -> None:
    clock = Clock()
    leases = FakeLeases(clock)
    entered, let_go = threading.Event(), threading.Event()
    begun: list[str] = []

    def start(lease: Lease) -> None:
        begun.append(lease.account)
        entered.set()
        assert let_go.wait(WAIT)

    accounts = ACCOUNTS[:6]
    stopped: list[str] = []
    keeper = LeaseKeeper(
        leases, accounts, start=start, stop=stopped.append, clock=clock, background_starts=True
    )
    keeper.leases.register()
    rounds = Rounds(keeper, clock)
    assert rounds.run() == [("u03", "u05", "u01", "u02", "u04", "u00")]  # rendezvous order
    assert entered.wait(WAIT) and begun == ["u03"]
    leases.others = ["r1"]  # a second replica: this one gives three accounts away (u03, u05, u01)
    assert keeper.round().given == ("u03", "u05", "u01")  # at once: u03's stop waits for its start
    assert sorted(keeper.held) == ["u00", "u02", "u04"] and stopped == []
    assert keeper.starting() == 4  # u05 and u01 cancelled; u03 in flight, three waiting
    let_go.set()
    assert until(lambda: keeper.starting() == 0 and keeper.stopping() == 0)
    assert stopped == ["u03"]  # the one started, after its start; the two cancelled never started
    assert begun == ["u03", "u02", "u04", "u00"]
    keeper.shutdown()
    assert sorted(leases.released) == sorted(accounts) and sorted(stopped) == ["u00", "u02", "u03", "u04"]


def test_starts_refuse_work_once_closed() -> None:
    starts = Starts(lambda lease: None)
    starts.close()
    with pytest.raises(RuntimeError):
        starts.submit(Lease("a", "r0", 1, EPOCH, 0.0))
    assert starts.pending() == 0 and starts.stop(["a"]) == [] and starts.failed() == []


def test_a_stop_and_a_start_waited_for_longer_than_a_lease_hold_back_no_renewal() -> None:
    # The failover at 3,000 IDLE mailboxes (bench/README.md): the survivors' keepers stopped the
    # accounts lost in the round, waited there for starts in flight and for the stops themselves,
    # and went 49-81 s without a round. Here a's start and then the stop of what was lost each
    # last three lease lengths on the fake clock; every held lease is renewed in every round.
    clock = Clock()
    leases = FakeLeases(clock)
    log: list[str] = []
    start_entered, start_go = threading.Event(), threading.Event()
    stop_entered, stop_go = threading.Event(), threading.Event()

    def start(lease: Lease) -> None:
        log.append(f"start {lease.account}#{lease.token}")
        if lease.account == "a" and lease.token == 1:
            start_entered.set()
            assert start_go.wait(WAIT)

    def stop_many(accounts: Sequence[str]) -> None:
        log.append(f"stop {','.join(accounts)}")
        stop_entered.set()
        assert stop_go.wait(WAIT)

    keeper = LeaseKeeper(
        leases,
        ["a", "b", "c", "d"],
        start=start,
        stop=lambda a: None,
        stop_many=stop_many,
        clock=clock,
        background_starts=True,
    )
    keeper.leases.register()
    rounds = Rounds(keeper, clock)
    rounds.run()
    assert start_entered.wait(WAIT)
    leases.lose("a")  # its start in flight
    leases.lose("c")
    (taken,) = rounds.run()  # lost, and taken again at once (nobody else is live)
    assert sorted(taken) == ["a", "c"] and sorted(keeper.held) == ["a", "b", "c", "d"]
    rounds.run(9)  # 45 s while a's start goes on
    assert not stop_entered.is_set()  # a's stop waits for a's start, not the keeper
    start_go.set()
    assert stop_entered.wait(WAIT)
    rounds.run(9)  # 45 s more while the stop goes on
    assert all(gap <= keeper.interval for gap in gaps(leases))
    assert all(len(times) == 20 for times in leases.renewed.values())  # acquired or renewed each round
    assert {x.account: x.token for x in keeper.held.values()} == {"a": 2, "b": 1, "c": 2, "d": 1}
    stop_go.set()
    assert until(lambda: keeper.starting() == 0 and keeper.stopping() == 0)
    first_stop = next(x for x in log if x.startswith("stop "))
    assert first_stop.startswith("stop a") and "start b#2" not in log and "start d#2" not in log
    assert log.index("start a#1") < log.index(first_stop) < log.index("start a#2")
    keeper.shutdown()


class BusyLeases(FakeLeases):
    """Gives `busy` back as it was given (state/leases.py: a write in flight held its row past the
    renewal's short wait), held but not renewed."""

    busy: set[str] = set()

    def renew(self, leases: Iterable[Lease]) -> list[Lease]:
        given = list(leases)
        kept = [
            x for x in given if x.account in self.busy and self.expiry.get(x.account, -1.0) > self.clock.now
        ]
        return sorted(
            super().renew(x for x in given if x.account not in self.busy) + kept, key=lambda x: x.account
        )


class Deferrals(KeeperObserver):
    def __init__(self) -> None:
        self.deferred: list[str] = []
        self.losses: list[str] = []

    def renewal_deferred(self, account: str) -> None:
        self.deferred.append(account)

    def lost(self, account: str) -> None:
        self.losses.append(account)


def test_a_lease_whose_row_is_busy_is_kept_for_the_next_round_and_counted() -> None:
    clock = Clock()
    leases = BusyLeases(clock)
    seen = Deferrals()
    keeper = LeaseKeeper(
        leases, ["a", "b"], start=lambda x: None, stop=lambda a: None, observer=seen, clock=clock
    )
    rounds = Rounds(keeper, clock)
    rounds.run()
    before = keeper.held["a"]
    leases.busy = {"a"}
    rounds.run()
    assert keeper.held["a"] == before and keeper.held["b"].deadline > before.deadline  # b renewed
    assert seen.deferred == ["a"] and seen.losses == []
    leases.busy = set()
    rounds.run()
    assert keeper.held["a"].deadline > before.deadline and seen.deferred == ["a"]
