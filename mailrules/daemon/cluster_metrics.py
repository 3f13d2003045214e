"""The cluster metrics (docs/metrics.md): which accounts this replica owns, lease acquisitions,
hand-overs and losses, and how many replicas it sees; the lease keeper's observer
(mailrules/state/keeper.py `KeeperObserver`)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from mailrules.daemon.labels import KnownAccounts
from mailrules.state.interface import Lease
from mailrules.state.keeper import KeeperObserver


class ClusterMetrics(KeeperObserver):
    """`mailrules_cluster_account_owned{account}`, `mailrules_cluster_account_claimed{account}`,
    `mailrules_cluster_accounts_owned`,
    `mailrules_cluster_replicas`, `mailrules_lease_acquisitions_total{account}`,
    `mailrules_lease_releases_total{account}`, `mailrules_lease_losses_total{account}`,
    `mailrules_cluster_accounts_starting`, `mailrules_lease_takes_deferred_total`,
    `mailrules_lease_stops_total{account}`, `mailrules_lease_renewals_deferred_total{account}` in
    `registry`.
    Accounts come from the configuration (`init`); anything else is `other`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._accounts = KnownAccounts()
        self._configured: set[str] = set()
        self.owned = Gauge(
            "mailrules_cluster_account_owned",
            "1 while this daemon holds the account's lease (works on it), else 0. Among daemons "
            "sharing a PostgreSQL state, max by (account) is 0 for an account nobody works on.",
            ["account"],
            registry=registry,
        )
        self.claimed_by_command = Gauge(
            "mailrules_cluster_account_claimed",
            "1 while a command (mailrules run, undo) has claimed the account from the daemons "
            "(none works on it meanwhile, on purpose), as this daemon saw in its last round, else 0.",
            ["account"],
            registry=registry,
        )
        self.count = Gauge(
            "mailrules_cluster_accounts_owned",
            "How many accounts this daemon holds a lease on, after its last round.",
            registry=registry,
        )
        self.replicas = Gauge(
            "mailrules_cluster_replicas",
            "How many daemons this one saw alive (a heartbeat within lease_seconds) in its last "
            "round, itself included; 1 with a SQLite state.",
            registry=registry,
        )
        self.acquisitions = Counter(
            "mailrules_lease_acquisitions_total",
            "Leases this daemon acquired (it started working on the account).",
            ["account"],
            registry=registry,
        )
        self.releases = Counter(
            "mailrules_lease_releases_total",
            "Leases this daemon let go of at once: handed over for a fair share, or at a clean stop.",
            ["account"],
            registry=registry,
        )
        self.losses = Counter(
            "mailrules_lease_losses_total",
            "Leases this daemon lost: not renewed in time (the database unreachable, a pause) or "
            "taken over; it stopped working on the account.",
            ["account"],
            registry=registry,
        )
        self.stops = Counter(
            "mailrules_lease_stops_total",
            "Passes over the account's mailboxes stopped before a command on its server or a send, "
            "because this daemon no longer held its lease (lost or past its local deadline): their "
            "messages are left for the account's next owner.",
            ["account"],
            registry=registry,
        )

        self.renewals_deferred = Counter(
            "mailrules_lease_renewals_deferred_total",
            "Renewals of the account's lease left to the next round: a write of this daemon in "
            "flight held the lease row past the renewal's short wait (lease_seconds / 30).",
            ["account"],
            registry=registry,
        )

        self.starting = Gauge(
            "mailrules_cluster_accounts_starting",
            "Accounts this daemon holds whose start (their watchers) has not finished, after its "
            "last round; starts run one after another outside the rounds.",
            registry=registry,
        )
        self.deferred = Counter(
            "mailrules_lease_takes_deferred_total",
            "Accounts a round left to take in the next one: its take time (a sixth of "
            "lease_seconds) had run out, so that the leases held are renewed on time.",
            registry=registry,
        )

    def init(self, accounts: Iterable[str]) -> None:
        """Create the series of the configured accounts (value 0)."""
        for account in self._accounts.add(accounts):
            self._configured.add(account)
            self.owned.labels(account)
            self.claimed_by_command.labels(account)
            self.acquisitions.labels(account)
            self.releases.labels(account)
            self.losses.labels(account)
            self.stops.labels(account)
            self.renewals_deferred.labels(account)

    # -- KeeperObserver ---------------------------------------------------------------------------

    def acquired(self, lease: Lease) -> None:
        account = self._accounts(lease.account)
        self.owned.labels(account).set(1)
        self.acquisitions.labels(account).inc()

    def released(self, account: str) -> None:
        name = self._accounts(account)
        self.owned.labels(name).set(0)
        self.releases.labels(name).inc()

    def lost(self, account: str) -> None:
        name = self._accounts(account)
        self.owned.labels(name).set(0)
        self.losses.labels(name).inc()

    def renewal_deferred(self, account: str) -> None:
        self.renewals_deferred.labels(self._accounts(account)).inc()

    def stopped(self, account: str) -> None:
        self.stops.labels(self._accounts(account)).inc()

    def view(self, owned: int, replicas: int) -> None:
        self.count.set(owned)
        self.replicas.set(replicas)

    def takes(self, deferred: int, starting: int) -> None:
        self.deferred.inc(deferred)
        self.starting.set(starting)

    def claimed(self, accounts: tuple[str, ...]) -> None:
        now = {self._accounts(a) for a in accounts}
        for account in self._configured:
            self.claimed_by_command.labels(account).set(1 if account in now else 0)
