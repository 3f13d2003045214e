"""Every Prometheus metric of mailrules, fed as an engine observer and by the daemon's hooks."""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mailrules import __version__
from mailrules.daemon.ahead_metrics import SearchAheadMetrics
from mailrules.daemon.flag_metrics import FlagMetrics
from mailrules.daemon.labels import (
    ACTION_COMMANDS,
    ACTION_OUTCOMES,
    ACTIONS,
    ARRIVAL_BUCKETS,
    CONNECT_BUCKETS,
    HTTP_DROP_REASONS,
    IMAP_BUCKETS,
    IMAP_COMMANDS,
    MESSAGE_OUTCOMES,
    MESSAGE_SKIP_REASONS,
    OTHER,
    RELOAD_OUTCOMES,
    RULE_BUCKETS,
    RUN_BUCKETS,
    SCHEDULED_OUTCOMES,
    AccountT,
    SessionT,
    action_label,
    command_label,
)
from mailrules.daemon.oauth_metrics import OAuthMetrics
from mailrules.daemon.stall_metrics import StallMetrics
from mailrules.engine.loops import CREATION_LIMIT, SKIP_LABELS, skip_label
from mailrules.engine.ports import MailboxReport, RuleReport
from mailrules.imap.errors import Throttled
from mailrules.state.models import JournalEntry

log = logging.getLogger(__name__)

# The `_created` series of the 0.0.4 text format double every counter and histogram for nothing a
# dashboard uses; this module is the only user of prometheus_client, so the switch is ours.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

#: The exposition below is the classic text format: every name we use is a legacy-valid name.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The metric objects of one process (or one test) in their own registry; an EngineObserver.

    Call `init` with the configuration before anything else: label values outside what it names
    are recorded as `other`, so no value from mail or from a server ever becomes a series.
    Every method is thread-safe and never raises into the caller for a label it does not know.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self._lock = threading.Lock()
        self._accounts: set[str] = set()
        self._mailboxes: set[tuple[str, str]] = set()
        self._rules: set[str] = set()
        self._warned: set[tuple[str, str]] = set()
        # (account, mailbox) -> (UIDs with an action not failed, UIDs with a failed one) in this pass
        self._pass: dict[tuple[str, str], tuple[set[int], set[int]]] = {}
        self._local = threading.local()

        acct = ["account"]
        self.messages_seen = Counter(
            "mailrules_messages_seen_total", "Messages examined by a pass of the rules.", acct, registry=r
        )
        self.messages_processed = Counter(
            "mailrules_messages_processed_total",
            "Messages after a pass: matched (acted on), unmatched, skipped (malformed or vanished), "
            "failed (an action failed).",
            ["account", "outcome"],
            registry=r,
        )
        self.malformed = Counter(
            "mailrules_malformed_messages_total",
            "Messages passed over because they could not be decoded or evaluated (or vanished).",
            acct,
            registry=r,
        )
        self.rule_matches = Counter(
            "mailrules_rule_matches_total", "Messages a rule matched.", ["rule"], registry=r
        )
        self.rule_duration = Histogram(
            "mailrules_rule_duration_seconds",
            "One rule over one mailbox: SEARCH, FETCH, residual and actions.",
            ["rule"],
            buckets=RULE_BUCKETS,
            registry=r,
        )
        self.actions = Counter(
            "mailrules_actions_total", "Actions on single messages.", ["action", "outcome"], registry=r
        )
        self.action_duration = Histogram(
            "mailrules_action_duration_seconds",
            "IMAP time of the commands that carried out one action group (one action, one destination).",
            ["action"],
            buckets=RULE_BUCKETS,
            registry=r,
        )
        self.imap_duration = Histogram(
            "mailrules_imap_command_duration_seconds",
            "IMAP commands, from sending to the tagged reply.",
            ["account", "command"],
            buckets=IMAP_BUCKETS,
            registry=r,
        )
        self.imap_errors = Counter(
            "mailrules_imap_command_errors_total",
            "IMAP commands answered NO or BAD, or lost with the connection.",
            ["account", "command"],
            registry=r,
        )
        self.imap_throttled = Counter(
            "mailrules_imap_throttled_total",
            "Throttling answers (Exchange's Request is throttled, Gmail's Too many simultaneous "
            "connections): the connection sent nothing until the suggested time had passed.",
            acct,
            registry=r,
        )
        self.connect_duration = Histogram(
            "mailrules_connect_duration_seconds",
            "Opening an IMAP session: DNS, TCP, TLS and login.",
            acct,
            buckets=CONNECT_BUCKETS,
            registry=r,
        )
        self.arrival_latency = Histogram(
            "mailrules_arrival_latency_seconds",
            "From the server announcing a new message to the end of its processing.",
            acct,
            buckets=ARRIVAL_BUCKETS,
            registry=r,
        )
        self.watcher = Gauge(
            "mailrules_watcher_up",
            "1 while the IDLE watcher of a mailbox is connected.",
            ["account", "mailbox"],
            registry=r,
        )
        self.reconnects = Counter(
            "mailrules_reconnects_total", "Watcher connections re-established.", acct, registry=r
        )
        self.last_sync = Gauge(
            "mailrules_last_sync_timestamp_seconds",
            "Unix time a mailbox was last brought up to date (0: never).",
            ["account", "mailbox"],
            registry=r,
        )
        self.scheduled_runs = Counter(
            "mailrules_scheduled_runs_total", "Runs of scheduled rules.", ["rule", "outcome"], registry=r
        )
        self.scheduled_duration = Histogram(
            "mailrules_scheduled_run_duration_seconds",
            "One scheduled run of a rule, over every account and mailbox.",
            ["rule"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.scheduled_last = Gauge(
            "mailrules_scheduled_last_run_timestamp_seconds",
            "When a scheduled rule last finished a run (Unix time), whatever its outcome.",
            ["rule"],
            registry=r,
        )
        self.rules_gauge = Gauge("mailrules_rules_loaded", "Rules in the running rule set.", registry=r)
        self.reloads = Counter(
            "mailrules_config_reloads_total", "Configuration and rule reloads.", ["outcome"], registry=r
        )
        self.reload_ok = Gauge(
            "mailrules_config_last_reload_success", "1 if the last reload succeeded, else 0.", registry=r
        )
        self.reload_time = Gauge(
            "mailrules_config_last_reload_timestamp_seconds",
            "Unix time of the last reload attempt (0: none).",
            registry=r,
        )
        self.http_dropped_total = Counter(
            "mailrules_http_connections_dropped_total",
            "HTTP connections cut short: limit (refused, all busy), evicted (closed for room while its "
            "request was still arriving), timeout, disconnect (the client went away).",
            ["reason"],
            registry=r,
        )
        self.actions_skipped = Counter(
            "mailrules_actions_skipped_total",
            "Actions skipped for loop safety: source_mailbox (the destination is the mailbox the rule "
            "reads), auto_submitted, null_sender, report, precedence, loop_header (forward/redirect "
            "of automatic, bounce, report, bulk or already forwarded mail), rate_limit; and vanished "
            "(a move or copy of a message another client expunged first, by the server's COPYUID).",
            ["account", "reason"],
            registry=r,
        )
        self.messages_skipped = Counter(
            "mailrules_messages_skipped_total",
            "Messages a pass passed over at a [limits] bound, left in place: evaluation_time (the "
            "rules' evaluation of it took more than evaluation_seconds).",
            ["account", "reason"],
            registry=r,
        )
        self.text_cut = Counter(
            "mailrules_message_text_cut_total",
            "Messages whose decoded text went past [limits] part_text_bytes or message_text_bytes: "
            "body and text were searched up to the cap.",
            ["account"],
            registry=r,
        )
        self.creations_refused = Counter(
            "mailrules_mailbox_creations_refused_total",
            "Moves and copies failed because the run had created [limits] mailboxes_created_per_run "
            "mailboxes already (the daemon's arrivals: in the last hour).",
            ["account"],
            registry=r,
        )
        self.state_errors = Counter(
            "mailrules_state_errors",
            "Times the state database could not be read or written (disk full, read-only, damaged): "
            "the work that needed it was stopped and is tried again later.",
            registry=r,
        )
        self.oauth = OAuthMetrics(r)  # the OAuth2 accounts' tokens: their own module, their own init
        self.stalls = StallMetrics(r, self._account)  # mailrules_watcher_stalls_total{account}
        self.ahead = SearchAheadMetrics(r, self._account)  # mailrules_search_ahead_total{account}
        self.flags = FlagMetrics(r, self._account)  # `on flag change`: looks, changes, refusals
        build = Gauge(
            "mailrules_build_info", "Always 1; the labels say what runs.", ["version", "python"], registry=r
        )
        build.labels(__version__, platform.python_version()).set(1)
        self.reload_ok.set(1)  # the configuration a process starts with has loaded, or it would not run
        for outcome in RELOAD_OUTCOMES:
            self.reloads.labels(outcome)
        for reason in HTTP_DROP_REASONS:
            self.http_dropped_total.labels(reason)
        for action in ACTIONS:
            self.action_duration.labels(action)
            for outcome in ACTION_OUTCOMES:
                self.actions.labels(action, outcome)

    # -- configuration ------------------------------------------------------------------------------

    def init(
        self,
        accounts: Mapping[str, Iterable[str]],
        rules: Iterable[str],
        actions: Iterable[str] = ACTIONS,
        scheduled: Iterable[str] | None = None,
        watched: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """Declare the label values of the configuration and create their series (value 0).

        `accounts` maps each account to its configured mailboxes (watched or named by rules);
        `scheduled` names the rules with a schedule (default: every rule); `watched` the mailboxes
        that have a watcher (default: all of `accounts`'), the only ones given `watcher_up` and
        last-sync series, so that a mailbox only scheduled rules read never shows as down. Call again after a
        reload: new names are added; series of names no longer configured stay (counters keep
        their history).
        """
        rule_names = list(rules)
        with self._lock:
            for account, mailboxes in accounts.items():
                self._accounts.add(account)
                self._mailboxes.update((account, m) for m in mailboxes)
            self._rules.update(rule_names)
            mailbox_pairs = sorted(
                self._mailboxes
                if watched is None
                else {(a, m) for a, boxes in watched.items() for m in boxes}
            )
        self.stalls.init(accounts)
        self.ahead.init(accounts)
        self.flags.init(accounts)
        for account in accounts:
            self.creations_refused.labels(account)
            self.text_cut.labels(account)
            for why in MESSAGE_SKIP_REASONS:
                self.messages_skipped.labels(account, why)
            for reason in SKIP_LABELS:
                self.actions_skipped.labels(account, reason)
            self.messages_seen.labels(account)
            self.malformed.labels(account)
            self.reconnects.labels(account)
            self.imap_throttled.labels(account)
            self.connect_duration.labels(account)
            self.arrival_latency.labels(account)
            for outcome in MESSAGE_OUTCOMES:
                self.messages_processed.labels(account, outcome)
            for command in IMAP_COMMANDS:
                self.imap_duration.labels(account, command)
                self.imap_errors.labels(account, command)
        for account, mailbox in mailbox_pairs:
            self.watcher.labels(account, mailbox)
            self.last_sync.labels(account, mailbox)
        for rule in rule_names:
            self.rule_matches.labels(rule)
            self.rule_duration.labels(rule)
        for rule in rule_names if scheduled is None else scheduled:
            self.scheduled_duration.labels(self._rule(rule))
            for outcome in SCHEDULED_OUTCOMES:
                self.scheduled_runs.labels(self._rule(rule), outcome)
        for action in actions:
            self.action_duration.labels(action_label(action))
            for outcome in ACTION_OUTCOMES:
                self.actions.labels(action_label(action), outcome)
        self.rules_loaded(len(rule_names))

    def _known(self, kind: str, value: str, known: bool) -> str:
        if known:
            return value
        with self._lock:
            first = (kind, value) not in self._warned and len(self._warned) < 100
            if first:
                self._warned.add((kind, value))
        if first:
            log.warning(
                "metrics: %s %r is not in the configuration given to init(); counted as %r",
                kind,
                value,
                OTHER,
            )
        return OTHER

    def _account(self, account: str) -> str:
        return self._known("account", account, account in self._accounts)

    def _mailbox(self, account: str, mailbox: str) -> str:
        return self._known("mailbox", mailbox, (account, mailbox) in self._mailboxes)

    def _rule(self, rule: str) -> str:
        return self._known("rule", rule, rule in self._rules)

    # -- EngineObserver -----------------------------------------------------------------------------

    def entry(self, entry: JournalEntry) -> None:
        """One action on one message (any outcome, dry runs included)."""
        action = action_label(entry.action)
        outcome = entry.outcome.replace("-", "_")
        self.actions.labels(action, outcome if outcome in ACTION_OUTCOMES else OTHER).inc()
        if entry.outcome == "skipped":
            reason = skip_label(entry.error)
            if reason is not None:
                self.actions_skipped.labels(self._account(entry.account), reason).inc()
        elif entry.outcome == "failed" and (entry.error or "").startswith(CREATION_LIMIT):
            self.creations_refused.labels(self._account(entry.account)).inc()
        pending = getattr(self._local, "pending", 0.0)
        if pending and entry.outcome in ("ok", "failed"):
            # The first entry after the commands of a group: those commands were this group's.
            self.action_duration.labels(action).observe(pending)
            self._local.pending = 0.0
        with self._lock:
            acted, failed = self._pass.setdefault((entry.account, entry.mailbox), (set(), set()))
            (failed if entry.outcome == "failed" else acted).add(entry.uid)

    def rule_done(self, report: RuleReport, seconds: float) -> None:
        """One rule over one mailbox."""
        self._local.pending = 0.0  # command time no entry claimed (a failure) belongs to no later group
        rule = self._rule(report.rule)
        self.rule_matches.labels(rule).inc(report.matched)
        self.rule_duration.labels(rule).observe(seconds)

    def mailbox_done(self, report: MailboxReport, seconds: float) -> None:
        """One pass over one mailbox: how many messages it saw and what became of them."""
        account = self._account(report.account)
        with self._lock:
            acted, failed = self._pass.pop((report.account, report.mailbox), (set(), set()))
        matched = len(acted - failed)
        skipped = max(min(report.skipped_messages, report.examined - matched - len(failed)), 0)
        unmatched = max(report.examined - matched - len(failed) - skipped, 0)
        self.messages_seen.labels(account).inc(report.examined)
        self.malformed.labels(account).inc(report.skipped_messages)
        for why, n in report.skipped_for.items():
            if n > 0:
                self.messages_skipped.labels(account, why if why in MESSAGE_SKIP_REASONS else OTHER).inc(n)
        if report.text_cut:
            self.text_cut.labels(account).inc(report.text_cut)
        self.ahead.mailbox_done(report)
        counts = {"matched": matched, "unmatched": unmatched, "skipped": skipped, "failed": len(failed)}
        for outcome, n in counts.items():
            if n > 0:
                self.messages_processed.labels(account, outcome).inc(n)

    # -- the daemon's hooks -------------------------------------------------------------------------

    def imap_command(self, account: str, command: str, seconds: float, ok: bool) -> None:
        """One IMAP command (CommandCore.on_command, bound to an account)."""
        label = command_label(command)
        self.imap_duration.labels(self._account(account), label).observe(seconds)
        if not ok:
            self.imap_errors.labels(self._account(account), label).inc()
        word = command.upper().removeprefix("UID ").strip()
        if word in ACTION_COMMANDS:
            self._local.pending = getattr(self._local, "pending", 0.0) + seconds

    def command_hook(self, account: str) -> Callable[[str, float, bool], None]:
        """A CommandCore.on_command for one account's session."""

        def hook(command: str, seconds: float, ok: bool) -> None:
            self.imap_command(account, command, seconds, ok)

        return hook

    def throttled(self, account: str, command: str, seconds: float) -> None:
        """The server answered `command` with a throttling answer; commands are held back `seconds`."""
        self.imap_throttled.labels(self._account(account)).inc()

    def throttle_hook(self, account: str) -> Callable[[str, float], None]:
        """A CommandCore.on_throttle for one account's session."""

        def hook(command: str, seconds: float) -> None:
            self.throttled(account, command, seconds)

        return hook

    def instrument(self, connect: Callable[[AccountT], SessionT]) -> Callable[[AccountT], SessionT]:
        """Wrap a session factory: time each connect and attach the command and throttle hooks."""

        def connected(account: AccountT) -> SessionT:
            started = time.perf_counter()
            try:
                session = connect(account)
            except Throttled as exc:  # a login refused for now (Gmail's connection cap)
                self.throttled(account.name, "LOGIN", exc.retry_after or 0.0)
                raise
            self.connected(account.name, time.perf_counter() - started)
            session.on_command = self.command_hook(account.name)
            session.on_throttle = self.throttle_hook(account.name)
            return session

        return connected

    def connected(self, account: str, seconds: float) -> None:
        """An IMAP session opened: DNS, TCP, TLS and login took `seconds`."""
        self.connect_duration.labels(self._account(account)).observe(seconds)

    def reconnect(self, account: str) -> None:
        """A watcher connection was re-established after a loss."""
        self.reconnects.labels(self._account(account)).inc()

    def watcher_up(self, account: str, mailbox: str, up: bool) -> None:
        """The IDLE watcher of a mailbox connected (True) or lost its connection (False)."""
        self.watcher.labels(self._account(account), self._mailbox(account, mailbox)).set(1 if up else 0)

    def synced(self, account: str, mailbox: str, when: float | None = None) -> None:
        """A mailbox was brought up to date at Unix time `when` (default: now)."""
        stamp = time.time() if when is None else when
        self.last_sync.labels(self._account(account), self._mailbox(account, mailbox)).set(stamp)

    def arrival(self, account: str, seconds: float) -> None:
        """A new message was processed `seconds` after the server announced it."""
        self.arrival_latency.labels(self._account(account)).observe(seconds)

    def scheduled_run(self, rule: str, seconds: float, outcome: str) -> None:
        """One scheduled run of `rule`: ok, failed, or skipped (the previous one still running)."""
        label = self._rule(rule)
        self.scheduled_runs.labels(label, outcome if outcome in SCHEDULED_OUTCOMES else OTHER).inc()
        self.scheduled_duration.labels(label).observe(seconds)
        self.scheduled_last.labels(label).set_to_current_time()

    def rules_loaded(self, n: int) -> None:
        """The running rule set has `n` rules."""
        self.rules_gauge.set(n)

    def reload(self, success: bool) -> None:
        """A reload of configuration and rules succeeded or failed (the old rules keep running)."""
        self.reloads.labels("success" if success else "failure").inc()
        self.reload_ok.set(1 if success else 0)
        self.reload_time.set(time.time())

    def state_error(self) -> None:
        """The state database failed (StateError): a watcher waits, a scheduled firing stopped."""
        self.state_errors.inc()

    def http_dropped(self, reason: str) -> None:
        """The HTTP server cut a connection short, for one of HTTP_DROP_REASONS."""
        self.http_dropped_total.labels(reason if reason in HTTP_DROP_REASONS else OTHER).inc()

    # -- exposition ---------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (CONTENT_TYPE)."""
        return prometheus_client.generate_latest(self.registry)
