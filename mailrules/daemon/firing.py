"""One firing of a schedule: its rules over the mailboxes of the accounts this daemon owns.

A group's rules run together (daemon/scheduler.py: one job per group, and per scheduled rule
outside one), so the per-message reading holds among them (an earlier one that moves a message
hides it from the later ones), as in `mailrules run`. Among daemons sharing a
PostgreSQL state each runs a firing on the accounts it owns only, journalled through each
account's fenced state (daemon/cluster.py): a scheduled rule acts on each account once per firing,
on its owner. A scheduled run uses the one connection of the account's budget kept for it.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from mailrules.accounts import Account, Connection, WalkResult, count_limits, log_entry, walk
from mailrules.config import Settings
from mailrules.daemon.cluster import Cluster
from mailrules.daemon.metrics import Metrics
from mailrules.dsl import ast as A
from mailrules.engine.core import Engine
from mailrules.engine.limits import LimitLedger
from mailrules.engine.loops import LoopGuard, SendLimiter
from mailrules.engine.ports import RunOptions
from mailrules.errors import MailrulesError, StateError
from mailrules.state.interface import LeaseLost, State

log = logging.getLogger(__name__)

#: How long a firing waits for the account's connection kept for scheduled runs.
CONNECTION_WAIT_SECONDS = 60


class Firings:
    """Runs the firings of the daemon's schedules (`run`, called on APScheduler's pool)."""

    def __init__(
        self,
        settings: Settings,
        state: State,
        cluster: Cluster,
        accounts: Mapping[str, Account],
        metrics: Metrics,
        sends: SendLimiter,
        lock_for: Callable[[str, str], threading.Lock],
        sources: Callable[[], Mapping[str, str]],
    ) -> None:
        self.settings = settings
        self.state = state
        self.cluster = cluster
        self.accounts = accounts
        self.metrics = metrics
        self.sends = sends
        self.lock_for = lock_for
        self.sources = sources
        # Scheduled runs of one account take turns on the one connection kept for them.
        self._budget = {n: threading.BoundedSemaphore(1) for n in settings.accounts}

    def run(self, rules: Sequence[A.Rule]) -> None:
        """One firing of a schedule: its rules, in rule-set order, over each mailbox they name.
        A state that cannot be written ends the firing there: the next one tries again."""
        started = time.monotonic()
        try:
            self._fire(rules, started)
        except StateError as exc:
            log.error("schedule %s: %s; the run stopped there", ", ".join(r.name for r in rules), exc)
            self.metrics.state_error()
            for r in rules:
                self.metrics.scheduled_run(r.name, time.monotonic() - started, "failed")

    def _fire(self, rules: Sequence[A.Rule], started: float) -> None:
        # The accounts this daemon owns, each journalled through its fenced view: among daemons
        # sharing the accounts, a firing acts on each account once, on its owner.
        owned = {n: v for n in self.cluster.owned() if (v := self.cluster.view(n)) is not None}
        accounts = [a for n, a in self.accounts.items() if n in owned]
        if not accounts and self.cluster.shared:
            return
        run_id = self.state.begin_run("schedule", False)
        limits = LimitLedger()  # `limit N` holds for this firing as a whole (mailrules/engine/limits.py)
        guard = LoopGuard.from_limits(self.settings.limits, sends=self.sends)  # this firing's budget
        tz = self.settings.timezone
        bounds = self.settings.limits.bounds
        count_limits(accounts, rules, dt.datetime.now(dt.UTC), tz, limits, self._open, bounds=bounds)

        def engine(journal: State) -> Engine:  # the clock of each account's turn
            options = RunOptions(dt.datetime.now(dt.UTC), tz, run_id, bounds=bounds)
            return Engine(options, journal=journal, on_entry=log_entry, observer=self.metrics, limits=limits)

        label = f"schedule {', '.join(r.name for r in rules)}"
        done = WalkResult()
        for account in accounts:
            try:
                one = walk(
                    [account],
                    rules,
                    functools.partial(engine, owned[account.name]),
                    guard=guard,
                    open_account=self._open,
                    lock_for=self.lock_for,
                    sources=self.sources(),
                    label=label,
                )
            except LeaseLost as exc:  # handed over meanwhile: its new owner's firings go on
                log.warning("%s: account %s: %s", label, account.name, exc)
                continue
            done.reports += one.reports
            done.errors += one.errors
            done.failed_rules |= one.failed_rules
        failed = done.failed_rules | {rr.rule for r in done.reports for rr in r.rules if rr.failed}
        seconds = time.monotonic() - started
        self.state.end_run(run_id, {"rules": [r.name for r in rules], "failed": sorted(failed)})
        for r in rules:
            self.metrics.scheduled_run(r.name, seconds, "failed" if r.name in failed else "ok")

    @contextmanager
    def _open(self, account: Account, prefetch: bool) -> Iterator[Connection]:
        """A connection within the account's budget for a schedule's work (counting, then running);
        no second one for prefetching: the budget keeps one for scheduled runs."""
        budget = self._budget[account.name]
        if not budget.acquire(timeout=CONNECTION_WAIT_SECONDS):
            raise MailrulesError(f"no free connection within {CONNECTION_WAIT_SECONDS} s")
        try:
            with account.open() as conn:
                yield conn
        finally:
            budget.release()
