"""The daemon's share of the accounts (daemon/cluster.py) on a SQLite state, and the cluster metrics
(daemon/cluster_metrics.py) as the lease keeper's observer. Several daemons on PostgreSQL:
tests/integration/test_daemon_cluster.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mailrules.config import AccountSettings, Settings
from mailrules.config.model import MetricsSettings
from mailrules.daemon.cluster import Cluster
from mailrules.daemon.cluster_metrics import ClusterMetrics
from mailrules.state.interface import Lease
from mailrules.state.store import StateStore


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if not s.name.endswith("_created")
    }


def lease(account: str) -> Lease:
    return Lease(account, "r0", 1, dt.datetime(2030, 1, 1, tzinfo=dt.UTC), 1e18)


def test_cluster_metrics_follow_the_keepers_hooks() -> None:
    registry = CollectorRegistry()
    m = ClusterMetrics(registry)
    m.init(["a", "b"])
    got = samples(registry)
    assert got[("mailrules_cluster_account_owned", (("account", "a"),))] == 0
    assert got[("mailrules_lease_losses_total", (("account", "b"),))] == 0
    m.acquired(lease("a"))
    m.acquired(lease("b"))
    m.lost("b")
    m.released("a")
    m.acquired(lease("a"))
    m.acquired(lease("not configured"))
    m.view(2, 3)
    m.takes(4, 5)
    m.takes(1, 2)
    got = samples(registry)
    assert got[("mailrules_cluster_account_owned", (("account", "a"),))] == 1
    assert got[("mailrules_cluster_account_owned", (("account", "b"),))] == 0
    assert got[("mailrules_lease_acquisitions_total", (("account", "a"),))] == 2
    assert got[("mailrules_lease_releases_total", (("account", "a"),))] == 1
    assert got[("mailrules_lease_losses_total", (("account", "b"),))] == 1
    assert got[("mailrules_lease_acquisitions_total", (("account", "other"),))] == 1
    assert got[("mailrules_cluster_accounts_owned", ())] == 2
    assert got[("mailrules_cluster_replicas", ())] == 1 + 2
    assert got[("mailrules_lease_takes_deferred_total", ())] == 4 + 1
    assert got[("mailrules_cluster_accounts_starting", ())] == 2


def test_a_sqlite_daemon_owns_every_account_from_the_first_round(tmp_path: Path) -> None:
    accounts = {
        n: AccountSettings(name=n, host="127.0.0.1", port=143, tls="none", username=n, password=None)
        for n in ("a", "b")
    }
    settings = Settings(
        rules=tmp_path,
        state=tmp_path / "state.db",
        config_path=tmp_path / "mailrules.toml",
        timezone=dt.UTC,  # type: ignore[arg-type]
        metrics=MetricsSettings(listen=""),
        accounts=accounts,
    )
    started: list[str] = []
    stopped: list[str] = []
    registry = CollectorRegistry()
    observer = ClusterMetrics(registry)
    observer.init(accounts)
    with StateStore.open(tmp_path / "state.db", lock="test") as state:
        cluster = Cluster(state, settings, started=started.append, stopping=stopped.append, observer=observer)
        assert not cluster.shared
        assert cluster.ready() == (False, "leases: first round not done")
        assert cluster.view("a") is None
        cluster.begin()
        assert started == ["a", "b"] and cluster.owned() == ["a", "b"]
        assert cluster.view("a") is state  # SQLite's writes are not fenced: one daemon, by its lock
        assert cluster.ready() == (True, "replica mailrules owns 2 of 2 accounts")
        assert samples(registry)[("mailrules_cluster_accounts_owned", ())] == 2
        cluster.shutdown()
        assert stopped == ["a", "b"] and cluster.owned() == []
        assert samples(registry)[("mailrules_lease_releases_total", (("account", "b"),))] == 1
