"""`mailrules_watcher_stalls_total{account}` (docs/metrics.md): watcher connections declared dead
because the server went silent (docs/operations.md, "Silent connections"). Its own module: the
daemon's Metrics (daemon/metrics.py) holds one and creates its series with the others'."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter


class StallMetrics:
    """The stall counter in `registry`; `known(account)` maps an account the configuration does not
    name to `other` (Metrics._account), so no value from a server becomes a series."""

    def __init__(self, registry: CollectorRegistry, known: Callable[[str], str]) -> None:
        self._known = known
        self.stalls = Counter(
            "mailrules_watcher_stalls_total",
            "Watcher connections declared dead because the server went silent: no answer to DONE or "
            "NOOP, or the rest of a line, within idle_timeout_seconds (a half-open connection, a "
            "NAT or firewall that dropped the flow). Each is closed, reconnected and caught up.",
            ["account"],
            registry=registry,
        )

    def init(self, accounts: Iterable[str]) -> None:
        """Create the series of the configured accounts (value 0)."""
        for account in accounts:
            self.stalls.labels(account)

    def stalled(self, account: str) -> None:
        """A watcher of `account` found its connection silent and closed it."""
        self.stalls.labels(self._known(account)).inc()
