"""Account leases and fencing on a real PostgreSQL: acquisition, expiry and takeover (short
`lease_seconds`), a stale token's writes refused, a replica paused inside a write cut off, names
of live replicas not shared, and three keepers sharing 30 accounts through joins, deaths and
clean stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from mailrules.state import Checkpoint, LeaseLost, StateError
from mailrules.state.interface import Lease
from mailrules.state.keeper import LeaseKeeper
from mailrules.state.leases import Leases
from mailrules.state.postgres import PostgresState
from tests.unit.test_state_contract import T0, entry

ACCOUNTS = [f"user{i:02d}" for i in range(30)]


@pytest.fixture
def state(pg_dsn: str) -> Iterator[PostgresState]:
    with PostgresState.open(pg_dsn, lease_seconds=1.0, retry_seconds=10) as s:
        yield s


@pytest.fixture
def replica(state: PostgresState) -> Iterator[Callable[..., Leases]]:
    opened: list[Leases] = []

    def make(name: str, lease_seconds: float = 1.0) -> Leases:
        opened.append(Leases.open(state.database, name, lease_seconds))
        return opened[-1]

    yield make
    for leases in opened:
        leases.close()


def until(condition: Callable[[], bool], what: str, tries: int = 400) -> None:
    """Poll `condition` (every 25 ms, bounded): a wait for the database's clock, not a timed assert."""
    for _ in range(tries):
        if condition():
            return
        time.sleep(0.025)
    raise AssertionError(f"never: {what}")


def test_an_account_has_one_holder_and_each_acquisition_a_new_token(replica: Callable[..., Leases]) -> None:
    a, b = replica("a", 30.0), replica("b", 30.0)
    first = a.acquire("work")
    assert first is not None and first.owner == "a" and first.token == 1
    assert b.acquire("work") is None and a.acquire("work") is None
    (renewed,) = a.renew([first])
    assert renewed.token == 1 and renewed.expires_at >= first.expires_at
    holder = b.owners()["work"]
    assert holder.owner == "a" and holder.held and holder.token == 1
    a.release([renewed])
    assert not b.owners()["work"].held and a.renew([renewed]) == []
    second = b.acquire("work")  # at once: no waiting for an expiry
    assert second is not None and second.token == 2 and second.owner == "b"
    assert b.owners(["work", "other"]).keys() == {"work"}


def test_an_expired_lease_is_taken_over_and_its_holder_can_neither_renew_nor_write(
    state: PostgresState, replica: Callable[..., Leases]
) -> None:
    a, b = replica("a"), replica("b")
    lease_a = a.acquire("work")
    assert lease_a is not None
    as_a = state.fenced([lease_a])
    run = state.begin_run("daemon", dry_run=False)
    as_a.record(entry(run, account="work", uid=1))
    as_a.set_checkpoint("work", "INBOX", Checkpoint(7, 1, None, T0))
    # a pauses (no renewal): the database's clock runs its lease out, b takes the account
    until(lambda: not b.owners()["work"].held, "the lease expired")
    lease_b = b.acquire("work")
    assert lease_b is not None and lease_b.token == lease_a.token + 1
    assert a.renew([lease_a]) == []
    # every write a would still try carries its old token: refused, nothing written
    fwd = entry(run, account="work", uid=2, action="forward", detail="x@example.org", destination=None)
    for write in (
        lambda: as_a.record(entry(run, account="work", uid=2)),
        lambda: as_a.set_checkpoint("work", "INBOX", Checkpoint(7, 2, None, T0)),
        lambda: as_a.intent("fwd-2", fwd),
        lambda: as_a.claim([("copy-2", entry(run, account="work", uid=2, action="copy"))]),
        lambda: as_a.set_retries("work", "INBOX", 7, {2: 1}),
    ):
        with pytest.raises(LeaseLost, match=r"lease of account 'work' \(token 1\) was lost"):
            write()
    assert [e.uid for e in state.find(run_id=run)] == [1]
    assert state.get_checkpoint("work", "INBOX") == Checkpoint(7, 1, None, T0)
    assert state.pending_intents() == [] and state.get_retries("work", "INBOX", 7) == {}
    # the new holder writes; a view never writes an account it holds no lease for
    as_b = state.fenced([lease_b])
    assert as_b.intent("fwd-2", fwd) is True
    as_b.set_checkpoint("work", "INBOX", Checkpoint(7, 2, None, T0))
    with pytest.raises(LeaseLost, match="'home' is not held by this replica"):
        as_b.record(entry(run, account="home"))
    # confirming what was sent is never refused: it happened, whoever holds the account now
    as_a.confirm("fwd-2")
    assert state.is_confirmed("fwd-2")
    with as_b:  # a view shares the state's pool: closing it leaves the state open
        pass
    assert state.get_checkpoint("work", "INBOX") == Checkpoint(7, 2, None, T0)


def test_a_batch_with_a_stale_token_commits_nothing_of_the_batch(
    state: PostgresState, replica: Callable[..., Leases]
) -> None:
    a, b = replica("a"), replica("b")
    lease_home = a.acquire("home")
    lease_work = a.acquire("work")
    assert lease_home is not None and lease_work is not None
    a.release([lease_work])
    assert b.acquire("work") is not None
    as_a = state.fenced([lease_home, lease_work])
    run = state.begin_run("daemon", dry_run=False)
    with pytest.raises(LeaseLost, match="'work'"):
        as_a.record_many([entry(run, account="home", uid=1), entry(run, account="work", uid=2)])
    with pytest.raises(LeaseLost), as_a.transaction():
        as_a.record(entry(run, account="home", uid=3))
        as_a.set_checkpoint("work", "INBOX", Checkpoint(7, 3, None, T0))
    assert state.find(run_id=run) == [] and state.get_checkpoint("work", "INBOX") is None


def test_a_replica_paused_inside_a_write_is_cut_off_and_the_takeover_goes_ahead(
    state: PostgresState, replica: Callable[..., Leases]
) -> None:
    """Its transaction holds the lease row (FOR SHARE): PostgreSQL ends the idle session after
    lease_seconds (idle_in_transaction_session_timeout), so the next holder is not held back and
    the paused write never commits."""
    a, b = replica("a"), replica("b")
    lease_a = a.acquire("work")
    assert lease_a is not None
    as_a = state.fenced([lease_a])
    run = state.begin_run("daemon", dry_run=False)
    resume = threading.Event()
    outcome: list[BaseException | None] = []

    def paused_writer() -> None:
        try:
            with as_a.transaction():
                as_a.record(entry(run, account="work", uid=1))
                resume.wait(30)  # SIGSTOP here
            outcome.append(None)
        except BaseException as exc:  # reported below
            outcome.append(exc)

    writer = threading.Thread(target=paused_writer)
    writer.start()
    taken: list[Lease] = []

    def b_took_over() -> bool:
        if lease := b.acquire("work"):
            taken.append(lease)
        return bool(taken)

    until(b_took_over, "b took over")
    resume.set()  # SIGCONT
    writer.join()
    assert taken[0].token == 2
    assert isinstance(outcome[0], StateError)
    assert state.find(run_id=run) == []


def test_two_live_daemons_cannot_share_a_name(replica: Callable[..., Leases]) -> None:
    first, twin = replica("same"), replica("same")
    first.register()
    first.heartbeat()
    with pytest.raises(StateError, match="replica name 'same' is in use by another running daemon"):
        twin.register(wait=0.2)
    assert first.replicas() == ["same"]
    first.retire()
    twin.register(wait=0)  # a clean stop frees the name at once
    with pytest.raises(LeaseLost, match="taken by another daemon"):
        first.heartbeat()


def test_a_replica_that_stops_its_heartbeat_is_not_seen_after_lease_seconds(
    replica: Callable[..., Leases],
) -> None:
    a, b = replica("a"), replica("b")
    a.register()
    b.register()
    assert a.replicas() == ["a", "b"]

    def a_gone() -> bool:
        b.heartbeat()
        return b.replicas() == ["b"]

    until(a_gone, "a is no longer seen")


# -- three keepers, thirty accounts ---------------------------------------------------------------


class Cluster:
    """Keepers sharing ACCOUNTS; each records what it works on, and the test checks that no
    account is ever worked on by two at once."""

    def __init__(self, make: Callable[..., Leases], lease_seconds: float) -> None:
        self.make = make
        self.lease_seconds = lease_seconds
        self.keepers: dict[str, LeaseKeeper] = {}
        self.working: dict[str, str] = {}  # account -> replica working on it

    def join(self, name: str) -> LeaseKeeper:
        def start(lease: Lease) -> None:
            assert lease.account not in self.working, f"{lease.account} worked on twice"
            self.working[lease.account] = name

        def stop(account: str) -> None:
            if self.working.get(account) == name:
                del self.working[account]

        keeper = LeaseKeeper(self.make(name, self.lease_seconds), ACCOUNTS, start=start, stop=stop)
        self.keepers[name] = keeper
        keeper.begin()
        return keeper

    def rounds(self, n: int = 1) -> list[int]:
        """`n` rounds of every keeper; how many accounts each changed in the last one."""
        moved: list[int] = []
        for _ in range(n):
            moved = []
            for keeper in self.keepers.values():
                c = keeper.round()
                moved.append(len(c.taken) + len(c.given) + len(c.lost))
        return moved

    def counts(self) -> dict[str, int]:
        return {name: len(k.held) for name, k in self.keepers.items()}


def test_three_replicas_share_thirty_accounts_through_joins_deaths_and_clean_stops(
    replica: Callable[..., Leases],
) -> None:
    cluster = Cluster(replica, lease_seconds=1.5)
    cluster.join("r0")
    assert cluster.counts() == {"r0": 30}  # alone: everything
    cluster.join("r1")
    cluster.join("r2")
    cluster.rounds(3)
    assert sorted(cluster.counts().values()) == [10, 10, 10]
    assert cluster.rounds() == [0, 0, 0]  # fair: nothing moves any more
    assert len(cluster.working) == 30

    cluster.join("r3")  # a fourth joins: 8, 8, 7, 7
    cluster.rounds(3)
    assert sorted(cluster.counts().values()) == [7, 7, 8, 8] and cluster.rounds() == [0, 0, 0, 0]

    # r3 dies (SIGKILL: no release, no more rounds): its accounts wait for their leases to expire
    dead = cluster.keepers.pop("r3")
    orphans = set(dead.held)
    for account in orphans:
        cluster.working.pop(account)
    until(lambda: (cluster.rounds(), sum(cluster.counts().values()))[1] == 30, "the others took over")
    cluster.rounds(2)
    assert sorted(cluster.counts().values()) == [10, 10, 10] and cluster.rounds() == [0, 0, 0]

    # r2 stops cleanly (SIGTERM): released at once, taken over in the very next round
    cluster.keepers.pop("r2").shutdown()
    cluster.rounds(1)
    assert sum(cluster.counts().values()) == 30
    assert sorted(cluster.counts().values()) == [15, 15] and len(cluster.working) == 30


def test_a_renewal_does_not_wait_behind_a_write_in_flight(pg_dsn: str) -> None:
    """A fenced write holds its lease row FOR SHARE until it commits, and a renewal UPDATEs that row:
    one write that lasts (a thread starved inside its transaction, up to lease_seconds before
    PostgreSQL ends it) held back the renewal of every lease of the replica. Now the free leases
    are renewed at once; the busy one is waited for a little (lock_timeout), then kept as it was
    (still held, its local deadline not pushed) for the next round."""
    with PostgresState.open(pg_dsn, lease_seconds=15.0, retry_seconds=10) as state:
        a = Leases.open(state.database, "a", 15.0)
        try:
            work, home = a.acquire("work"), a.acquire("home")
            assert work is not None and home is not None
            as_a = state.fenced([work])
            run = state.begin_run("daemon", dry_run=False)
            in_write, resume = threading.Event(), threading.Event()
            outcome: list[BaseException | None] = []

            def slow_writer() -> None:
                try:
                    with as_a.transaction():
                        as_a.record(entry(run, account="work", uid=1))  # the row is held FOR SHARE now
                        in_write.set()
                        resume.wait(60)
                    outcome.append(None)
                except BaseException as exc:  # reported below
                    outcome.append(exc)

            writer = threading.Thread(target=slow_writer)
            writer.start()
            try:
                assert in_write.wait(30)
                renewed = {x.account: x for x in a.renew([work, home])}
                still_writing = not outcome
            finally:
                resume.set()
                writer.join()
            assert still_writing  # the renewal came back while the write was in flight
            assert renewed["work"] == work  # kept as it was: held, not pushed
            assert renewed["home"].deadline > home.deadline and renewed["home"].expires_at > home.expires_at
            assert outcome == [None] and len(state.find(run_id=run)) == 1  # the write went through
            (again,) = a.renew([work])  # free again: renewed in the next round
            assert again.token == work.token and again.expires_at > work.expires_at
        finally:
            a.close()
