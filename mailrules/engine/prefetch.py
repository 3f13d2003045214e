"""SEARCH, FETCH and the residual of later rules on a second connection while the first one acts.

Over a whole mailbox, most of a rule's server time is its SEARCH and FETCH, and neither depends
on what earlier rules did, except through flags and through the messages they take away. So the
rules whose conditions test no flag an earlier rule changes (`independent_rules`) are searched,
fetched and judged (their residual condition evaluated) on another connection and thread, one
rule ahead of the first connection: the first one only acts, and the second one's work on rule
k+1 (its server's time, the answer's parsing, the residual's Python) overlaps rule k's actions.

A rule is taken up there as soon as every earlier rule that can take messages away has been
matched on the first connection (`Prefetcher.publish`, called before the rule's actions run): its
SEARCH and FETCH then cover only the messages still expected in play (the UID set goes with the
search when it is short, as on the first connection), not the messages earlier rules are moving
away. What it did not cover (a message whose move failed and so stayed) is searched and fetched
by the first connection at the rule's turn; a failure on the second connection only means the
engine does that rule itself. Rules that only flag, tag, copy or forward set no such barrier: the
rules after them are taken up at once. While a rule's fetch waits for its barrier, the next rules
are searched, over the mailbox as it is then (a header's first search is the server's slowest
command: waiting for it one rule deep kept the first connection idle); their hits are filtered
by what is expected in play when they are fetched.

It pays only over a large mailbox (SEARCH_AHEAD_MIN_MESSAGES). The connection is opened by the
prefetch thread itself, so that the first rule does not wait for its login.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from mailrules.compile import keys as K
from mailrules.compile.needs import FetchNeeds
from mailrules.dsl import ast as A
from mailrules.dsl.walk import atoms
from mailrules.engine.matching import Matcher, Verdict
from mailrules.engine.ports import MailboxStore
from mailrules.message.view import MessageView

log = logging.getLogger(__name__)

#: rule -> its server key, its residual condition (None: the server's answer is exact) and what
#: to fetch for it (the residual's needs and the actions')
Planner = Callable[[A.Rule], tuple[K.SearchKey, A.Condition | None, FetchNeeds]]
#: (residual, view, uid) -> the residual's verdict judged ahead, or None: judge it at its turn
#: (`BoundedEvaluator.judge_ahead`)
Judge = Callable[[A.Condition, MessageView, int], Verdict | None]
#: The second connection, opened when first asked for (in the prefetch thread); raises when it
#: cannot be had.
StoreOpener = Callable[[], MailboxStore]
#: A pass searches ahead only over a whole mailbox of at least this many messages (what `UID
#: SEARCH ALL` found). Measured (bench/README.md, issue 13): with the server on the same 2-core
#: host the second connection gained nothing at 5,000 and 10,000 messages and cost +20% client
#: instructions and +14-38% server CPU; at 20,000 it saved 15% of the wall time once the client's
#: own work was cut. Once it fetched only what is still in play (session 19, callgrind) it cost the
#: client +0.08 G instructions at 5,000 and ~+0.3 G at 10,000-20,000 over one connection, and
#: Dovecot ~30% more CPU; its wall time at 5,000 is for a quiet run to decide.
#: `max_connections = 1` turns it off for an account (docs/configuration.md).
SEARCH_AHEAD_MIN_MESSAGES = 10_000
#: What `changed_flags` says of a tag whose name comes from a template: it may be any keyword.
ANY_KEYWORD = "*"


def tested_flags(cond: A.Condition) -> set[str]:
    """The flags and keywords a condition looks at (case-folded)."""
    out: set[str] = set()
    for atom in atoms(cond):
        if isinstance(atom, A.FlagTest):
            out.add(atom.flag.casefold())
        elif isinstance(atom, A.KeywordTest | A.ThreadTagged):  # `thread tagged`: any message's
            out.add(atom.keyword.casefold())
    return out


def changed_flags(rule: A.Rule) -> set[str]:
    """The flags and keywords a rule's actions set or clear (case-folded)."""
    out = set()
    for a in rule.actions:
        if isinstance(a, A.SetFlag):
            # `mark important` sets Gmail's \Important label or the keyword $Important (RFC 8457)
            out |= {"\\important", "$important"} if a.flag == "\\Important" else {a.flag.casefold()}
        elif isinstance(a, A.Tag):
            # a name from a template (`tag "lists/{list}"`) may be any keyword: ANY_KEYWORD
            out.add(ANY_KEYWORD if a.template is not None else a.keyword.casefold())
    return out


def independent_rules(rules: Sequence[A.Rule]) -> list[A.Rule]:
    """The rules whose matches on the mailbox as it was are their matches when their turn comes
    (intersected with the messages still in play): no earlier rule changes a flag they test."""
    changed: set[str] = set()
    out = []
    for rule in rules:
        tested = tested_flags(rule.condition)
        # a templated tag never renders a system flag (`\` becomes `_`): only keywords depend on it
        if not tested & changed and not (ANY_KEYWORD in changed and any(f[:1] != "\\" for f in tested)):
            out.append(rule)
        changed |= changed_flags(rule)
    return out


def may_remove(rule: A.Rule) -> bool:
    """Whether the rule's matches can leave the messages in play (a removing action, or `stop`)."""
    return any(isinstance(a, (*A.REMOVING_ACTIONS, A.Stop)) for a in rule.actions)


@dataclass(slots=True)
class Ahead:
    """One rule's work on the second connection: `hits` (UID order) among `covered`, the messages
    expected in play when it was taken up (None: every message of the pass), their `views`, and
    the residual's `verdicts` where it could be judged there."""

    covered: set[int] | None
    hits: list[int]
    views: dict[int, MessageView]
    verdicts: dict[int, Verdict]


class Prefetcher:
    """Searches, fetches and judges `rules` ahead in a thread, on the store `open_store()` gives
    it there, each once the first connection has matched every earlier rule that can take
    messages away (`publish`)."""

    def __init__(
        self,
        open_store: StoreOpener,
        mailbox: str,
        rules: Sequence[A.Rule],
        ahead: Sequence[A.Rule],
        candidates: Iterable[int],
        plan: Planner,
        judge: Judge,
    ) -> None:
        """`rules`: the pass's rules in order; `ahead`: those of them to do ahead (in the same
        order); `candidates`: the messages of the pass."""
        self._futures: dict[int, Future[Ahead]] = {id(r): Future() for r in ahead}
        self._candidates = set(candidates)
        #: messages the first connection expects to have left the pass (matched by a rule that
        #: removes), and the position of the last rule it matched
        self._gone: set[int] = set()
        self._published = -1
        self._cond = threading.Condition()
        self._stop = False
        #: per rule done ahead, the position in `rules` of the last earlier rule that may remove
        #: messages (-1: none), which must be matched before it is taken up
        self._order: list[tuple[A.Rule, int]] = []
        barrier = -1
        wanted = {id(r) for r in ahead}
        for pos, rule in enumerate(rules):
            if id(rule) in wanted:
                self._order.append((rule, barrier))
            if may_remove(rule):
                barrier = pos
        #: the second store was had and the mailbox selected on it (read after `close`)
        self.opened = False
        self._thread = threading.Thread(
            target=self._work,
            args=(open_store, mailbox, plan, judge),
            name=f"prefetch:{mailbox}",
            daemon=True,
        )
        self._thread.start()

    def _work(self, open_store: StoreOpener, mailbox: str, plan: Planner, judge: Judge) -> None:
        try:
            store = open_store()
            store.select(mailbox)
        except Exception as exc:  # no second connection: the engine searches every rule itself
            for f in self._futures.values():
                f.set_exception(exc)
            return
        self.opened = True
        try:
            self._rules(store, plan, judge)
        finally:  # whatever ended the thread, no rule's turn waits for it: the engine does them
            for f in self._futures.values():
                if not f.done():
                    f.set_exception(RuntimeError("the search-ahead thread ended"))

    def _rules(self, store: MailboxStore, plan: Planner, judge: Judge) -> None:
        early: dict[int, list[int]] = {}  # rules searched before they could be fetched: their hits
        searched = 0  # the rules of `_order` before this one are searched (or done)
        for i, (rule, barrier) in enumerate(self._order):
            searched = max(searched, i)
            while True:
                going, ready, covered = self._wait(barrier, searched < len(self._order))
                if not going:
                    for later, _ in self._order[i:]:
                        self._futures[id(later)].cancel()
                    return
                if ready:
                    break
                # Its fetch must wait for the first connection: search a later rule meanwhile,
                # over the mailbox as it is now (its first searches of a header are the server's
                # slowest commands; done here they overlap the first connection's work).
                try:
                    early[searched] = Matcher.search(
                        store, plan(self._order[searched][0])[0], self._candidates, True
                    )
                except Exception as exc:  # searched again when it can be fetched
                    log.debug("search ahead of rule %r failed: %s", self._order[searched][0].name, exc)
                searched += 1
            future = self._futures[id(rule)]
            try:
                future.set_result(self._one(store, rule, covered, early.pop(i, None), plan, judge))
            except Exception as exc:  # the engine searches this rule itself
                log.debug("prefetch of rule %r failed: %s", rule.name, exc)
                future.set_exception(exc)

    def _wait(self, barrier: int, more: bool) -> tuple[bool, bool, set[int] | None]:
        """(going, ready, covered): wait until the rule at `barrier` is matched (ready), or, when
        `more` rules can be searched meanwhile, only until the first connection published up to
        now; going is False when the pass is over; covered is the messages expected in play
        (None: all of them still)."""
        with self._cond:
            while self._published < barrier and not self._stop and not more:
                self._cond.wait()
            if self._stop:
                return False, False, None
            if self._published < barrier:
                return True, False, None
            return True, True, (self._candidates - self._gone if self._gone else None)

    def _one(
        self,
        store: MailboxStore,
        rule: A.Rule,
        covered: set[int] | None,
        early: list[int] | None,
        plan: Planner,
        judge: Judge,
    ) -> Ahead:
        """The rule's hits among `covered` (searched now, or `early`), fetched and judged."""
        if covered is not None and not covered:  # every message is expected to have left
            return Ahead(covered, [], {}, {})
        server, residual, needs = plan(rule)
        if early is not None:
            hits = early if covered is None else [u for u in early if u in covered]
        else:  # over the messages expected in play only: the UID set goes with the search when short
            within = self._candidates if covered is None else covered
            hits = Matcher.search(store, server, within, whole=covered is None)
        views = store.fetch_views(hits, needs) if hits else {}
        verdicts: dict[int, Verdict] = {}
        if residual is not None:
            for uid in hits:
                view = views.get(uid)
                if self._stop:
                    break  # the rest would be judged for nothing
                if view is not None and (verdict := judge(residual, view, uid)) is not None:
                    verdicts[uid] = verdict
        return Ahead(covered, hits, views, verdicts)

    def publish(self, pos: int, leaving: Iterable[int]) -> None:
        """The first connection has matched the rule at `pos`; `leaving`: the messages it expects
        that rule's actions to take away (they are not fetched for later rules)."""
        with self._cond:
            self._gone.update(leaving)
            self._published = pos
            self._cond.notify()

    def result(self, rule: A.Rule) -> Ahead | None:
        """The rule's work done ahead, or None (not done ahead, or failed)."""
        future = self._futures.get(id(rule))
        if future is None:
            return None
        try:
            return future.result()
        except Exception:
            return None

    def close(self) -> None:
        """Stop working ahead (results not yet taken are dropped) and wait for the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join()
