"""The composition root of `mailrules daemon`: config -> rules -> watchers + scheduler + metrics; signals.

Threads: the main thread waits for signals and watches the rules directory; one thread per
watched mailbox IDLEs on its own connection and processes arrivals on it; APScheduler's pool runs
scheduled rules on connections of their own; the HTTP server answers /metrics, /healthz, /readyz.
A lock per (account, mailbox) keeps an arrival batch and a scheduled run from acting on the same
mailbox at once; a semaphore per account keeps connections within `max_connections`.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from mailrules.commands.run import account_context, default_session, log_entry, mailboxes_of
from mailrules.config import AccountSettings, Settings
from mailrules.daemon.http import MetricsServer
from mailrules.daemon.metrics import Metrics
from mailrules.daemon.scheduler import Schedule
from mailrules.daemon.watcher import MailboxWatcher, MultiPoller, WatchContext, WatchHooks
from mailrules.dsl import ast as A
from mailrules.dsl.loader import load_rule_set
from mailrules.engine.core import Engine, RunOptions
from mailrules.engine.limits import LimitLedger, precount
from mailrules.engine.loops import HOUR, LoopGuard, SendLimiter
from mailrules.errors import MailrulesError, StateError
from mailrules.imap.session import ImapSession
from mailrules.imap.store import ImapStore
from mailrules.state.store import StateStore

log = logging.getLogger(__name__)

#: How often the main thread looks for changed rule files.
RULES_POLL_SECONDS = 2.0
#: SIGTERM to exit: the batch in hand finishes, IDLE ends, sessions log out within this.
SHUTDOWN_SECONDS = 8.0


class _MetricsHooks(WatchHooks):
    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def connected(self, account: str, seconds: float) -> None:
        self.m.connected(account, seconds)

    def watcher_up(self, account: str, mailbox: str, up: bool) -> None:
        self.m.watcher_up(account, mailbox, up)

    def reconnect(self, account: str) -> None:
        self.m.reconnect(account)

    def synced(self, account: str, mailbox: str) -> None:
        self.m.synced(account, mailbox)

    def arrival(self, account: str, seconds: float) -> None:
        self.m.arrival(account, seconds)

    def imap_command(self, account: str, command: str, seconds: float, ok: bool) -> None:
        self.m.imap_command(account, command, seconds, ok)

    def state_error(self, account: str) -> None:
        self.m.state_error()


def rules_fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a rule file is added, removed or written."""
    files = [path] if path.is_file() else sorted(path.glob("*.rules")) if path.is_dir() else []
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((f.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


def plan_connections(watched: int, budget: int, scheduled: bool) -> tuple[int, int]:
    """(mailboxes that get their own IDLE connection, connections used in all).

    One connection is kept for scheduled runs when there are any; if the rest cannot give every
    watched mailbox its own, one of them polls the overflow in turn.
    """
    reserve = 1 if scheduled else 0
    available = budget - reserve
    if watched == 0:
        return 0, reserve
    if watched <= available:
        return watched, watched + reserve
    idle = max(0, available - 1)
    return idle, idle + 1 + reserve


class Daemon:
    """Everything `mailrules daemon` runs; `run()` blocks until SIGTERM/SIGINT (or `stop()`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        connect: Callable[[AccountSettings], ImapSession] = default_session,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        # One daemon per state: a second one (or a `mailrules run`) on it is told who holds it.
        self.state = StateStore.open(settings.state, lock="mailrules daemon")
        self.rules: tuple[A.Rule, ...] = ()
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Scheduled runs of one account take turns on the one connection kept for them.
        self._budget = {n: threading.BoundedSemaphore(1) for n in settings.accounts}
        self._watchers: dict[tuple[str, str], MailboxWatcher | MultiPoller] = {}
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._connect_raw = connect
        self.schedule = Schedule(settings.timezone, self._run_scheduled)
        self.http = (
            MetricsServer(settings.metrics.listen, self.metrics, self.ready)
            if settings.metrics.listen
            else None
        )
        # Loop safety (actions/loops.py): one send limiter for the process; arrivals may create
        # [limits] mailboxes_created_per_run mailboxes per account in any hour, each scheduled
        # firing as many again.
        self.sends = SendLimiter(settings.limits.forwards_per_address_per_hour)
        self.arrival_guard = LoopGuard.from_limits(settings.limits, window=HOUR, sends=self.sends)
        self.ctx = WatchContext(
            state=self.state,
            tz=settings.timezone,
            rules=lambda: self.rules,
            lock_for=self.lock_for,
            connect=self._connect,
            account_context=lambda account: account_context(account, self.arrival_guard),
            observer=self.metrics,
            on_entry=log_entry,
            hooks=_MetricsHooks(self.metrics),
            bounds=settings.limits.bounds,
        )

    # -- shared resources ---------------------------------------------------------------------------

    def lock_for(self, account: str, mailbox: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((account, mailbox), threading.Lock())

    def _connect(self, account: AccountSettings) -> ImapSession:
        session = self._connect_raw(account)
        session.on_command = self.metrics.command_hook(account.name)
        return session

    # -- rules and watchers -------------------------------------------------------------------------

    def load_rules(self) -> bool:
        """Load and check the rule set; on any error keep what runs now and say why."""
        self._fingerprint = rules_fingerprint(self.settings.rules)
        result = load_rule_set(self.settings.rules)
        if not result.ok:
            log.error(
                "rules in %s have errors; %s:\n%s",
                self.settings.rules,
                "keeping the rules that were running" if self.rules else "not starting",
                result.render(),
            )
            self.metrics.reload(False)
            return False
        for w in result.warnings:
            log.warning("%s", w.render())
        previous, self.rules = self.rules, result.rule_set.rules
        problems = self.budget_problems()
        if problems:
            self.rules = previous
            log.error(
                "%s; %s",
                "; ".join(problems),
                "keeping the rules that were running" if previous else "not starting",
            )
            self.metrics.reload(False)
            return False
        watched = self.watched()
        mailboxes = {
            a: sorted(set(watched.get(a, [])) | set(mailboxes_of(self.rules, a)))
            for a in self.settings.accounts
        }
        self.metrics.init(
            mailboxes,
            [r.name for r in self.rules],
            scheduled=[r.name for r in self.rules if not isinstance(r.trigger, A.OnArrival | A.Manually)],
            watched=watched,
        )
        self.metrics.rules_loaded(len(self.rules))
        self.metrics.reload(True)
        jobs = self.schedule.load(self.rules)
        log.info("loaded %d rules (%d scheduled) from %s", len(self.rules), jobs, self.settings.rules)
        if not self._stop.is_set():
            self._sync_watchers()
        return True

    def _has_scheduled(self, account: str) -> bool:
        return any(
            not isinstance(r.trigger, A.OnArrival | A.Manually) and (not r.accounts or account in r.accounts)
            for r in self.rules
        )

    def budget_problems(self) -> list[str]:
        """Accounts whose max_connections cannot hold what the rules need (refused at load)."""
        out = []
        for name, boxes in self.watched().items():
            acct = self.settings.accounts[name]
            sched = self._has_scheduled(name)
            if plan_connections(len(boxes), acct.max_connections, sched)[1] > acct.max_connections:
                out.append(
                    f"account {name}: max_connections = {acct.max_connections} is too small: watching "
                    f"needs 1 connection{' and scheduled rules 1 more' if sched else ''}"
                )
        return out

    def watched(self) -> dict[str, list[str]]:
        """Per account: the mailboxes with `on arrival` rules, then `watch = [...]` extras."""
        out: dict[str, list[str]] = {}
        for name, acct in self.settings.accounts.items():
            arrival = [r for r in self.rules if isinstance(r.trigger, A.OnArrival)]
            boxes = mailboxes_of(arrival, name)
            boxes += [m for m in acct.watch if m not in boxes]
            if boxes:
                out[name] = boxes
        return out

    def _sync_watchers(self) -> None:
        """Start watchers for newly watched mailboxes, stop those no longer watched.

        IDLE watches only the selected mailbox (RFC 5465 §1), so each gets a connection, within the
        account's budget less the one kept for scheduled runs; mailboxes past that are polled in
        turn on one shared connection (`plan_connections`).
        """
        wanted: dict[tuple[str, str], AccountSettings] = {}
        polled: dict[str, list[str]] = {}
        for name, boxes in self.watched().items():
            acct = self.settings.accounts[name]
            idle_slots, _ = plan_connections(len(boxes), acct.max_connections, self._has_scheduled(name))
            for i, mailbox in enumerate(boxes):
                if i < idle_slots:
                    wanted[(name, mailbox)] = acct
                else:
                    polled.setdefault(name, []).append(mailbox)
        for key in [
            k for k in self._watchers if k not in wanted and not (k[1] == "*poll*" and k[0] in polled)
        ]:
            self._watchers.pop(key).stop()
        for key, acct in wanted.items():
            if key not in self._watchers:
                w = MailboxWatcher(acct, key[1], self.ctx)
                self._watchers[key] = w
                w.start()
        for name, boxes in polled.items():
            key = (name, "*poll*")
            current = self._watchers.get(key)
            if isinstance(current, MultiPoller) and current.mailboxes == boxes:
                continue
            if current is not None:
                current.stop()
            log.warning(
                "%s: %d watched mailboxes exceed the connection budget; polling %s every %.0f s",
                name,
                len(boxes),
                ", ".join(boxes),
                self.settings.accounts[name].poll_interval,
            )
            p = MultiPoller(self.settings.accounts[name], boxes, self.ctx)
            self._watchers[key] = p
            p.start()

    # -- scheduled runs -----------------------------------------------------------------------------

    def _run_scheduled(self, rules: Sequence[A.Rule]) -> None:
        """One firing of a schedule: its rules, in rule-set order, over each mailbox they name.

        Rules sharing a trigger run together, so the per-message reading holds among them (an
        earlier one that moves a message hides it from the later ones), as in `mailrules run`.
        A state that cannot be written ends the firing there: the next one tries again.
        """
        started = time.monotonic()
        try:
            self._fire(rules, started)
        except StateError as exc:
            log.error("schedule %s: %s; the run stopped there", ", ".join(r.name for r in rules), exc)
            self.metrics.state_error()
            for r in rules:
                self.metrics.scheduled_run(r.name, time.monotonic() - started, "failed")

    def _fire(self, rules: Sequence[A.Rule], started: float) -> None:
        failed: set[str] = set()
        run_id = self.state.begin_run("schedule", False)
        limits = LimitLedger()  # `limit N` holds for this firing as a whole (mailrules/engine/limits.py)
        guard = LoopGuard.from_limits(self.settings.limits, sends=self.sends)  # this firing's budget
        precount(
            list(self.settings.accounts),
            rules,
            dt.datetime.now(dt.UTC),
            self.settings.timezone,
            limits,
            self._scheduled_store,
        )
        for name, acct in self.settings.accounts.items():
            mine = [r for r in rules if not r.accounts or name in r.accounts]
            if not mine:
                continue
            try:
                with self._scheduled_store(name) as store:
                    now = dt.datetime.now(dt.UTC)
                    engine = Engine(
                        RunOptions(now, self.settings.timezone, run_id, bounds=self.settings.limits.bounds),
                        journal=self.state,
                        on_entry=log_entry,
                        observer=self.metrics,
                        limits=limits,
                    )
                    for mailbox in mailboxes_of(mine, name):
                        with self.lock_for(name, mailbox):
                            report = engine.process(store, account_context(acct, guard), mailbox, mine)
                        failed.update(rr.rule for rr in report.rules if rr.failed)
            except StateError:
                raise
            except MailrulesError as exc:
                log.error("schedule %s on %s: %s", ", ".join(r.name for r in mine), name, exc)
                failed.update(r.name for r in mine)
        seconds = time.monotonic() - started
        self.state.end_run(run_id, {"rules": [r.name for r in rules], "failed": sorted(failed)})
        for r in rules:
            self.metrics.scheduled_run(r.name, seconds, "failed" if r.name in failed else "ok")

    @contextmanager
    def _scheduled_store(self, name: str) -> Iterator[ImapStore]:
        """A connection within the account's budget for a schedule's work (counting, then running)."""
        budget = self._budget[name]
        if not budget.acquire(timeout=60):
            raise MailrulesError("no free connection within 60 s")
        try:
            session = self._connect(self.settings.accounts[name])
            try:
                yield ImapStore(session)
            finally:
                session.logout()
        finally:
            budget.release()

    # -- health ---------------------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """Rules loaded, and every watcher connected or retrying within its budget."""
        if not self.rules:
            return False, "no rules loaded"
        bad = [f"{a}/{m}" for (a, m), w in self._watchers.items() if not w.healthy]
        if bad:
            return False, "not connected: " + ", ".join(sorted(bad))
        return True, "ok"

    # -- running ----------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def reload(self) -> None:
        self._reload.set()

    def run(self, install_signals: bool = True) -> int:
        """Start everything and block until stopped; 0 on a clean stop, 1 when the rules don't load."""
        if install_signals:
            self._install_signals()
        if not self.load_rules():
            self.state.close()
            return 1
        self.ctx.run_id = self.state.begin_run("daemon", False)
        if self.http is not None:
            self.http.start()
            log.info("metrics on %s", self.http.url)
        self.schedule.start()
        try:
            while not self._stop.wait(RULES_POLL_SECONDS):
                if self._reload.is_set() or rules_fingerprint(self.settings.rules) != self._fingerprint:
                    self._reload.clear()
                    log.info("reloading rules from %s", self.settings.rules)
                    self.load_rules()
        finally:
            self._shutdown()
        return 0

    def _install_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: finishing the batch in hand, then stopping", signal.Signals(signum).name)
            self._stop.set()

        def hup(signum: int, frame: FrameType | None) -> None:
            self._reload.set()  # the main loop looks every RULES_POLL_SECONDS

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def _shutdown(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        self.schedule.shutdown(wait=False)
        for w in self._watchers.values():
            w.stop()
        for w in self._watchers.values():
            w.join(max(0.0, deadline - time.monotonic()))
        alive = [w.name for w in self._watchers.values() if w.is_alive()]
        if alive:
            log.warning("still busy at shutdown: %s", ", ".join(alive))
        if self.http is not None:
            self.http.stop()
        try:
            if self.ctx.run_id:
                self.state.end_run(self.ctx.run_id, {"stopped": "signal"})
        except StateError as exc:
            log.error("%s", exc)
        self.state.close()
        log.info("stopped")
