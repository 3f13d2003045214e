"""Set-based execution of rules over one mailbox, equal in effect to the per-message reading.

For each rule, in order: one SEARCH over the messages still in play, one FETCH of what the residual
and the templates need, then one command per (action, destination) group. Within a rule, every
action that keeps the message in place (copy, flags, tags, forward, redirect) runs first, in the
order written, and the one that takes it away (move, archive, delete) runs last: the final state is
the one the per-message reading gives (a flag set after `move` is carried by the moved message, and
MOVE keeps flags, RFC 6851 §3.3). Actions written after `delete permanently` never run.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailrules.bounds import DEFAULT_BOUNDS, Bounds
from mailrules.compile import keys as K
from mailrules.compile.dialect import Dialect
from mailrules.compile.plan import FetchNeeds, fetch_needs, plan_condition
from mailrules.compile.serialize import compress_uids
from mailrules.dsl import ast as A
from mailrules.dsl.semantics import EvalContext, Match, prepare_regexes
from mailrules.engine.actions import ActionRunner
from mailrules.engine.evaluation import EVALUATION_TIME, BoundedEvaluator
from mailrules.engine.limits import LimitLedger
from mailrules.engine.loops import LoopGuard
from mailrules.engine.prefetch import Prefetcher, independent_rules, tested_flags
from mailrules.engine.targets import Target, union_needs
from mailrules.message.view import MessageView
from mailrules.state.models import JournalEntry

log = logging.getLogger(__name__)

#: Above this many bytes of compressed UID set, search the whole mailbox and intersect locally.
_UID_SET_LIMIT = 4000
#: A batch of at most this many given UIDs (arrivals) is fetched once and every rule evaluated
#: locally: one FETCH instead of one SEARCH per rule (bench/latency_bench.py: 20 rules cost 14 ms
#: of SEARCH round trips for one new message).
LOCAL_BATCH = 32


class MailboxStore(Protocol):
    """One account's mailboxes as the engine sees them (IMAP in production, a fake in unit tests)."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def separator(self) -> str: ...

    def select(self, mailbox: str) -> int:
        """Select `mailbox` for changes; return its UIDVALIDITY."""

    def search(self, key: K.SearchKey) -> list[int]:
        """UIDs of the selected mailbox that satisfy `key`, ascending."""

    def fetch_views(self, uids: Sequence[int], needs: FetchNeeds) -> dict[int, MessageView]:
        """Decoded views holding at least what `needs` names (plus Message-ID)."""

    def fetch_raw(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The whole messages, without setting \\Seen."""

    def move(self, uids: Sequence[int], dest: str, *, create: bool) -> tuple[int | None, dict[int, int]]:
        """Move to `dest`; (destination UIDVALIDITY, {old uid: new uid}) as far as the server says."""

    def copy(self, uids: Sequence[int], dest: str, *, create: bool) -> tuple[int | None, dict[int, int]]:
        """Copy to `dest`; like move."""

    def store_flags(self, uids: Sequence[int], flags: Sequence[str], add: bool) -> None:
        """Add or remove flags/keywords on exactly these UIDs."""

    def delete_permanently(self, uids: Sequence[int]) -> None:
        """\\Deleted and UID EXPUNGE of exactly these UIDs (never a mailbox-wide EXPUNGE)."""

    def special_use(self) -> dict[str, str]:
        """{"\\Archive": name, "\\Trash": name, ...} as the server reports them."""


class Sender(Protocol):
    """Sends mail for forward and redirect (the account's SMTP settings)."""

    def send_forward(self, original: bytes, to: str, *, rule: str, idempotency_key: str) -> str: ...

    def send_redirect(self, original: bytes, to: str, *, rule: str, idempotency_key: str) -> None: ...


class Journal(Protocol):
    """Where actions are recorded and forward/redirect are made exactly-once (state.StateStore)."""

    def record_many(self, entries: Sequence[JournalEntry]) -> None: ...

    def intent(self, key: str, entry: JournalEntry) -> bool: ...

    def confirm(self, key: str) -> None: ...

    def release(self, key: str) -> bool: ...

    def is_confirmed(self, key: str) -> bool: ...

    # many intents at once, for copies (and moves without MOVE): actions/claims.py
    def claim(self, items: Sequence[tuple[str, JournalEntry]]) -> set[str]: ...

    def confirm_many(self, keys: Sequence[str]) -> None: ...

    def release_many(self, keys: Sequence[str]) -> None: ...

    def confirmed_keys(self, keys: Sequence[str]) -> set[str]: ...

    def already_done(
        self,
        account: str,
        mailbox: str,
        uidvalidity: int,
        uids: Sequence[int],
        rule: str,
        action: str,
        destination: str | None,
    ) -> set[int]: ...

    def sends_since(self, account: str, address: str, since: dt.datetime) -> list[dt.datetime]:
        """When the forwards/redirects of `account` to `address` since `since` were announced."""


class EngineObserver(Protocol):
    """Watches what the engine does (metrics): one call per action, per rule, per mailbox pass."""

    def entry(self, entry: JournalEntry) -> None:
        """One action on one message (any outcome, dry runs included)."""

    def rule_done(self, report: RuleReport, seconds: float) -> None:
        """One rule over one mailbox: SEARCH, FETCH, residual and actions took `seconds`."""

    def mailbox_done(self, report: MailboxReport, seconds: float) -> None:
        """One pass over one mailbox finished."""


@dataclass(frozen=True, slots=True)
class AccountContext:
    """What the engine needs to know of an account beyond its mailbox store."""

    name: str
    archive: str | None = None  # configured override of SPECIAL-USE \Archive
    trash: str | None = None  # configured override of SPECIAL-USE \Trash
    create_mailboxes: bool = True
    sender: Sender | None = None
    #: the mailbox creation budget and send limiter of this run (actions/loops.py); None: defaults
    guard: LoopGuard | None = None


@dataclass
class RuleReport:
    """What one rule did in one mailbox."""

    rule: str
    account: str
    mailbox: str
    candidates: int = 0
    matched: int = 0
    limited: bool = False
    outcomes: Counter[str] = field(default_factory=Counter)  # "move ok", "forward failed", ...

    @property
    def failed(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k.endswith(" failed"))


@dataclass
class MailboxReport:
    """One pass of the rules over one mailbox."""

    account: str
    mailbox: str
    uidvalidity: int
    examined: int
    last_uid: int
    rules: list[RuleReport] = field(default_factory=list)
    skipped_messages: int = 0  # malformed or vanished messages passed over
    retry: list[int] = field(default_factory=list)  # refused for now; safe to process again later
    #: messages passed over at a `[limits]` bound, by reason (`evaluation_time`); in skipped_messages too
    skipped_for: Counter[str] = field(default_factory=Counter)
    text_cut: int = 0  # messages whose decoded text went past a [limits] cap (searched up to it)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.rules)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a run behaves: its clock, dry-run, whether `limit` guard rails may be exceeded."""

    now: dt.datetime
    tz: dt.tzinfo
    run_id: str
    dry_run: bool = False
    force: bool = False
    bounds: Bounds = DEFAULT_BOUNDS  # `[limits]` on one message's evaluation (evaluation.py)


class Engine:
    """Applies an ordered list of rules to the messages of one mailbox at a time."""

    def __init__(
        self,
        options: RunOptions,
        journal: Journal | None = None,
        on_entry: Callable[[JournalEntry], None] | None = None,
        observer: EngineObserver | None = None,
        limits: LimitLedger | None = None,
    ) -> None:
        """`limits`: a run's `limit` accounting shared by every pass (mailrules/engine/limits.py); without
        it, each pass is judged on its own (the daemon's arrival batches)."""
        self.options = options
        self.limits = limits
        self.journal = journal
        self.on_entry = on_entry
        self.observer = observer
        self._plans: dict[tuple[int, Dialect], tuple[K.SearchKey, A.Condition | None, FetchNeeds]] = {}

    def process(
        self,
        store: MailboxStore,
        account: AccountContext,
        mailbox: str,
        rules: Sequence[A.Rule],
        uids: Sequence[int] | None = None,
        *,
        uidvalidity: int | None = None,
        prefetch: MailboxStore | None = None,
    ) -> MailboxReport:
        """Run `rules` (those in scope for this account and mailbox) over `uids`, or the whole mailbox.

        Messages are taken once, at the start: a copy made into this mailbox by a rule is not
        itself processed in the same pass. `uidvalidity`: the mailbox is already selected on this
        store's connection (a watcher's), so no SELECT is sent. `prefetch`: a second connection
        to the same account, used to search and fetch ahead over a whole mailbox (prefetch.py).
        """
        started = time.monotonic()
        if uidvalidity is None:
            uidvalidity = store.select(mailbox)
        whole = uids is None
        candidates = store.search(K.All()) if uids is None else sorted(set(uids))
        remaining = set(candidates)
        report = MailboxReport(
            account.name, mailbox, uidvalidity, len(candidates), max(candidates, default=0)
        )
        ctx = EvalContext(self.options.now, self.options.tz, store.separator or "/")
        runner = ActionRunner(store, account, mailbox, uidvalidity, self.options, self.journal, self._emit)
        in_scope = [r for r in rules if r.applies_to(account.name, mailbox)]
        prepare_regexes(r.condition for r in in_scope)  # compiled before any message's clock runs
        ev = BoundedEvaluator(self.options.bounds, ctx, f"{account.name}/{mailbox}")
        local = self._prefetch(store, in_scope, candidates, runner) if uids is not None else None
        ahead = None
        if prefetch is not None and uids is None and not self.options.dry_run and len(in_scope) > 1:
            dialect = store.dialect

            def plan(rule: A.Rule) -> tuple[K.SearchKey, FetchNeeds]:
                server, _, needs = self._plan(rule, dialect)
                return server, union_needs(needs, runner.needs_for(rule))

            ahead = Prefetcher(prefetch, mailbox, independent_rules(in_scope), plan)
        try:
            self._rules(store, account, mailbox, rules, remaining, whole, ev, runner, local, ahead, report)
        finally:
            if ahead is not None:
                ahead.close()
            report.skipped_for[EVALUATION_TIME] += len(ev.over_time)
            report.text_cut = len(ev.text_cut)
        report.retry = sorted(runner.retry_uids)
        if self.observer is not None:
            self.observer.mailbox_done(report, time.monotonic() - started)
        return report

    def _rules(
        self,
        store: MailboxStore,
        account: AccountContext,
        mailbox: str,
        rules: Sequence[A.Rule],
        remaining: set[int],
        whole: bool,
        ev: BoundedEvaluator,
        runner: ActionRunner,
        local: dict[int, MessageView] | None,
        ahead: Prefetcher | None,
        report: MailboxReport,
    ) -> None:
        for rule in rules:
            if not remaining:
                break
            if not rule.applies_to(account.name, mailbox):
                continue
            rule_started = time.monotonic()
            rr = RuleReport(rule.name, account.name, mailbox, candidates=len(remaining))
            report.rules.append(rr)
            found = ahead.result(rule) if ahead is not None else None
            if local is not None:
                matched, views, skipped = self._match_local(rule, remaining, local, ev, runner)
            elif found is not None:
                hits = [u for u in found[0] if u in remaining]
                residual = self._plan(rule, store.dialect)[1]
                matched, views, skipped = self._evaluate(
                    rule, residual, hits, found[1], ev, runner, fresh=False
                )
            else:
                matched, views, skipped = self._match(store, rule, remaining, whole, ev, runner)
            remaining -= ev.over_time  # out of time: no later rule reads it in this pass
            report.skipped_messages += skipped
            rr.matched = len(matched)
            if not matched:
                self._rule_done(rr, rule_started)
                continue
            over = self._over_limit(rule, account.name, mailbox, len(matched))
            if over is not None:
                rr.limited = True
                log.warning(
                    '%s: rule "%s": %d messages match%s (%d in %s/%s), more than its limit %d: '
                    "nothing done (raise the limit, or run it by hand with --force)",
                    rule.span.short,
                    rule.name,
                    over,
                    " in this run" if self.limits is not None else "",
                    len(matched),
                    account.name,
                    mailbox,
                    rule.limit,
                )
                self._rule_done(rr, rule_started)
                continue
            targets = [Target(uid, views[uid], m) for uid, m in matched]
            removed = runner.run_rule(rule, targets, ev.ctx, rr)
            remaining -= removed
            whole = False
            self._rule_done(rr, rule_started)

    def _over_limit(self, rule: A.Rule, account: str, mailbox: str, matched: int) -> int | None:
        """The total that exceeds the rule's `limit` (this pass, or the run's), or None to act."""
        if rule.limit is None or self.options.force:
            return None
        if self.limits is not None:
            return self.limits.decide(rule, account, mailbox, matched)
        return matched if matched > rule.limit else None

    def _rule_done(self, rr: RuleReport, started: float) -> None:
        if self.observer is not None:
            self.observer.rule_done(rr, time.monotonic() - started)

    # -- matching ----------------------------------------------------------------------------------

    def _plan(self, rule: A.Rule, dialect: Dialect) -> tuple[K.SearchKey, A.Condition | None, FetchNeeds]:
        key = (id(rule), dialect)
        if key not in self._plans:
            p = plan_condition(rule.condition, dialect, self.options.now, self.options.tz)
            self._plans[key] = (p.server, p.residual, p.needs)
        return self._plans[key]

    def _prefetch(
        self, store: MailboxStore, rules: Sequence[A.Rule], uids: list[int], runner: ActionRunner
    ) -> dict[int, MessageView] | None:
        """For a small batch: one FETCH of what every rule needs, or None to search rule by rule."""
        if not uids or len(uids) > LOCAL_BATCH or not rules:
            return None
        needs = FetchNeeds(flags=True)
        for rule in rules:
            needs = union_needs(needs, union_needs(fetch_needs(rule.condition), runner.needs_for(rule)))
        if needs.body:
            return None  # whole bodies: the server's BODY/TEXT search moves fewer bytes
        return store.fetch_views(uids, needs)

    def _match_local(
        self,
        rule: A.Rule,
        remaining: set[int],
        views: dict[int, MessageView],
        ev: BoundedEvaluator,
        runner: ActionRunner,
    ) -> tuple[list[tuple[int, Match]], dict[int, MessageView], int]:
        """The per-message reading itself, on prefetched views (flags as earlier rules left them)."""
        matched: list[tuple[int, Match]] = []
        current: dict[int, MessageView] = {}
        skipped = 0
        for uid in sorted(remaining):
            view = views.get(uid)
            if view is None:
                skipped += 1  # expunged by someone else meanwhile
                continue
            view = runner.with_overlay(uid, view, fresh=False)
            current[uid] = view
            m = ev.evaluate(rule, rule.condition, view, uid)
            if m is None:
                skipped += 1
            elif m.ok:
                matched.append((uid, m))
        if skipped:
            # report a vanished or broken message once per pass, not once per rule
            skipped_uids = {u for u in remaining if u not in current}
            remaining.difference_update(skipped_uids)
        return matched, current, skipped

    def _match(
        self,
        store: MailboxStore,
        rule: A.Rule,
        remaining: set[int],
        whole: bool,
        ev: BoundedEvaluator,
        runner: ActionRunner,
    ) -> tuple[list[tuple[int, Match]], dict[int, MessageView], int]:
        server, residual, needs = self._plan(rule, store.dialect)
        if self.options.dry_run and runner.flag_overlay and tested_flags(rule.condition):
            # A dry run changes no flags on the server, so a later rule that tests flags earlier
            # rules would have changed is evaluated locally, on the flags the run would have left.
            server, residual, needs = K.All(), rule.condition, fetch_needs(rule.condition)
        hits = self._search(store, server, remaining, whole)
        if not hits:
            return [], {}, 0
        views = store.fetch_views(hits, union_needs(needs, runner.needs_for(rule)))
        return self._evaluate(rule, residual, hits, views, ev, runner, fresh=True)

    def _evaluate(
        self,
        rule: A.Rule,
        residual: A.Condition | None,
        hits: list[int],
        views: dict[int, MessageView],
        ev: BoundedEvaluator,
        runner: ActionRunner,
        *,
        fresh: bool,
    ) -> tuple[list[tuple[int, Match]], dict[int, MessageView], int]:
        """The residual on each hit's view; `fresh`: fetched now, else before earlier rules acted."""
        matched: list[tuple[int, Match]] = []
        skipped = 0
        for uid in hits:
            view = views.get(uid)
            if view is None:  # expunged by someone else meanwhile (RFC 9051 §6.4.9)
                log.info(
                    '%s: rule "%s": message uid %d vanished (expunged by another client); skipped',
                    rule.span.short,
                    rule.name,
                    uid,
                )
                skipped += 1
                continue
            view = runner.with_overlay(uid, view, fresh=fresh)
            views[uid] = view
            if residual is None:
                matched.append((uid, Match(True)))
                continue
            m = ev.evaluate(rule, residual, view, uid)
            if m is None:
                skipped += 1
            elif m.ok:
                matched.append((uid, m))
        return matched, views, skipped

    @staticmethod
    def _search(store: MailboxStore, server: K.SearchKey, remaining: set[int], whole: bool) -> list[int]:
        if not whole:
            uid_set = compress_uids(sorted(remaining))
            if sum(len(s) + 1 for s in uid_set) <= _UID_SET_LIMIT:
                server = K.and_(K.Uid(frozenset(remaining)), server)
        return [u for u in store.search(server) if u in remaining]

    def _emit(self, entry: JournalEntry) -> None:
        if self.on_entry is not None:
            self.on_entry(entry)
        if self.observer is not None:
            self.observer.entry(entry)


def merge_reports(reports: Sequence[MailboxReport]) -> dict[str, dict[str, int]]:
    """Per rule: matched count and outcome counts, summed over mailboxes and accounts."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in reports:
        for rr in r.rules:
            d = out[rr.rule]
            d["matched"] += rr.matched
            d["limited"] += int(rr.limited)
            for k, n in rr.outcomes.items():
                d[k] += n
    return {k: dict(v) for k, v in out.items()}
