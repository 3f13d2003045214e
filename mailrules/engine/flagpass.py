"""`on flag change` (language.md, "Flag changes"): which messages someone else changed since the
last look, and where the next look starts. Pure: daemon/flagwatch.py fetches, runs and stores.

A look asks the server for every message whose MODSEQ is above the mark's HIGHESTMODSEQ
(`CHANGEDSINCE`, RFC 7162 §3.1.4.1). Of those:
- a UID above the mark's `last_uid` arrived since the last look: an arrival, not a flag change;
- a message whose MODSEQ is no higher than the one our own latest STORE gave it (`mark.own`) last
  changed by our hand: not a flag change for anyone else (RFC 7162 §3.1.3: every change raises a
  message's MODSEQ, so someone else's change after ours shows as a higher one);
- every other one changed for someone else: the flag-change rules run on it.
The next mark is the highest MODSEQ and the highest UID seen (a message changed or arrived after
the FETCH has a higher MODSEQ and is seen by the next look).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mailrules.dsl import ast as A
from mailrules.state.models import FlagMark

#: (account, mailbox, UIDVALIDITY, {uid: MODSEQ}): remember what our own STOREs did (State).
OwnNote = Callable[[str, str, int, Mapping[int, int]], None]


@dataclass(frozen=True, slots=True)
class FlagLook:
    """The outcome of one look: the UIDs to run the flag-change rules on, in UID order, the mark to
    store once they ran, and how many changes were our own (skipped)."""

    uids: list[int]
    mark: FlagMark
    own: int = 0


def flag_change_rules(rules: Sequence[A.Rule], account: str, mailbox: str) -> list[A.Rule]:
    """The `on flag change` rules in scope for this account and mailbox, in order."""
    return [r for r in rules if isinstance(r.trigger, A.FlagChange) and r.applies_to(account, mailbox)]


def first_mark(uidvalidity: int, highestmodseq: int, uidnext: int | None, highest_uid: int) -> FlagMark:
    """The mark of a first look (or the first after a UIDVALIDITY change): where the mailbox stands;
    nothing runs (flags changed before are history, language.md)."""
    last = uidnext - 1 if uidnext else highest_uid
    return FlagMark(uidvalidity, highestmodseq, last)


def look(mark: FlagMark, changed: Mapping[int, int]) -> FlagLook:
    """The messages of `changed` (UID -> MODSEQ from `CHANGEDSINCE mark.highestmodseq`) that someone
    else changed, and the next mark (see the module docstring)."""
    uids: list[int] = []
    own = 0
    for uid in sorted(changed):
        if uid > mark.last_uid:
            continue  # an arrival
        if mark.own.get(uid, 0) >= changed[uid]:
            own += 1
            continue
        uids.append(uid)
    top = max([mark.highestmodseq, *changed.values()])
    last = max([mark.last_uid, *changed])
    return FlagLook(uids, FlagMark(mark.uidvalidity, top, last), own)


class OwnChanges:
    """The STORE listener of every session that may act on a mailbox a flag-change rule reads:
    remembers the MODSEQs our own STOREs gave there, and only there (elsewhere nobody would spend
    them). `rules`: the current rule set (a reload swaps it); `mark`: the state's flag marks, so that
    a mailbox looked at before (a flag-change rule removed by a reload, to come back later, or not
    among the rules of a `mailrules run --rule`) keeps them too; asked once per mailbox (a mark is
    never removed, and one is only made where a rule reads)."""

    def __init__(
        self,
        note: OwnNote,
        rules: Callable[[], Sequence[A.Rule]],
        mark: Callable[[str, str], FlagMark | None] | None = None,
    ) -> None:
        self._note = note
        self._rules = rules
        self._mark = mark
        self._marked: dict[tuple[str, str], bool] = {}

    def wanted(self, account: str, mailbox: str) -> bool:
        if flag_change_rules(self._rules(), account, mailbox):
            return True
        if self._mark is None:
            return False
        key = (account, mailbox)
        if key not in self._marked:
            self._marked[key] = self._mark(account, mailbox) is not None
        return self._marked[key]

    def __call__(self, account: str, mailbox: str, uidvalidity: int, changes: Mapping[int, int]) -> None:
        if changes and self.wanted(account, mailbox):
            self._note(account, mailbox, uidvalidity, changes)


class MarkedOwnChanges(OwnChanges):
    """The STORE listener of `mailrules run`, which may run a few of the rules (`--rule`): keeps the
    MODSEQs where the daemon has a flag mark; where it has none, its first look starts afresh."""

    def __init__(self, note: OwnNote, mark: Callable[[str, str], FlagMark | None]) -> None:
        super().__init__(note, lambda: (), mark)
