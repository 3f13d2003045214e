"""The one path from a rule to its matches: plan -> SEARCH -> FETCH -> residual, and its local twin.

Used by the engine's passes (engine/core.py) and by `limit`'s pre-count (engine/limits.py), so a
count is the engine's own reading of the mailbox, within the same `[limits]` bounds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from mailrules.compile import keys as K
from mailrules.compile.dialect import Dialect
from mailrules.compile.needs import FetchNeeds, fetch_needs
from mailrules.compile.plan import plan_condition
from mailrules.compile.serialize import compress_uids
from mailrules.dsl import ast as A
from mailrules.dsl.semantics import Match
from mailrules.engine.evaluation import BoundedEvaluator
from mailrules.engine.ports import MailboxStore
from mailrules.engine.targets import union_needs
from mailrules.message.view import MessageView

__all__ = ["UID_SET_LIMIT", "Matcher", "Matches", "Plan", "Verdict", "ViewOf"]

#: Above this many bytes of compressed UID set, search the whole mailbox and intersect locally.
UID_SET_LIMIT = 4000

#: (uid, fetched view, fetched now?) -> the view as this pass left the message (its flags)
ViewOf = Callable[[int, MessageView, bool], MessageView]
#: A residual judged ahead of its rule's turn, on another thread: the match, and the seconds the
#: evaluation took (charged to the message at the rule's turn, `BoundedEvaluator.accept`)
Verdict = tuple[Match, float]


@dataclass(frozen=True, slots=True)
class Plan:
    """A rule's condition for one dialect: the server's superset, the exact rest, what to fetch."""

    server: K.SearchKey
    residual: A.Condition | None
    needs: FetchNeeds


@dataclass(slots=True)
class Matches:
    """A rule's matches among the messages asked about: (uid, match) in UID order, the views
    they were judged on (read by the actions), and how many messages were skipped (vanished,
    broken, out of time: `BoundedEvaluator` logged them)."""

    matched: list[tuple[int, Match]]
    views: dict[int, MessageView]
    skipped: int = 0


def _as_fetched(uid: int, view: MessageView, fresh: bool) -> MessageView:
    return view


class Matcher:
    """Finds rules' matches in the selected mailbox of a store; plans are made once per dialect."""

    def __init__(self, now: dt.datetime, tz: dt.tzinfo) -> None:
        self.now = now
        self.tz = tz
        self._plans: dict[tuple[int, Dialect], Plan] = {}

    def plan(self, rule: A.Rule, dialect: Dialect) -> Plan:
        """The rule's plan for `dialect` (cached by rule identity)."""
        key = (id(rule), dialect)
        plan = self._plans.get(key)
        if plan is None:
            p = plan_condition(rule.condition, dialect, self.now, self.tz)
            plan = self._plans[key] = Plan(p.server, p.residual, p.needs)
        return plan

    def match(
        self,
        store: MailboxStore,
        rule: A.Rule,
        remaining: set[int] | None,
        ev: BoundedEvaluator,
        *,
        whole: bool = True,
        needs: FetchNeeds | None = None,
        local: bool = False,
        view_of: ViewOf = _as_fetched,
    ) -> Matches:
        """SEARCH the server's part, FETCH what the residual (and `needs`) read, evaluate it.

        `remaining`: the messages still in play (None: every message the search finds); `whole`:
        they are the whole mailbox, so no UID set goes with the search. `needs`: what the caller
        reads from the matched views (None: no views wanted when the server's answer is exact,
        as for a count). `local`: the server is not
        asked to judge anything (ALL, the whole condition locally: a dry run's flags differ from
        the server's). `view_of` gives the flags this pass left each message.
        """
        if local:
            plan = Plan(K.All(), rule.condition, fetch_needs(rule.condition))
        else:
            plan = self.plan(rule, store.dialect)
        hits = self.search(store, plan.server, remaining, whole)
        if not hits:
            return Matches([], {})
        if plan.residual is None and needs is None:  # the server's answer is exact: nothing to read
            return Matches([(uid, Match(True)) for uid in hits], {})
        wanted = plan.needs if needs is None else union_needs(plan.needs, needs)
        views = store.fetch_views(hits, wanted)
        return self.evaluate(rule, plan.residual, hits, views, ev, view_of=view_of, fresh=True)

    def evaluate(
        self,
        rule: A.Rule,
        residual: A.Condition | None,
        hits: list[int],
        views: dict[int, MessageView],
        ev: BoundedEvaluator,
        *,
        view_of: ViewOf = _as_fetched,
        fresh: bool,
        verdicts: dict[int, Verdict] | None = None,
    ) -> Matches:
        """The residual on each hit's view; `fresh`: fetched now, else before earlier rules acted.
        `verdicts`: the residual already judged on another thread (engine/prefetch.py), taken
        where the message's evaluation time allows it, else judged again here."""
        out = Matches([], views)
        for uid in hits:
            view = views.get(uid)
            if view is None:  # expunged by someone else meanwhile (RFC 9051 §6.4.9)
                ev.vanished(rule, uid)
                out.skipped += 1
                continue
            view = views[uid] = view_of(uid, view, fresh)
            if residual is None:
                out.matched.append((uid, Match(True)))
                continue
            verdict = verdicts.get(uid) if verdicts else None
            if verdict is not None and ev.accept(uid, view, verdict[1]):
                m: Match | None = verdict[0]
            else:
                m = ev.evaluate(rule, residual, view, uid)
            if m is None:
                out.skipped += 1
            elif m.ok:
                out.matched.append((uid, m))
        return out

    @staticmethod
    def match_views(
        rule: A.Rule,
        remaining: set[int],
        views: dict[int, MessageView],
        ev: BoundedEvaluator,
        view_of: ViewOf = _as_fetched,
    ) -> Matches:
        """The per-message reading itself, on views fetched once for the whole batch (arrivals),
        with the flags earlier rules left. A vanished or broken message is reported once per
        pass, not once per rule: it leaves `remaining`."""
        out = Matches([], {})
        for uid in sorted(remaining):
            view = views.get(uid)
            if view is None:
                out.skipped += 1  # expunged by someone else meanwhile
                continue
            view = out.views[uid] = view_of(uid, view, False)
            m = ev.evaluate(rule, rule.condition, view, uid)
            if m is None:
                out.skipped += 1
            elif m.ok:
                out.matched.append((uid, m))
        if out.skipped:
            remaining.difference_update({u for u in remaining if u not in out.views})
        return out

    @staticmethod
    def search(
        store: MailboxStore, server: K.SearchKey, remaining: set[int] | None, whole: bool
    ) -> list[int]:
        """The UIDs in `remaining` (None: any) that satisfy `server`; the UID set goes with the
        key unless the messages are the whole mailbox or the set would be too long."""
        if remaining is None:
            return store.search(server)
        if not whole:
            uid_set = compress_uids(sorted(remaining))
            if sum(len(s) + 1 for s in uid_set) <= UID_SET_LIMIT:
                server = K.and_(K.Uid(frozenset(remaining)), server)
        return [u for u in store.search(server) if u in remaining]
