"""A command's claim as the lease keeper sees it (state/keeper.py, daemon/cluster_metrics.py): a
claimed account held is handed over at once, a claimed account free is not taken, and once the
claim ends the account is taken again; the metric says which accounts are claimed."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry

from mailrules.daemon.cluster_metrics import ClusterMetrics
from mailrules.state.keeper import LeaseKeeper
from mailrules.state.solo import SoloLeases
from tests.unit.test_daemon_cluster import samples


class ClaimedLeases(SoloLeases):
    """One daemon's leases, with the claims a command holds now (`claims`)."""

    def __init__(self) -> None:
        super().__init__("r0")
        self.claims: set[str] = set()

    def claimed(self, accounts: Iterable[str]) -> set[str]:
        return self.claims & set(accounts)


def test_claimed_accounts_are_handed_over_and_not_taken_until_the_claim_ends() -> None:
    leases = ClaimedLeases()
    started: list[str] = []
    stopped: list[str] = []
    registry = CollectorRegistry()
    metrics = ClusterMetrics(registry)
    metrics.init(["a", "b", "c"])
    keeper = LeaseKeeper(
        leases,
        ["a", "b", "c"],
        start=lambda x: started.append(x.account),
        stop=stopped.append,
        observer=metrics,
    )
    leases.claims = {"b"}
    first = keeper.begin()
    assert first.taken == ("a", "c") and sorted(keeper.held) == ["a", "c"]
    assert samples(registry)[("mailrules_cluster_account_claimed", (("account", "b"),))] == 1

    leases.claims = {"a"}  # a command claims an account this daemon works on
    second = keeper.round()
    assert stopped == ["a"] and "a" in second.given and "a" not in keeper.held
    assert second.taken == ("b",)  # b's claim ended: taken again
    got = samples(registry)
    assert got[("mailrules_cluster_account_claimed", (("account", "a"),))] == 1
    assert got[("mailrules_cluster_account_claimed", (("account", "b"),))] == 0
    assert got[("mailrules_cluster_account_owned", (("account", "a"),))] == 0

    leases.claims = set()
    assert keeper.round().taken == ("a",) and sorted(keeper.held) == ["a", "b", "c"]
    assert started == ["a", "c", "b", "a"]
