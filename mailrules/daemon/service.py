"""The composition root of `mailrules daemon`: config -> rules -> watchers + scheduler + metrics; signals.

Threads: the main thread waits for signals and watches the rules directory; one thread per
watched mailbox IDLEs on its own connection and processes arrivals on it; APScheduler's pool runs
scheduled rules on connections of their own; the HTTP server answers /metrics, /healthz, /readyz.
A lock per (account, mailbox) keeps an arrival batch and a scheduled run from acting on the same
mailbox at once; a semaphore per account keeps connections within `max_connections`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from mailrules.accounts import (
    Account,
    SessionFactory,
    log_entry,
    mailboxes_of,
    render_problem,
    rules_for,
    session_factory,
)
from mailrules.config import AccountSettings, Settings
from mailrules.daemon import plan
from mailrules.daemon.checks import check_servers
from mailrules.daemon.cluster import Cluster
from mailrules.daemon.cluster_metrics import ClusterMetrics
from mailrules.daemon.firing import Firings
from mailrules.daemon.http import MetricsServer
from mailrules.daemon.metrics import Metrics
from mailrules.daemon.notify_watcher import NOTIFY_KEY, NotifyPlan
from mailrules.daemon.scheduler import Schedule
from mailrules.daemon.watcher import MailboxWatcher, MultiPoller, WatchContext, WatchHooks
from mailrules.dsl import ast as A
from mailrules.dsl.loader import LoadResult, load_rule_set
from mailrules.engine.flagpass import OwnChanges
from mailrules.engine.loops import HOUR, LoopGuard, SendLimiter
from mailrules.errors import StateError
from mailrules.imap.errors import Throttled
from mailrules.imap.modseq import recording
from mailrules.imap.names import Namespaces
from mailrules.imap.session import ImapSession
from mailrules.logs import printable
from mailrules.oauth.accounts import TokenManagers
from mailrules.oauth.shared import stores_of
from mailrules.state.factory import open_state
from mailrules.state.interface import State

log = logging.getLogger(__name__)

#: How often the main thread looks for changed rule files.
RULES_POLL_SECONDS = 2.0
#: SIGTERM to exit: the batch in hand finishes, IDLE ends, sessions log out within this.
SHUTDOWN_SECONDS = 8.0
#: `run()`'s exit code when the rules or the configuration name a mailbox the server cannot have
#: (imap/names.py): sysexits' EX_CONFIG, as for a configuration error; fixing it is the user's.
EXIT_NAMES = 78


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

    def throttled(self, account: str, command: str, seconds: float) -> None:
        self.m.throttled(account, command, seconds)

    def state_error(self, account: str) -> None:
        self.m.state_error()

    def stalled(self, account: str) -> None:
        self.m.stalls.stalled(account)


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


class Daemon:
    """Everything `mailrules daemon` runs; `run()` blocks until SIGTERM/SIGINT (or `stop()`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        connect: SessionFactory | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        # The accounts' series exist before the first connection (the check at start counts).
        self.metrics.init({name: [] for name in settings.accounts}, [])
        self.metrics.oauth.init(name for name, a in settings.accounts.items() if a.oauth2 is not None)
        # One token manager per OAuth2 account for every connection of it, IMAP and SMTP.
        self.oauth = TokenManagers(self.metrics.oauth)
        # One daemon per SQLite state: a second one (or a `mailrules run`) on it is told who holds
        # it. Daemons sharing a PostgreSQL state share its accounts by leases (daemon/cluster.py).
        solo = isinstance(settings.state, Path)
        self.state = open_state(settings, lock="mailrules daemon" if solo else None)
        self.oauth.stores = stores_of(self.state)  # PostgreSQL: the tokens in it, for every daemon
        self.rules: tuple[A.Rule, ...] = ()
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._watchers: dict[tuple[str, str], MailboxWatcher | MultiPoller] = {}
        self._sync_lock = threading.RLock()  # the lease keeper's thread starts and stops watchers too
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._connect_raw = connect or session_factory(self.oauth)
        # Every session records the MODSEQs of our own STOREs: `on flag change` never runs on them.
        own = OwnChanges(self.state.note_own_changes, lambda: self.rules, self.state.get_flag_mark)
        connect = recording(self._connect, own)
        self.accounts = {name: Account(a, connect, self.oauth) for name, a in settings.accounts.items()}
        #: what the check at start learnt of each account's server it reached (run()):
        #: its namespaces (a reload's names are checked against them), and on Gmail its special uses
        self._namespaces: dict[str, Namespaces] = {}
        self._special_use: dict[str, dict[str, str]] = {}
        self._sources: dict[str, str] = {}
        self._names_refused = False
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
            guard=self.arrival_guard,
            observer=self.metrics,
            on_entry=log_entry,
            hooks=_MetricsHooks(self.metrics),
            bounds=settings.limits.bounds,
            flag_observer=self.metrics.flags,
        )
        self.notify = NotifyPlan(self.accounts, self.ctx, self.metrics, self._sync_watchers)
        # An account taken once running (run_id set) gets its watchers at once; before, the rules'
        # first load starts them.
        self.cluster_metrics = ClusterMetrics(self.metrics.registry)  # the leases' observer
        self.cluster_metrics.init(settings.accounts)
        self.cluster = Cluster(
            self.state,
            settings,
            started=lambda a: self._sync_watchers() if self.ctx.run_id else None,
            stopping=self._stop_account,
            observer=self.cluster_metrics,
        )
        for name, acct in self.accounts.items():  # no action on a server once its lease is unsure
            acct.lease_check = self.cluster.lease_check(name)
        if not self.cluster.shared:
            self.cluster.begin()  # SQLite: every account is this daemon's, from the start
        self.firings = Firings(
            settings,
            self.state,
            self.cluster,
            self.accounts,
            self.metrics,
            self.sends,
            self.lock_for,
            lambda: self._sources,
        )

    # -- shared resources ---------------------------------------------------------------------------

    def lock_for(self, account: str, mailbox: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((account, mailbox), threading.Lock())

    def _connect(self, account: AccountSettings) -> ImapSession:
        try:
            session = self._connect_raw(account)
        except Throttled as exc:  # a login refused for now (Gmail's connection cap): counted too
            self.metrics.throttled(account.name, "LOGIN", exc.retry_after or 0.0)
            raise
        session.on_command = self.metrics.command_hook(account.name)
        session.on_throttle = self.metrics.throttle_hook(account.name)
        return session

    # -- rules and watchers -------------------------------------------------------------------------

    def load_rules(self) -> bool:
        """Load and check the rule set; on any error keep what runs now and say why."""
        result = self._read_rules()
        return result is not None and self._apply_rules(result)

    def _read_rules(self) -> LoadResult | None:
        """The rule set as loaded and checked, or None (its errors logged)."""
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
            return None
        for w in result.warnings:
            log.warning("%s", w.render())
        return result

    def _apply_rules(self, result: LoadResult) -> bool:
        """Run `result`'s rules if the connection budgets hold them and every mailbox name they
        and the configuration use can exist on the servers checked at start; else keep what runs."""
        previous, self.rules = self.rules, result.rule_set.rules
        problems = self.budget_problems()
        names = self.name_problems(result.sources)
        if problems or names:
            self.rules = previous
            self._names_refused = bool(names)
            what = "keeping the rules that were running" if previous else "not starting"
            if problems:
                log.error("%s; %s", "; ".join(problems), what)
            if names:
                log.error("mailbox names the server cannot have; %s:\n%s", what, "\n".join(names))
            self.metrics.reload(False)
            return False
        self._sources = dict(result.sources)
        for account, mailbox, why in plan.unwatched(self.rules, self.settings.accounts, self._special_use):
            log.warning(
                "%s: %s is not watched: %s (name it in `watch = [...]` to watch it anyway)",
                account,
                mailbox,
                why,
            )
        watched = self.watched()
        mailboxes = {
            a: sorted(set(watched.get(a, [])) | set(mailboxes_of(self.rules, a)))
            for a in self.settings.accounts
        }
        self.metrics.init(
            mailboxes,
            [r.name for r in self.rules],
            scheduled=[r.name for r in self.rules if not isinstance(r.trigger, plan.WATCHED | A.Manually)],
            watched=watched,
        )
        self.metrics.rules_loaded(len(self.rules))
        self.metrics.reload(True)
        jobs = self.schedule.load(self.rules)
        log.info("loaded %d rules (%d scheduled) from %s", len(self.rules), jobs, self.settings.rules)
        self._sync_watchers()
        return True

    def watched(self) -> dict[str, list[str]]:
        """Per account: the mailboxes with `on arrival` rules, then `watch = [...]` extras; on
        Gmail, All Mail and Spam only when `watch` names them (daemon/plan.py)."""
        return plan.watched(self.rules, self.settings.accounts, self._special_use)

    def budget_problems(self) -> list[str]:
        """Accounts whose max_connections cannot hold what the rules need (refused at load)."""
        return plan.budget_problems(self.rules, self.settings.accounts, self.watched())

    def name_problems(self, sources: dict[str, str] | None = None) -> list[str]:
        """Each name the rules or the configuration use that a server checked at start cannot have
        (imap/names.py), in the rule errors' format."""
        out = []
        for name, ns in self._namespaces.items():
            account = self.accounts[name]
            out += [render_problem(d, name, sources) for d in account.name_problems(ns, self.rules)]
        return out

    def check_servers(self, rules: Sequence[A.Rule]) -> None:
        """Before the first rules run: connect each account that has work, once, and learn its
        namespaces (for the names check) and, on Gmail, its special uses (for `unwatched`). An
        account that cannot be reached now is checked when a watcher or a firing connects. A few
        accounts at a time (daemon/checks.py)."""
        work = {n: a for n, a in self.accounts.items() if rules_for(rules, n) or a.settings.watch}
        namespaces, special_use = check_servers(work)
        self._namespaces.update(namespaces)
        self._special_use.update(special_use)

    def _sync_watchers(self) -> None:
        """Watchers for the watched mailboxes of the accounts this daemon owns (`_sync_owned`)."""
        with self._sync_lock:
            if not self._stop.is_set():
                self._sync_owned()

    def _stop_account(self, account: str) -> None:
        """`account`'s lease is lost or handed over: its watchers end (the batch in hand acts on
        the server no more: daemon/lease_guard.py; its writes are refused if the lease is gone)."""
        with self._sync_lock:
            mine = [self._watchers.pop(k) for k in [k for k in self._watchers if k[0] == account]]
        for w in mine:
            w.stop()
        # Not longer than a round: the other leases must be renewed in time (a batch still running
        # after that finds its writes refused once the lease is released).
        deadline = time.monotonic() + min(SHUTDOWN_SECONDS, self.cluster.keeper.interval)
        for w in mine:
            w.join(max(0.0, deadline - time.monotonic()))

    def _sync_owned(self) -> None:
        """Start watchers for newly watched mailboxes, stop those no longer watched or owned.

        IDLE watches only the selected mailbox (RFC 5465 §1), so each gets a connection, within the
        account's budget less the one kept for scheduled runs; mailboxes past that are polled in
        turn on one shared connection (`plan_connections`).
        """
        wanted: dict[tuple[str, str], AccountSettings] = {}
        polled: dict[str, list[str]] = {}
        views: dict[str, State] = {}
        for name, boxes in self.watched().items():
            view = self.cluster.view(name)
            if view is None:
                continue  # another replica's
            views[name] = view
            acct = self.settings.accounts[name]
            if self.notify.want(acct, boxes):  # one NOTIFY connection for all (daemon/notify_watcher.py)
                wanted[(name, NOTIFY_KEY)] = acct
                continue
            has_scheduled = plan.has_scheduled(self.rules, name)
            idle_slots, _ = plan.plan_connections(len(boxes), acct.max_connections, has_scheduled)
            for i, mailbox in enumerate(boxes):
                if i < idle_slots:
                    wanted[(name, mailbox)] = acct
                else:
                    polled.setdefault(name, []).append(mailbox)
        self.notify.start(self._watchers, wanted, polled, views)  # before: the loop below skips them
        for key in [
            k for k in self._watchers if k not in wanted and not (k[1] == "*poll*" and k[0] in polled)
        ]:
            self._watchers.pop(key).stop()
        for key, acct in wanted.items():
            if key not in self._watchers:
                w = MailboxWatcher(self.accounts[acct.name], key[1], self.ctx, views[acct.name])
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
            p = MultiPoller(self.accounts[name], boxes, self.ctx, views[name])
            self._watchers[key] = p
            p.start()

    # -- scheduled runs -----------------------------------------------------------------------------

    def _run_scheduled(self, rules: Sequence[A.Rule]) -> None:
        """One firing of a schedule (daemon/firing.py)."""
        self.firings.run(rules)

    # -- health ---------------------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """Rules loaded, and every watcher connected or retrying within its budget; else why not."""
        if not self.rules:
            return False, "no rules loaded"
        shared, owns = self.cluster.ready()  # sharing a PostgreSQL state: the first round done
        if not shared:
            return False, owns
        # An OAuth2 account whose refresh token was refused does nothing until a new login.
        stopped = [
            f"account {a}: login required, run `mailrules auth login {a}`"
            for a in sorted(self.oauth.login_required())
        ]
        bad = {
            f"{a}/{m}": w.problem
            for (a, m), w in sorted(self._watchers.items())
            if not w.healthy and a not in self.oauth.login_required()
        }
        if not bad and not stopped:
            return True, owns if self.cluster.shared else "ok"
        # A watcher that cannot write the state, or whose rules name a mailbox the server cannot
        # have, does nothing though its server may answer: say why (the fix is in the answer:
        # room on the disk, a writable file, a name), not "not connected".
        down = [where for where, why in bad.items() if why is None]
        parts = (
            stopped
            + (["not connected: " + ", ".join(down)] if down else [])
            + [f"{where}: {why}" for where, why in bad.items() if why is not None]
        )
        return False, printable("; ".join(parts))

    # -- running ----------------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def reload(self) -> None:
        self._reload.set()

    def run(self, install_signals: bool = True) -> int:
        """Start everything and block until stopped; 0 on a clean stop, 1 when the rules don't load."""
        if install_signals:
            self._install_signals()
        result = self._read_rules()
        if result is not None:
            self.check_servers(result.rule_set.rules)
        if result is None or not self._apply_rules(result):
            self.cluster.shutdown()
            self.state.close()
            return EXIT_NAMES if self._names_refused else 1
        self.ctx.run_id = self.state.begin_run("daemon", False)
        if self.cluster.shared:
            self.cluster.begin()  # this replica's share of the accounts, then a round every third of a lease
        if self.http is not None:
            self.http.start()
            log.info("metrics on %s", self.http.url)
        self.schedule.start()
        if any(a.oauth2 is not None for a in self.settings.accounts.values()):
            threading.Thread(
                target=self.oauth.keep_fresh, args=(self._stop, self.cluster.owns), name="oauth", daemon=True
            ).start()
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
        self.cluster.halt()  # no account taken or given from here on
        watchers = list(self._watchers.values())
        for w in watchers:
            w.stop()
        for w in watchers:
            w.join(max(0.0, deadline - time.monotonic()))
        alive = [w.name for w in watchers if w.is_alive()]
        if alive:
            log.warning("still busy at shutdown: %s", ", ".join(alive))
        self.cluster.shutdown()  # the leases released at once: the other replicas take over now
        if self.http is not None:
            self.http.stop()
        try:
            if self.ctx.run_id:
                self.state.end_run(self.ctx.run_id, {"stopped": "signal"})
        except StateError as exc:
            log.error("%s", exc)
        self.state.close()
        log.info("stopped")
