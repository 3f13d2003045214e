"""Fair share of the accounts (state/share.py) and the lease keeper's round (state/keeper.py) with
the leases of a lone daemon: who takes, who gives, and that nothing moves once it is fair."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mailrules.state.interface import Lease
from mailrules.state.keeper import LeaseKeeper
from mailrules.state.share import Share, targets, wanted
from mailrules.state.solo import SoloLeases

ACCOUNTS = [f"acct{i:02d}" for i in range(30)]


def owned_by(counts: dict[str, int]) -> dict[str, str | None]:
    owners: dict[str, str | None] = {}
    it = iter(ACCOUNTS)
    for replica, n in counts.items():
        for _ in range(n):
            owners[next(it)] = replica
    return owners


def test_a_lone_replica_takes_every_free_account() -> None:
    share = wanted("a", ACCOUNTS, {}, ["a"])
    assert sorted(share.take) == ACCOUNTS and share.give == ()
    assert wanted("a", ACCOUNTS, {}, []).take == share.take  # itself counts as live


def test_a_joining_replica_gets_its_share_from_the_others() -> None:
    owners = owned_by({"a": 15, "b": 15})
    live = ["a", "b", "c"]
    assert len(wanted("a", ACCOUNTS, owners, live).give) == 5
    assert len(wanted("b", ACCOUNTS, owners, live).give) == 5
    assert wanted("c", ACCOUNTS, owners, live) == Share()  # nothing free yet
    given = set(wanted("a", ACCOUNTS, owners, live).give) | set(wanted("b", ACCOUNTS, owners, live).give)
    freed = {a: (None if a in given else o) for a, o in owners.items()}
    assert set(wanted("c", ACCOUNTS, freed, live).take) == given
    assert wanted("a", ACCOUNTS, freed, live) == Share()


def test_nothing_moves_while_the_spread_is_at_most_one() -> None:
    spread_two = owned_by({"a": 11, "b": 10, "c": 9})
    assert len(wanted("a", ACCOUNTS, spread_two, list("abc")).give) == 1
    assert wanted("b", ACCOUNTS, spread_two, list("abc")) == Share()
    fair = owned_by({"a": 10, "b": 10, "c": 10})
    for me in "abc":
        assert wanted(me, ACCOUNTS, fair, ["a", "b", "c"]) == Share()
    uneven = owned_by({"a": 8, "b": 8, "c": 7, "d": 7})
    for me in "abcd":
        assert wanted(me, ACCOUNTS, uneven, list("abcd")) == Share()


def test_the_remainder_stays_with_those_owning_most() -> None:
    assert targets({"a": 12, "b": 12, "c": 7}, 31) == {"a": 11, "b": 10, "c": 10}
    assert targets({"a": 0, "b": 0}, 3) == {"a": 2, "b": 1}
    owners = owned_by({"a": 11, "b": 11, "c": 8})
    assert len(wanted("a", ACCOUNTS, owners, list("abc")).give) == 1
    assert len(wanted("b", ACCOUNTS, owners, list("abc")).give) == 1


def test_accounts_of_a_replica_not_seen_any_more_wait_for_their_lease() -> None:
    owners = owned_by({"a": 10, "b": 10, "dead": 10})
    share_a = wanted("a", ACCOUNTS, owners, ["a", "b"])
    assert share_a == Share()  # 10 + 10 + 10 still leased: nothing is free, nobody gives
    expired = {acct: (None if o == "dead" else o) for acct, o in owners.items()}
    taken = set(wanted("a", ACCOUNTS, expired, ["a", "b"]).take)
    assert len(taken) == 5 and all(owners[t] == "dead" for t in taken)


def test_replicas_short_of_accounts_try_different_ones_first() -> None:
    owners = owned_by({"a": 10})
    live = ["a", "b", "c"]
    take_b = wanted("b", ACCOUNTS, owners, live).take
    take_c = wanted("c", ACCOUNTS, owners, live).take
    assert len(take_b) == len(take_c) == 10 and set(take_b) != set(take_c)


def simulate(owners: dict[str, str | None], live: list[str], rng: random.Random) -> tuple[int, bool]:
    """Rounds (each replica in a random order, each acting on what it sees) until a full round
    changes nothing; (rounds, fair)."""
    for rounds in range(1, 50):
        moved = False
        for me in rng.sample(live, len(live)):
            share = wanted(me, ACCOUNTS, owners, live)
            for acct in share.give:
                owners[acct] = None
                moved = True
            for acct in share.take:
                if owners.get(acct) is None:  # acquire: only a free one
                    owners[acct] = me
                    moved = True
        if not moved:
            counts = [sum(1 for o in owners.values() if o == r) for r in live]
            return rounds, all(owners.get(a) in live for a in ACCOUNTS) and max(counts) - min(counts) <= 1
    return 50, False


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", "d", "e", None]), min_size=30, max_size=30),
    st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=5, unique=True),
    st.integers(0, 2**32),
)
def test_any_start_settles_fair_in_a_few_rounds_and_then_stays(
    holders: list[str | None], live: list[str], seed: int
) -> None:
    # accounts held by a replica that is not live stay held (their leases have not expired)
    owners = dict(zip(ACCOUNTS, holders, strict=True))
    for acct, owner in owners.items():
        if owner is not None and owner not in live:
            owners[acct] = None  # expired meanwhile: free
    rounds, fair = simulate(owners, sorted(live), random.Random(seed))
    assert fair and rounds <= 4


# -- the keeper of a lone daemon ---------------------------------------------------------------------


def test_a_lone_daemon_keeps_every_account_and_lets_them_go_at_shutdown() -> None:
    started: list[Lease] = []
    stopped: list[str] = []
    keeper = LeaseKeeper(SoloLeases("solo"), ACCOUNTS[:3], start=started.append, stop=stopped.append)
    changes = keeper.begin()
    assert sorted(changes.taken) == ACCOUNTS[:3] and changes.given == changes.lost == ()
    assert sorted(x.account for x in started) == ACCOUNTS[:3] and all(x.token == 0 for x in started)
    assert keeper.round().taken == () and keeper.expire() == []
    keeper.shutdown()
    assert sorted(stopped) == ACCOUNTS[:3] and keeper.held == {}


def test_an_account_whose_start_fails_is_let_go_and_tried_again() -> None:
    attempts: list[str] = []

    def start(lease: Lease) -> None:
        attempts.append(lease.account)
        if len(attempts) == 1:
            raise RuntimeError("cannot start")

    keeper = LeaseKeeper(SoloLeases(), ["only"], start=start, stop=lambda a: None)
    assert keeper.begin().taken == () and keeper.held == {}
    assert keeper.round().taken == ("only",)
    assert attempts == ["only", "only"]
