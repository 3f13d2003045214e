"""SEARCH and FETCH of later rules on a second connection while the first one acts.

Over a whole mailbox, most of a rule's server time is its SEARCH and FETCH, and neither depends
on what earlier rules did, except through flags: messages moved away are dropped by intersecting
with the messages still in play, headers never change. So the rules whose conditions test no flag
an earlier rule changes are searched and fetched ahead, in order, on another connection; the
first connection only acts. A failure there only means the engine searches that rule itself.

It pays only over a large mailbox (SEARCH_AHEAD_MIN_MESSAGES): on a small one the second
connection's searches of the mailbox as it was, and its fetches of messages earlier rules then
move away, cost the server and the client more than the overlap saves. The connection is opened
by the prefetch thread itself, so that the first rule does not wait for its login.
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
#: The second connection, opened when first asked for (in the prefetch thread); raises when it
#: cannot be had.
StoreOpener = Callable[[], MailboxStore]
#: A pass searches ahead only over a whole mailbox of at least this many messages (what `UID
#: SEARCH ALL` found). Measured (bench/README.md, issue 13): with the server on the same 2-core
#: host the second connection gained nothing at 5,000 and 10,000 messages and cost +20% client
#: instructions and +14-38% server CPU; at 20,000 it saved 15% of the wall time once the client's
#: own work was cut. `max_connections = 1` turns it off for an account (docs/configuration.md).
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


class Prefetcher:
    """Runs `plan(rule) -> (server key, needs)` searches and fetches ahead in a thread, on the
    store `open_store()` gives it there."""

    def __init__(
        self,
        open_store: StoreOpener,
        mailbox: str,
        rules: Sequence[A.Rule],
        plan: Callable[[A.Rule], tuple[K.SearchKey, FetchNeeds]],
    ) -> None:
        self._futures: dict[int, Future[Found]] = {id(r): Future() for r in rules}
        self._stop = threading.Event()
        #: the second store was had and the mailbox selected on it (read after `close`)
        self.opened = False
        self._thread = threading.Thread(
            target=self._work,
            args=(open_store, mailbox, list(rules), plan),
            name=f"prefetch:{mailbox}",
            daemon=True,
        )
        self._thread.start()

    def _work(
        self,
        open_store: StoreOpener,
        mailbox: str,
        rules: list[A.Rule],
        plan: Callable[[A.Rule], tuple[K.SearchKey, FetchNeeds]],
    ) -> None:
        try:
            store = open_store()
            store.select(mailbox)
        except Exception as exc:  # no second connection: the engine searches every rule itself
            for f in self._futures.values():
                f.set_exception(exc)
            return
        self.opened = True
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
