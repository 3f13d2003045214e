"""The engine acts on an account's server only while this replica surely holds its lease
(daemon/lease_guard.py, engine/sending.py `_held`). On a fake clock and the keeper of
test_lease_keeper.py: a pass whose lease's local deadline passes mid-batch does nothing more on the
server (its messages stay in the mailbox, the watcher's checkpoint stays), counts it, and a late
renewal only delays the pass. Several daemons on PostgreSQL and Dovecot:
tests/integration/test_daemon_cluster.py."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from mailrules.accounts import Account
from mailrules.compile.dialect import Dialect
from mailrules.config import AccountSettings, Secret, Settings
from mailrules.config.model import MetricsSettings
from mailrules.daemon.cluster import Cluster
from mailrules.daemon.cluster_metrics import ClusterMetrics
from mailrules.daemon.lease_guard import MARGIN_FRACTION, STUCK_SECONDS, LeaseGuard
from mailrules.daemon.watcher import MailboxWatcher, WatchContext
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, RunOptions
from mailrules.state.interface import LeaseLost
from mailrules.state.keeper import LeaseKeeper
from mailrules.state.models import Checkpoint
from mailrules.state.store import StateStore
from tests.fakes import FakeServer, FakeStore, RecordingSender
from tests.unit.test_daemon_cluster import samples
from tests.unit.test_lease_keeper import Clock, FakeLeases, Rounds

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
ACCOUNT = AccountSettings("a", "127.0.0.1", 143, "none", "u", Secret("p"))
STOPS = ("mailrules_lease_stops_total", (("account", "a"),))


def rules_of(text: str) -> tuple[A.Rule, ...]:
    rule_file, diags = parse_text(text, "t.rules")
    assert rule_file is not None and not diags, diags
    return rule_file.rules


class Replica:
    """One replica's keeper holding account "a" on the fake clock, its metrics, and the guard the
    engine is given. `sleep` stands for the time a waiting guard lets pass: the keeper's thread
    runs meanwhile (`between`: expire, as between rounds; or a round)."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.leases = FakeLeases(self.clock)
        self.keeper = LeaseKeeper(
            self.leases, ["a"], start=lambda lease: None, stop=lambda a: None, clock=self.clock
        )
        self.keeper.begin()
        self.rounds = Rounds(self.keeper, self.clock)
        self.rounds.next = self.clock.now + self.keeper.interval
        self.registry = CollectorRegistry()
        self.metrics = ClusterMetrics(self.registry)
        self.metrics.init(["a"])
        self.sleeps = 0
        self.between: Callable[[], object] = self.keeper.expire
        self.guard = LeaseGuard(
            self.keeper, "a", stopped=self.metrics.stopped, clock=self.clock, sleep=self._sleep
        )

    def _sleep(self, seconds: float) -> None:
        self.sleeps += 1
        assert self.sleeps < 1000, "the guard waits for ever"
        self.clock.now += seconds
        self.between()

    @property
    def deadline(self) -> float:
        return self.keeper.held["a"].deadline

    def stops(self) -> float:
        return samples(self.registry)[STOPS]


class PausingStore(FakeStore):
    """After its first flag STORE, the replica is paused past its lease's local deadline (a GC
    pause, a stopped VM, renewals that failed): the keeper has not noticed yet."""

    def __init__(self, server: FakeServer, replica: Replica) -> None:
        super().__init__(server, Dialect.named("dovecot"), NOW)
        self.replica = replica

    def store_flags(self, uids: Sequence[int], flags: Sequence[str], add: bool) -> None:
        super().store_flags(uids, flags, add)
        self.replica.clock.now = self.replica.deadline + 1.0


def mail(server: FakeServer, n: int = 3) -> None:
    for i in range(n):
        server.append("INBOX", f"From: a@x\r\nSubject: s{i}\r\nMessage-ID: <{i}@x>\r\n\r\nbody\r\n".encode())


ARRIVAL = rules_of(
    'rule "flag" on arrival { when all then flag }\n'
    'rule "file" on arrival { when subject contains "s" then move to "Done" }\n'
)


def test_a_pass_acts_on_nothing_more_once_the_deadline_passes(caplog: pytest.LogCaptureFixture) -> None:
    replica = Replica()
    server = FakeServer()
    mail(server)
    server.mailbox("Done")
    state = StateStore.open(":memory:")
    state.set_checkpoint("a", "INBOX", Checkpoint(server.mailbox("INBOX").uidvalidity, 0, None, NOW))
    account = Account(ACCOUNT, lambda a: None)  # type: ignore[arg-type,return-value]
    account.lease_check = replica.guard
    ctx = WatchContext(state=state, tz=dt.UTC, rules=lambda: ARRIVAL, lock_for=lambda a, m: None)  # type: ignore[arg-type,return-value]
    ctx.run_id = state.begin_run("daemon", False)
    watcher = MailboxWatcher(account, "INBOX", ctx, state)
    store = PausingStore(server, replica)
    uidvalidity = store.select("INBOX")
    with caplog.at_level(logging.WARNING), pytest.raises(LeaseLost, match="no longer holds its lease"):
        watcher._process(store, [1, 2, 3], uidvalidity)  # type: ignore[arg-type]
    # The flags were set before the pause; the move after it was never sent: every message is
    # still in INBOX for the account's next owner, and the checkpoint did not move past them.
    assert [c for c in store.commands if c.startswith(("move", "copy"))] == []
    assert sorted(server.mailbox("INBOX").messages) == [1, 2, 3]
    assert not server.mailbox("Done").messages
    assert all("\\Flagged" in m.flags for m in server.mailbox("INBOX").messages.values())
    cp = state.get_checkpoint("a", "INBOX")
    assert cp is not None and cp.last_uid == 0
    # What was done is journalled (the lease was still valid in the database then); nothing else.
    done = state.run_entries(ctx.run_id)
    assert sorted((e.action, e.uid, e.outcome) for e in done) == [("flag", u, "ok") for u in (1, 2, 3)]
    # The keeper dropped the account (its thread ran while the guard waited), and it was counted.
    assert "a" not in replica.keeper.held
    assert replica.stops() == 1
    assert 'rule "file": move of 3 message(s) in a/INBOX not done' in caplog.text
    assert "the lease's renewal is late" in caplog.text


def test_a_late_renewal_only_delays_the_pass() -> None:
    replica = Replica()
    server = FakeServer()
    mail(server)
    # Within the margin of its local deadline, the next round not come yet: the guard waits for it
    # (a round renews the lease) rather than stop a pass on a lease still held.
    replica.clock.now = replica.deadline - replica.keeper.leases.lease_seconds * MARGIN_FRACTION / 2
    replica.between = lambda: replica.rounds.run() if replica.clock.now >= replica.rounds.next else None
    replica.rounds.next = replica.clock.now + 0.2
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    report = Engine(RunOptions(NOW, dt.UTC, "r")).process(
        store, AccountContext("a", lease_check=replica.guard), "INBOX", ARRIVAL
    )
    assert replica.sleeps > 0  # it waited
    assert len(server.mailbox("Done").messages) == 3 and not server.mailbox("INBOX").messages
    assert report.rules[1].outcomes["move ok"] == 3
    assert replica.stops() == 0


def test_a_held_lease_costs_no_wait() -> None:
    replica = Replica()
    server = FakeServer()
    mail(server)
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    Engine(RunOptions(NOW, dt.UTC, "r")).process(
        store, AccountContext("a", lease_check=replica.guard), "INBOX", ARRIVAL
    )
    assert len(server.mailbox("Done").messages) == 3
    assert replica.sleeps == 0 and replica.stops() == 0


@pytest.mark.parametrize(
    ("action", "dialect"),
    [('forward to "b@example.com"', "dovecot"), ('copy to "Kept"', "dovecot"), ('move to "Kept"', "rfc3501")],
)
def test_no_intent_is_left_in_doubt_once_the_lease_is_gone(action: str, dialect: str) -> None:
    """Stopped before the intents: nothing is left in doubt for the next owner (a send, a copy or a
    move without MOVE whose intent exists is never made again, engine/claims.py)."""
    replica = Replica()
    server = FakeServer()
    mail(server, 2)
    state = StateStore.open(":memory:")
    run_id = state.begin_run("daemon", False)
    replica.clock.now = replica.deadline  # not renewed in time (PostgreSQL unreachable)
    assert replica.keeper.expire() == ["a"]
    sender = RecordingSender()
    rules = rules_of(f'rule "r" {{ when all then {action} }}')
    store = FakeStore(server, Dialect.named(dialect), NOW)
    context = AccountContext("a", sender=sender, lease_check=replica.guard)
    with pytest.raises(LeaseLost):
        Engine(RunOptions(NOW, dt.UTC, run_id), journal=state).process(store, context, "INBOX", rules)
    assert sender.sent == [] and state.pending_intents() == [] and not server.mailboxes.get("Kept")
    assert replica.stops() == 1


def test_a_stuck_keeper_does_not_make_the_pass_wait_for_ever() -> None:
    """The keeper never drops the lease (its thread is stuck): the guard stops the pass a bounded
    time past the lease's local deadline instead of looking for ever."""
    replica = Replica()
    replica.between = lambda: None  # the keeper's thread does nothing meanwhile
    replica.clock.now = replica.deadline - 0.01
    with pytest.raises(LeaseLost, match="local deadline passed"):
        replica.guard()
    assert replica.clock.now > replica.deadline + STUCK_SECONDS
    assert replica.sleeps <= (STUCK_SECONDS + 0.1) / 0.05 + 2
    assert replica.stops() == 1


def test_a_dry_run_is_not_stopped() -> None:
    replica = Replica()
    replica.keeper.shutdown()  # every lease released
    server = FakeServer()
    mail(server)
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    report = Engine(RunOptions(NOW, dt.UTC, "r", dry_run=True)).process(
        store, AccountContext("a", lease_check=replica.guard), "INBOX", ARRIVAL
    )
    assert report.rules[1].outcomes["move dry-run"] == 3 and replica.stops() == 0


def test_a_sqlite_daemon_gives_the_engine_no_check(tmp_path: Path) -> None:
    settings = Settings(
        rules=tmp_path,
        state=tmp_path / "state.db",
        config_path=tmp_path / "mailrules.toml",
        timezone=dt.UTC,  # type: ignore[arg-type]
        metrics=MetricsSettings(listen=""),
        accounts={"a": ACCOUNT},
    )
    with StateStore.open(tmp_path / "state.db") as state:
        cluster = Cluster(state, settings, started=lambda a: None, stopping=lambda a: None)
        assert not cluster.shared and cluster.lease_check("a") is None


def test_the_renewals_left_to_the_next_round_are_counted_per_account() -> None:
    registry = CollectorRegistry()
    metrics = ClusterMetrics(registry)
    metrics.init(["a", "b"])
    metrics.renewal_deferred("a")
    metrics.renewal_deferred("a")
    got = samples(registry)
    assert got[("mailrules_lease_renewals_deferred_total", (("account", "a"),))] == 2
    assert got[("mailrules_lease_renewals_deferred_total", (("account", "b"),))] == 0
    assert got[("mailrules_lease_stops_total", (("account", "b"),))] == 0
