"""Set-based execution of rules over one mailbox, equal in effect to the per-message reading.

For each rule, in order: one SEARCH over the messages still in play, one FETCH of what the residual
and the templates need, then one command per (action, destination) group. Within a rule, every
action that keeps the message in place (copy, flags, tags, forward, redirect) runs first, in the
order written, and the one that takes it away (move, archive, delete) runs last: the final state is
the one the per-message reading gives (a flag set after `move` is carried by the moved message, and
MOVE keeps flags, RFC 6851 §3.3). Actions written after `delete permanently` never run.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from mailrules.compile import keys as K
from mailrules.compile.needs import FetchNeeds, fetch_needs
from mailrules.compile.refusal import server_refusal
from mailrules.dsl import ast as A
from mailrules.dsl.semantics import EvalContext, prepare_regexes
from mailrules.dsl.walk import server_only
from mailrules.engine.actions import ActionRunner
from mailrules.engine.evaluation import EVALUATION_TIME, BoundedEvaluator
from mailrules.engine.matching import Matcher, Matches
from mailrules.engine.observing import SafeObservers
from mailrules.engine.ports import (
    AccountContext,
    EngineObserver,
    EntryHook,
    Journal,
    LimitPolicy,
    MailboxReport,
    MailboxStore,
    RuleReport,
    RunOptions,
)
from mailrules.engine.prefetch import (
    SEARCH_AHEAD_MIN_MESSAGES,
    Prefetcher,
    StoreOpener,
    independent_rules,
    may_remove,
    tested_flags,
)
from mailrules.engine.targets import Target, union_needs
from mailrules.logs import printable
from mailrules.message.view import MessageView

__all__ = ["LOCAL_BATCH", "Engine", "merge_reports"]

log = logging.getLogger(__name__)
#: The line per rule and mailbox: the logger of the lines per action (accounts.log_entry), so that
#: one name selects both.
rules_log = logging.getLogger("mailrules.run")

#: A batch of at most this many given UIDs (arrivals) is fetched once and every rule evaluated
#: locally: one FETCH instead of one SEARCH per rule (bench/latency_bench.py: 20 rules cost 14 ms
#: of SEARCH round trips for one new message).
LOCAL_BATCH = 32


@dataclass(slots=True)
class _Pass:
    """One pass over one mailbox: what every rule of it works with."""

    store: MailboxStore
    account: AccountContext
    mailbox: str
    ev: BoundedEvaluator
    runner: ActionRunner
    report: MailboxReport
    local: dict[int, MessageView] | None = None  # a batch of arrivals, fetched once
    ahead: Prefetcher | None = None  # later rules searched and fetched on a second connection


class Engine:
    """Applies an ordered list of rules to the messages of one mailbox at a time."""

    def __init__(
        self,
        options: RunOptions,
        journal: Journal | None = None,
        on_entry: EntryHook | None = None,
        observer: EngineObserver | None = None,
        limits: LimitPolicy | None = None,
        search_ahead_min: int | None = None,
    ) -> None:
        """`limits`: a run's `limit` accounting shared by every pass (engine/limits.py: LimitLedger);
        without it, each pass is judged on its own (the daemon's arrival batches). `on_entry` and
        `observer` are called inside try/except (engine/observing.py): they cannot stop the work.
        `search_ahead_min`: the smallest whole-mailbox pass that uses `prefetch` (default
        SEARCH_AHEAD_MIN_MESSAGES, prefetch.py)."""
        self.options = options
        self.limits = limits
        self.journal = journal
        self.on_entry = on_entry
        self.observer = observer
        self.observers = SafeObservers(on_entry, observer)
        self.matcher = Matcher(options.now, options.tz)
        self.search_ahead_min = SEARCH_AHEAD_MIN_MESSAGES if search_ahead_min is None else search_ahead_min

    def process(
        self,
        store: MailboxStore,
        account: AccountContext,
        mailbox: str,
        rules: Sequence[A.Rule],
        uids: Sequence[int] | None = None,
        *,
        uidvalidity: int | None = None,
        prefetch: StoreOpener | None = None,
    ) -> MailboxReport:
        """Run `rules` (those in scope for this account and mailbox) over `uids`, or the whole mailbox.

        Messages are taken once, at the start: a copy made into this mailbox by a rule is not
        itself processed in the same pass. `uidvalidity`: the mailbox is already selected on this
        store's connection (a watcher's), so no SELECT is sent. `prefetch`: opens (or gives) a second
        connection to the same account, used to search and fetch ahead over a whole mailbox of at
        least `search_ahead_min` messages (prefetch.py); called in the prefetch thread, if at all.
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
        runner = ActionRunner(
            store, account, mailbox, uidvalidity, self.options, self.journal, self.observers.entry
        )
        in_scope = [r for r in rules if r.applies_to(account.name, mailbox)]
        in_scope = self._answerable(in_scope, store, report)
        prepare_regexes(r.condition for r in in_scope)  # compiled before any message's clock runs
        ev = BoundedEvaluator(self.options.bounds, ctx, f"{account.name}/{mailbox}")
        p = _Pass(store, account, mailbox, ev, runner, report)
        if uids is not None:
            p.local = self._prefetch(store, in_scope, candidates, runner)
        elif (
            prefetch is not None
            and not self.options.dry_run
            and len(in_scope) > 1
            and len(candidates) >= self.search_ahead_min
        ):
            dialect = store.dialect

            def plan(rule: A.Rule) -> tuple[K.SearchKey, A.Condition | None, FetchNeeds]:
                found = self.matcher.plan(rule, dialect)
                return found.server, found.residual, union_needs(found.needs, runner.needs_for(rule))

            ahead = independent_rules(in_scope)
            p.ahead = Prefetcher(prefetch, mailbox, in_scope, ahead, candidates, plan, ev.judge_ahead)
        try:
            self._rules(p, in_scope, remaining, whole)
        finally:
            if p.ahead is not None:
                p.ahead.close()
                report.searched_ahead = p.ahead.opened
            report.skipped_for[EVALUATION_TIME] += len(ev.over_time)
            report.text_cut = len(ev.text_cut)
        report.retry = sorted(runner.retry_uids)
        self.observers.mailbox_done(report, time.monotonic() - started)
        return report

    @staticmethod
    def _answerable(rules: list[A.Rule], store: MailboxStore, report: MailboxReport) -> list[A.Rule]:
        """The rules this server can answer. One with a test only Gmail's search answers is refused
        on any other server: logged, and a failed rule in the report (language.md, Gmail)."""
        out = []
        for rule in rules:
            why = server_refusal(rule.condition, store.dialect)
            if why is None:
                out.append(rule)
                continue
            log.error(
                '%s: rule "%s": not run in %s/%s: %s',
                rule.span.short,
                rule.name,
                report.account,
                report.mailbox,
                why,
            )
            refused = RuleReport(rule.name, report.account, report.mailbox)
            refused.outcomes["rule failed"] += 1
            report.rules.append(refused)
        return out

    def _rules(self, p: _Pass, rules: Sequence[A.Rule], remaining: set[int], whole: bool) -> None:
        """Each rule in scope, in order, over the messages still in play."""
        account, mailbox = p.account.name, p.mailbox
        for pos, rule in enumerate(rules):
            if not remaining:
                break
            rule_started = time.monotonic()
            rr = RuleReport(rule.name, account, mailbox, candidates=len(remaining))
            p.report.rules.append(rr)
            found = self._match(p, rule, remaining, whole)
            remaining -= p.ev.over_time  # out of time: no later rule reads it in this pass
            p.report.skipped_messages += found.skipped
            rr.matched = len(found.matched)
            over = self._over_limit(rule, account, mailbox, rr.matched) if found.matched else None
            if p.ahead is not None:  # before the actions: the next rule is fetched while they run
                leaving = [u for u, _ in found.matched] if over is None and may_remove(rule) else []
                p.ahead.publish(pos, leaving)
            if over is not None:
                rr.limited = True
                log.warning(
                    '%s: rule "%s": %d messages match%s (%d in %s/%s), more than its limit %d: '
                    "nothing done (raise the limit, or run it by hand with --force)",
                    rule.span.short,
                    rule.name,
                    over,
                    " in this run" if self.limits is not None else "",
                    rr.matched,
                    account,
                    mailbox,
                    rule.limit,
                )
            elif found.matched:
                targets = [Target(uid, found.views[uid], m) for uid, m in found.matched]
                remaining -= p.runner.run_rule(rule, targets, p.ev.ctx, rr)
                whole = False
            self.observers.rule_done(rr, time.monotonic() - rule_started)
            if rr.outcomes:
                _log_rule(rr)

    def _over_limit(self, rule: A.Rule, account: str, mailbox: str, matched: int) -> int | None:
        """The total that exceeds the rule's `limit` (this pass, or the run's), or None to act."""
        if rule.limit is None or self.options.force:
            return None
        if self.limits is not None:
            return self.limits.decide(rule, account, mailbox, matched)
        return matched if matched > rule.limit else None

    # -- matching ----------------------------------------------------------------------------------

    def _match(self, p: _Pass, rule: A.Rule, remaining: set[int], whole: bool) -> Matches:
        """The rule's matches by one of the three paths (engine/matching.py does the work)."""
        view_of = p.runner.with_overlay
        if p.local is not None:  # a batch of arrivals, fetched once
            return self.matcher.match_views(rule, remaining, p.local, p.ev, view_of)
        needs = p.runner.needs_for(rule)
        done = p.ahead.result(rule) if p.ahead is not None else None
        if done is not None:  # searched, fetched and judged ahead, over the messages then in play
            hits = [u for u in done.hits if u in remaining]
            residual = self.matcher.plan(rule, p.store.dialect).residual
            found = self.matcher.evaluate(
                rule, residual, hits, done.views, p.ev, view_of=view_of, fresh=False, verdicts=done.verdicts
            )
            missing = remaining - done.covered if done.covered is not None else None
            if missing:  # expected to leave, but still here (an action failed): judged here, now
                own = self.matcher.match(
                    p.store, rule, missing, p.ev, whole=False, needs=needs, view_of=view_of
                )
                found = _merged(found, own)
            return found
        # A dry run changes no flags on the server, so a later rule that tests flags earlier
        # rules would have changed is evaluated locally, on the flags the run would have left.
        on_overlay = (
            self.options.dry_run
            and bool(p.runner.flag_overlay)
            and bool(tested_flags(rule.condition))
            and not server_only(rule.condition)  # only Gmail's search answers it: the server's flags
        )
        return self.matcher.match(
            p.store, rule, remaining, p.ev, whole=whole, needs=needs, local=on_overlay, view_of=view_of
        )

    def _prefetch(
        self, store: MailboxStore, rules: Sequence[A.Rule], uids: list[int], runner: ActionRunner
    ) -> dict[int, MessageView] | None:
        """For a small batch: one FETCH of what every rule needs, or None to search rule by rule."""
        if not uids or len(uids) > LOCAL_BATCH or not rules:
            return None
        needs = FetchNeeds(flags=True)
        for rule in rules:
            needs = union_needs(needs, union_needs(fetch_needs(rule.condition), runner.needs_for(rule)))
        if needs.body or any(server_only(rule.condition) for rule in rules):
            return None  # whole bodies (the server's BODY/TEXT moves fewer bytes), or Gmail's search
        return store.fetch_views(uids, needs)


def _merged(a: Matches, b: Matches) -> Matches:
    """Two rules' matches over disjoint messages as one, in UID order."""
    matched = sorted(a.matched + b.matched, key=lambda m: m[0])
    return Matches(matched, a.views | b.views, a.skipped + b.skipped)


def _log_rule(rr: RuleReport) -> None:
    """House style 10: one INFO line per rule and mailbox, with what its actions came to; the line
    per message and action is DEBUG (accounts.log_entry), and the journal keeps every one."""
    rules_log.info(
        'rule "%s" account=%s mailbox="%s": matched %d: %s',
        printable(rr.rule),
        rr.account,
        printable(rr.mailbox),
        rr.matched,
        ", ".join(f"{what} {n}" for what, n in rr.outcomes.items()),
        extra={"rule": rr.rule, "account": rr.account, "mailbox": rr.mailbox, "matched": rr.matched},
    )


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
