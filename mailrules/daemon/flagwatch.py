"""The flag pass of a watcher: `on flag change` rules run on what someone else changed.

`MailboxWatcher.catch_up` (daemon/watcher.py) calls `FlagWatch.look` each time it processes a
mailbox, under the mailbox's lock: after IDLE heard `* n FETCH (FLAGS ...)` (`FlagWatch.news`), on
each poll, after each reconnection, and when NOTIFY's watcher reports a FlagChange through the
same entry point. A look: `UID FETCH 1:* (UID FLAGS MODSEQ) (CHANGEDSINCE mark)` (imap/modseq.py),
the pure choice of what someone else changed (engine/flagpass.py), the flag-change rules on those
UIDs, then the new mark. The MODSEQs of our own STOREs reach the state through the sessions'
STORE listener (`imap.modseq.recording`, installed by the daemon and `mailrules run`). What each
look found, and the refusals, go to the `FlagObserver` (the daemon's daemon/flag_metrics.py).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

from mailrules.accounts import Account
from mailrules.bounds import Bounds
from mailrules.compile import keys as K
from mailrules.dsl import ast as A
from mailrules.dsl import unparse
from mailrules.engine.core import Engine
from mailrules.engine.flagpass import first_mark, flag_change_rules, look
from mailrules.engine.loops import LoopGuard
from mailrules.engine.ports import EngineObserver, RunOptions
from mailrules.errors import ImapError, MailrulesError, StateError
from mailrules.imap.commands import SelectInfo
from mailrules.imap.idle import has_new_mail
from mailrules.imap.modseq import changed_since, condstore_problem
from mailrules.imap.session import ImapSession
from mailrules.imap.store import ImapStore
from mailrules.state.interface import State
from mailrules.state.models import JournalEntry

log = logging.getLogger(__name__)


class FlagObserver(Protocol):
    """What the flag passes tell the metrics (daemon/flag_metrics.py `FlagMetrics`)."""

    def looked(self, account: str) -> None: ...
    def found(self, account: str, changed: int, own: int) -> None: ...
    def refused(self, account: str, key: Hashable, refused: bool) -> None: ...


class WatchSettings(Protocol):
    """What a flag pass reads of the daemon's WatchContext (daemon/watcher.py)."""

    @property
    def tz(self) -> dt.tzinfo: ...
    @property
    def rules(self) -> Callable[[], Sequence[A.Rule]]: ...
    @property
    def guard(self) -> LoopGuard | None: ...
    @property
    def observer(self) -> EngineObserver | None: ...
    @property
    def on_entry(self) -> Callable[[JournalEntry], None] | None: ...
    @property
    def run_id(self) -> str: ...
    @property
    def bounds(self) -> Bounds: ...
    @property
    def flag_observer(self) -> FlagObserver | None: ...


def flag_news(responses: list[tuple[Any, ...]]) -> bool:
    """An untagged `* n FETCH (FLAGS ...)`: someone changed a message's flags (RFC 9051 §7.5.2)."""
    return any(len(r) >= 3 and r[1] == b"FETCH" and b"FLAGS" in (r[2] or ()) for r in responses)


class FlagWatch:
    """The flag pass of one watcher (its account, the state it writes)."""

    def __init__(self, account: Account, ctx: WatchSettings, state: State) -> None:
        self.account = account
        self.ctx = ctx
        self.state = state
        #: mailbox -> why its flag-change rules are refused on this account (logged once each)
        self.refused: dict[str, str] = {}

    def rules(self, mailbox: str) -> list[A.Rule]:
        return flag_change_rules(self.ctx.rules(), self.account.name, mailbox)

    def news(self, responses: list[tuple[Any, ...]], mailbox: str) -> bool:
        """Whether what IDLE heard calls for a look: new mail, or a flag change where a flag-change
        rule reads."""
        return has_new_mail(responses) or (flag_news(responses) and bool(self.rules(mailbox)))

    def look(self, session: ImapSession, store: ImapStore, mailbox: str, info: SelectInfo) -> int:
        """Run the flag-change rules of `mailbox` (selected: `info`) on what someone else changed since
        the last look; return how many messages they ran on. Raises like the arrival pass."""
        rules = self.rules(mailbox)
        if not rules:
            self._clear(mailbox)  # a reload took the rules away: no refusal stands
            return 0
        name = self.account.name
        problem = condstore_problem(session, info.highestmodseq)
        if problem is not None or info.highestmodseq is None:
            self._refuse(mailbox, rules, problem or "no HIGHESTMODSEQ")
            return 0
        mark = self.state.get_flag_mark(name, mailbox)
        if mark is None or mark.uidvalidity != info.uidvalidity:
            highest = 0 if info.uidnext else max(store.search(K.UidFrom(1)), default=0)
            mark = first_mark(info.uidvalidity, info.highestmodseq, info.uidnext, highest)
            self.state.set_flag_mark(name, mailbox, mark)
            log.info(
                "%s/%s: flag changes from MODSEQ %d on (earlier ones are history)",
                name,
                mailbox,
                mark.highestmodseq,
            )
            return 0
        try:
            changed = changed_since(session, mark.highestmodseq)
        except ImapError as exc:
            if exc.ends_session:
                raise
            # A server that advertises CONDSTORE but refuses CHANGEDSINCE: the flag-change rules
            # stop here, the arrival rules of the mailbox go on (they run after this look).
            self._refuse(mailbox, rules, f"UID FETCH (CHANGEDSINCE) failed: {exc}")
            return 0
        self._clear(mailbox)  # logged again if it comes back
        self._tell(lambda o: o.looked(name))
        found = look(mark, {uid: c.modseq for uid, c in changed.items()})
        if found.own:
            log.debug("%s/%s: %d flag change(s) were our own", name, mailbox, found.own)
        if found.uids:
            log.info("%s/%s: flags changed on %d message(s)", name, mailbox, len(found.uids))
            self._run(store, mailbox, rules, found.uids, info.uidvalidity)
        self.state.set_flag_mark(name, mailbox, found.mark)
        self._tell(lambda o: o.found(name, len(found.uids), found.own))
        return len(found.uids)

    def close(self) -> None:
        """The watcher ends: its refusals no longer stand (another watcher may take them up)."""
        for mailbox in list(self.refused):
            self._clear(mailbox)

    def _run(
        self, store: ImapStore, mailbox: str, rules: list[A.Rule], uids: list[int], uidvalidity: int
    ) -> None:
        ctx = self.ctx
        options = RunOptions(dt.datetime.now(dt.UTC), ctx.tz, ctx.run_id, bounds=ctx.bounds)
        engine = Engine(options, journal=self.state, on_entry=ctx.on_entry, observer=ctx.observer)
        try:
            engine.process(
                store, self.account.context(ctx.guard), mailbox, rules, uids, uidvalidity=uidvalidity
            )
        except StateError:
            raise  # the mark stays: the journal cannot say what was done
        except MailrulesError as exc:
            if isinstance(exc, ImapError) and exc.ends_session:
                raise  # the mark stays: the same changes are looked at after reconnecting
            # The mark moves on: a change is acted on once (`mailrules run` applies the rules again).
            log.error(
                "%s/%s: flag changes of %d message(s) failed: %s", self.account.name, mailbox, len(uids), exc
            )

    def _refuse(self, mailbox: str, rules: list[A.Rule], why: str) -> None:
        if self.refused.get(mailbox) == why:
            return
        self.refused[mailbox] = why
        self._tell(lambda o: o.refused(self.account.name, (id(self), mailbox), True))
        names = ", ".join(f"{unparse.quote(r.name)} ({r.span})" for r in rules)
        log.error(
            "account %s: flag-change rule(s) %s refused for %s: %s; the account's other rules run",
            self.account.name,
            names,
            mailbox,
            why,
        )

    def _clear(self, mailbox: str) -> None:
        if self.refused.pop(mailbox, None) is not None:
            self._tell(lambda o: o.refused(self.account.name, (id(self), mailbox), False))

    def _tell(self, call: Callable[[FlagObserver], None]) -> None:
        """Observers never break the work (house style 13)."""
        observer = self.ctx.flag_observer
        if observer is None:
            return
        try:
            call(observer)
        except Exception:
            log.exception("account %s: flag-change metrics failed", self.account.name)
