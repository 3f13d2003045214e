"""`mailrules_search_ahead_total{account}` (docs/metrics.md): passes over a mailbox whose later rules
were searched and fetched ahead on a second connection (engine/prefetch.py). Its own module: the
daemon's Metrics (daemon/metrics.py) holds one, creates its series with the others' and hands it
each pass's report."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter

from mailrules.engine.ports import MailboxReport


class SearchAheadMetrics:
    """The search-ahead counter in `registry`; `known(account)` maps an account the configuration
    does not name to `other` (Metrics._account), so no value from a server becomes a series."""

    def __init__(self, registry: CollectorRegistry, known: Callable[[str], str]) -> None:
        self._known = known
        self.passes = Counter(
            "mailrules_search_ahead_total",
            "Passes over a whole mailbox whose later rules were searched and fetched ahead on a "
            "second connection: only with max_connections >= 2, more than one rule, and at least "
            "SEARCH_AHEAD_MIN_MESSAGES (10,000) messages in the mailbox.",
            ["account"],
            registry=registry,
        )

    def init(self, accounts: Iterable[str]) -> None:
        """Create the series of the configured accounts (value 0)."""
        for account in accounts:
            self.passes.labels(account)

    def mailbox_done(self, report: MailboxReport) -> None:
        """A pass ended: counted when it searched ahead."""
        if report.searched_ahead:
            self.passes.labels(self._known(report.account)).inc()
