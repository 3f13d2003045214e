"""SEARCH and FETCH of later rules on a second connection while the first one acts.

Over a whole mailbox, most of a rule's server time is its SEARCH and FETCH, and neither depends
on what earlier rules did, except through flags: messages moved away are dropped by intersecting
with the messages still in play, headers never change. So the rules whose conditions test no flag
an earlier rule changes are searched and fetched ahead, in order, on another connection; the
first connection only acts. A failure there only means the engine searches that rule itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from mailrules.compile import keys as K
from mailrules.compile.needs import FetchNeeds
from mailrules.dsl import ast as A
from mailrules.dsl.walk import atoms
from mailrules.engine.ports import MailboxStore
from mailrules.message.view import MessageView

log = logging.getLogger(__name__)

Found = tuple[list[int], dict[int, MessageView]]
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


class Prefetcher:
    """Runs `plan(rule) -> (server key, needs)` searches and fetches ahead on `store` in a thread."""

    def __init__(
        self,
        store: MailboxStore,
        mailbox: str,
        rules: Sequence[A.Rule],
        plan: Callable[[A.Rule], tuple[K.SearchKey, FetchNeeds]],
    ) -> None:
        self._futures: dict[int, Future[Found]] = {id(r): Future() for r in rules}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._work,
            args=(store, mailbox, list(rules), plan),
            name=f"prefetch:{mailbox}",
            daemon=True,
        )
        self._thread.start()

    def _work(
        self,
        store: MailboxStore,
        mailbox: str,
        rules: list[A.Rule],
        plan: Callable[[A.Rule], tuple[K.SearchKey, FetchNeeds]],
    ) -> None:
        try:
            store.select(mailbox)
        except Exception as exc:
            for f in self._futures.values():
                f.set_exception(exc)
            return
        for rule in rules:
            future = self._futures[id(rule)]
            if self._stop.is_set():
                future.cancel()
                continue
            try:
                server, needs = plan(rule)
                hits = store.search(server)
                views = store.fetch_views(hits, needs) if hits else {}
                future.set_result((hits, views))
            except Exception as exc:  # the engine searches this rule itself
                log.debug("prefetch of rule %r failed: %s", rule.name, exc)
                future.set_exception(exc)

    def result(self, rule: A.Rule) -> Found | None:
        """The rule's hits and views on the mailbox as it was, or None (not prefetched, or failed)."""
        future = self._futures.get(id(rule))
        if future is None:
            return None
        try:
            return future.result()
        except Exception:
            return None

    def close(self) -> None:
        """Stop fetching ahead (results not yet taken are dropped) and wait for the thread."""
        self._stop.set()
        self._thread.join()
