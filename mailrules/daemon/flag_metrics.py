"""The `on flag change` runtime's metrics (docs/metrics.md): `mailrules_flag_change_looks_total`,
`mailrules_flag_changes_total`, `mailrules_flag_changes_own_total` and the gauge
`mailrules_flag_change_refused`, each by account. Its own module (daemon/metrics.py is full): the
daemon's Metrics holds one and creates its series with the others'; the watchers' flag passes
(daemon/flagwatch.py, `FlagObserver`) feed it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge


class FlagMetrics:
    """The flag-change metrics in `registry`; `known(account)` maps an account the configuration does
    not name to `other` (Metrics._account), so no value from a server becomes a series.

    An account's flag-change rules may be refused on several mailboxes, each seen by its own watcher:
    the gauge is 1 while any of them reports a refusal (`refused(account, key, True)`) that it has not
    taken back (`refused(account, key, False)`: a look succeeded, the rules are gone, the watcher
    ended)."""

    def __init__(self, registry: CollectorRegistry, known: Callable[[str], str]) -> None:
        self._known = known
        self._lock = threading.Lock()
        #: account label -> the keys (a watcher's flag pass and a mailbox) refused now
        self._refused: dict[str, set[Hashable]] = {}
        self.looks = Counter(
            "mailrules_flag_change_looks",
            "Looks for flag changes: UID FETCH (CHANGEDSINCE) commands the server answered, on "
            "mailboxes an `on flag change` rule reads.",
            ["account"],
            registry=registry,
        )
        self.changes = Counter(
            "mailrules_flag_changes",
            "Messages whose flags someone else changed, found by a look; the account's `on flag "
            "change` rules ran on them.",
            ["account"],
            registry=registry,
        )
        self.own = Counter(
            "mailrules_flag_changes_own",
            "Messages a look found changed by mailrules' own STOREs (their MODSEQ is ours): skipped, "
            "never a flag change.",
            ["account"],
            registry=registry,
        )
        self.refusals = Gauge(
            "mailrules_flag_change_refused",
            "1 while the account's `on flag change` rules are refused on a mailbox: the server lacks "
            "CONDSTORE, keeps no MODSEQs (NOMODSEQ), or refused UID FETCH (CHANGEDSINCE).",
            ["account"],
            registry=registry,
        )

    def init(self, accounts: Iterable[str]) -> None:
        """Create the series of the configured accounts (value 0)."""
        for account in accounts:
            self.looks.labels(account)
            self.changes.labels(account)
            self.own.labels(account)
            self.refusals.labels(account)

    def looked(self, account: str) -> None:
        """The server answered a CHANGEDSINCE look of `account`."""
        self.looks.labels(self._known(account)).inc()

    def found(self, account: str, changed: int, own: int) -> None:
        """A look of `account` is done: `changed` messages someone else changed (the rules ran on
        them), `own` changed last by mailrules (skipped)."""
        label = self._known(account)
        self.changes.labels(label).inc(changed)
        self.own.labels(label).inc(own)

    def refused(self, account: str, key: Hashable, refused: bool) -> None:
        """`key`'s flag-change rules of `account` are refused now (or no longer)."""
        label = self._known(account)
        with self._lock:
            keys = self._refused.setdefault(label, set())
            if refused:
                keys.add(key)
            else:
                keys.discard(key)
            self.refusals.labels(label).set(1 if keys else 0)
