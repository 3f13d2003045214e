"""How the daemon watches each account (docs/metrics.md): `mailrules_watch_connections{account,mode}`
and `mailrules_notify_events_total{account}`, `mailrules_notify_fallbacks_total{account}`. Its own
module (daemon/metrics.py is full): the daemon's NotifyPlan (daemon/notify_watcher.py) holds one on
the Metrics' registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

#: How a watched mailbox is watched: `notify` (one connection for all of an account's mailboxes,
#: RFC 5465), `idle` (a connection each), `poll` (the overflow past max_connections, one connection).
MODES = ("notify", "idle", "poll")


class NotifyMetrics:
    """The watching-mode metrics in `registry`; `known(account)` maps an account the configuration
    does not name to `other` (Metrics._account), so no value from a server becomes a series."""

    def __init__(self, registry: CollectorRegistry, known: Callable[[str], str]) -> None:
        self._known = known
        self.connections = Gauge(
            "mailrules_watch_connections",
            "IMAP connections the daemon keeps for watching an account, by mode: notify (one "
            "connection watches every mailbox with NOTIFY), idle (one IDLE connection per mailbox), "
            "poll (one connection polls the mailboxes past max_connections in turn).",
            ["account", "mode"],
            registry=registry,
        )
        self.events = Counter(
            "mailrules_notify_events_total",
            "NOTIFY events received (an unsolicited STATUS for a watched mailbox, or EXISTS or FETCH "
            "FLAGS in the selected one); each makes the daemon look at that mailbox.",
            ["account"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "mailrules_notify_fallbacks_total",
            "Accounts switched from NOTIFY to IDLE per mailbox because the server lacks NOTIFY or "
            "refused NOTIFY SET (the reason is logged and shown by mailrules doctor).",
            ["account"],
            registry=registry,
        )

    def init(self, accounts: Iterable[str]) -> None:
        """Create the series of the configured accounts (value 0)."""
        for account in accounts:
            self.events.labels(account)
            self.fallbacks.labels(account)
            for mode in MODES:
                self.connections.labels(account, mode)

    def plan(self, counts: Mapping[str, Mapping[str, int]]) -> None:
        """The watching connections of each account by mode (absent modes: 0)."""
        for account, by_mode in counts.items():
            for mode in MODES:
                self.connections.labels(self._known(account), mode).set(by_mode.get(mode, 0))

    def event(self, account: str, count: int = 1) -> None:
        """`count` NOTIFY events of `account` were received."""
        self.events.labels(self._known(account)).inc(count)

    def fallback(self, account: str) -> None:
        """`account` left NOTIFY for IDLE per mailbox."""
        self.fallbacks.labels(self._known(account)).inc()
