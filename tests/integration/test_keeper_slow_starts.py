"""The lease keeper on a real PostgreSQL with starts slower than a lease (state/keeper.py,
state/starts.py): the first start lasts over two lease lengths, and meanwhile every lease the
replica took (started or not) is renewed in every round, none is lost or taken by another replica,
and each account's work then writes under the token it was acquired with. Before the fix the
round started accounts itself and renewed nothing until it ended (bench/README.md, cluster_bench).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from mailrules.state import Checkpoint
from mailrules.state.interface import Lease
from mailrules.state.keeper import LeaseKeeper
from mailrules.state.leases import Leases
from mailrules.state.postgres import PostgresState
from tests.unit.test_state_contract import T0

pytestmark = pytest.mark.integration

LEASE_SECONDS = 1.5  # a round every 0.5 s
ACCOUNTS = [f"user{i:02d}" for i in range(8)]
WAIT = 60.0  # a bound on waiting for another thread (a hung test fails; not a duration)


@pytest.fixture
def state(pg_dsn: str) -> Iterator[PostgresState]:
    with PostgresState.open(pg_dsn, lease_seconds=LEASE_SECONDS, retry_seconds=10) as s:
        yield s


def test_a_start_longer_than_two_leases_loses_nothing_and_the_work_writes_under_its_token(
    state: PostgresState,
) -> None:
    r0 = Leases.open(state.database, "r0", LEASE_SECONDS)
    r1 = Leases.open(state.database, "r1", LEASE_SECONDS)  # another replica, trying to take them
    try:
        rounds_done = 0
        let_go = threading.Event()
        begun: list[Lease] = []
        written: list[str] = []

        def start(lease: Lease) -> None:
            begun.append(lease)
            if len(begun) == 1:
                assert let_go.wait(WAIT)  # until the rounds below span over two lease lengths
            # the account's work writes through its fenced view: under the token it was taken with
            state.fenced([lease]).set_checkpoint(lease.account, "INBOX", Checkpoint(7, 1, None, T0))
            written.append(lease.account)

        keeper = LeaseKeeper(r0, ACCOUNTS, start=start, stop=lambda a: None, background_starts=True)
        lost: list[str] = []
        changes = keeper.begin()
        assert sorted(changes.taken) == ACCOUNTS  # all acquired in the first round; none started yet
        began = time.monotonic()
        next_round = began + keeper.interval
        while keeper.starting() or not let_go.is_set():
            time.sleep(max(0.0, next_round - time.monotonic()))  # the daemon's pace: a round per interval
            next_round += keeper.interval
            lost += keeper.round().lost
            rounds_done += 1
            assert all(r1.acquire(a) is None for a in ACCOUNTS)  # held: nobody else takes one
            if time.monotonic() - began > 2 * LEASE_SECONDS:
                let_go.set()
            assert rounds_done < 200, "the starts never finished"
        assert lost == [] and sorted(written) == ACCOUNTS
        holders = r1.owners()
        assert {a: (h.owner, h.token, h.held) for a, h in holders.items()} == {
            a: ("r0", 1, True) for a in ACCOUNTS
        }
        assert all(state.get_checkpoint(a, "INBOX") == Checkpoint(7, 1, None, T0) for a in ACCOUNTS)
        keeper.shutdown()
        assert not any(h.held for h in r1.owners().values())
    finally:
        r0.close()
        r1.close()
