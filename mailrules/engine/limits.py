"""`limit N` over a whole run: language.md §2, "a run in which this rule would act on more than N
messages acts on none of them".

The engine works one mailbox (of one account) at a time, so a rule that looks at several mailboxes
or accounts would see only one pass's share of its matches. Before such a run, `precount` counts
each limited rule's matches in every pass the run will make, on the mailboxes as they are; during
the run, `LimitLedger.decide` judges each pass against the best total known at that moment: what
the rule already acted on, plus this pass's real matches (after the earlier rules), plus the
pre-counted matches of the passes still to come. A rule over its limit once is over it for the
rest of the run. A single-pass rule needs no pre-count: its one pass is the whole run.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from mailrules.bounds import DEFAULT_BOUNDS, Bounds
from mailrules.compile.refusal import server_refusal
from mailrules.dsl import ast as A
from mailrules.dsl.semantics import EvalContext, prepare_regexes
from mailrules.engine.evaluation import BoundedEvaluator
from mailrules.engine.matching import Matcher
from mailrules.engine.ports import MailboxStore
from mailrules.errors import ImapError, MailrulesError

log = logging.getLogger(__name__)

Pass = tuple[str, str]  # (account, mailbox)


@dataclass
class LimitLedger:
    """One run's accounting of the `limit` of each rule, across mailboxes and accounts."""

    pending: dict[str, dict[Pass, int]] = field(default_factory=dict)  # pre-counts of passes to come
    acted: dict[str, int] = field(default_factory=dict)
    over: dict[str, int] = field(default_factory=dict)  # rules found over their limit: the total

    def decide(self, rule: A.Rule, account: str, mailbox: str, matched: int) -> int | None:
        """None: the rule may act on this pass's `matched`; else the run total that exceeds its limit."""
        assert rule.limit is not None
        if rule.name in self.over:
            return self.over[rule.name]
        to_come = self.pending.get(rule.name, {})
        to_come.pop((account, mailbox), None)  # this pass is counted for real now
        total = self.acted.get(rule.name, 0) + matched + sum(to_come.values())
        if total > rule.limit:
            self.over[rule.name] = total
            return total
        self.acted[rule.name] = self.acted.get(rule.name, 0) + matched
        return None


def multi_pass_rules(rules: Sequence[A.Rule], passes: dict[str, list[Pass]]) -> list[A.Rule]:
    """The limited rules that the run looks at in more than one (account, mailbox) pass."""
    return [r for r in rules if r.limit is not None and len(passes.get(r.name, ())) > 1]


def count_matches(
    store: MailboxStore,
    mailbox: str,
    rules: Sequence[A.Rule],
    now: dt.datetime,
    tz: dt.tzinfo,
    *,
    bounds: Bounds = DEFAULT_BOUNDS,
) -> dict[str, int]:
    """How many messages of `mailbox` each rule matches now, each rule on its own (no action).

    The engine's own path (engine/matching.py: plan, SEARCH, FETCH, residual within `bounds`), so
    the count is what the pass will find; quietly: a broken, vanished or over-time message is not
    counted and is logged at DEBUG only, since the pass that follows reports it.
    """
    store.select(mailbox)
    ctx = EvalContext(now, tz, store.separator or "/")
    matcher = Matcher(now, tz)
    ev = BoundedEvaluator(bounds, ctx, mailbox, quiet=True)
    prepare_regexes(r.condition for r in rules)
    # a rule this server cannot answer (Gmail's search elsewhere) is refused by the pass: no count
    answerable = [r for r in rules if server_refusal(r.condition, store.dialect) is None]
    return {rule.name: len(matcher.match(store, rule, None, ev).matched) for rule in answerable}


def precount(
    accounts: Sequence[str],
    rules: Sequence[A.Rule],
    now: dt.datetime,
    tz: dt.tzinfo,
    ledger: LimitLedger,
    open_account: Callable[[str], AbstractContextManager[MailboxStore]],
    *,
    bounds: Bounds = DEFAULT_BOUNDS,
) -> None:
    """Fill `ledger.pending` for each limited rule the run looks at in more than one pass.

    `open_account(name)` gives a store on a connection of its own for the time of the count;
    `bounds`: the run's `[limits]` on one message's evaluation. An account or mailbox that cannot
    be counted is logged; its passes are then judged as they come.
    """
    passes: dict[str, list[Pass]] = {}
    for name in accounts:
        for rule in rules:
            if rule.limit is not None and (not rule.accounts or name in rule.accounts):
                passes.setdefault(rule.name, []).extend((name, m) for m in rule.mailboxes)
    limited = multi_pass_rules(rules, passes)
    for name in accounts:
        mine = [r for r in limited if not r.accounts or name in r.accounts]
        if not mine:
            continue
        try:
            with open_account(name) as store:
                for mailbox in dict.fromkeys(m for r in mine for m in r.mailboxes):
                    here = [r for r in mine if mailbox in r.mailboxes]
                    try:
                        counts = count_matches(store, mailbox, here, now, tz, bounds=bounds)
                    except ImapError as exc:
                        if exc.ends_session:
                            raise
                        log.warning("%s/%s: matches not counted for `limit`: %s", name, mailbox, exc)
                        continue
                    for rule_name, n in counts.items():
                        ledger.pending.setdefault(rule_name, {})[(name, mailbox)] = n
        except MailrulesError as exc:
            log.warning(
                "account %s: matches not counted for `limit` (its passes count as they come): %s", name, exc
            )
