"""What the action runner works on: matched messages, actions as the journal spells them, fetch needs."""

from __future__ import annotations

from dataclasses import dataclass

from mailrules.compile.needs import FetchNeeds
from mailrules.dsl import ast as A
from mailrules.dsl.semantics import Match
from mailrules.message.view import MessageView


@dataclass(frozen=True, slots=True)
class Target:
    """A matched message: its UID, its decoded view, and the match (captures for templates)."""

    uid: int
    view: MessageView
    match: Match


def union_needs(a: FetchNeeds, b: FetchNeeds) -> FetchNeeds:
    """Everything either needs fetched."""
    return FetchNeeds(
        a.headers | b.headers,
        a.body or b.body,
        a.bodystructure or b.bodystructure,
        a.internaldate or b.internaldate,
        a.size or b.size,
        a.flags or b.flags,
    )


def action_word(action: A.Action) -> tuple[str, str]:
    """(action as the language spells it, detail: flag, keyword or address)."""
    match action:
        case A.Move():
            return "move", ""
        case A.Copy():
            return "copy", ""
        case A.Archive():
            return "archive", ""
        case A.Delete(permanently=True):
            return "delete permanently", ""
        case A.Delete():
            return "delete", ""
        case A.SetFlag(flag="\\Seen", on=on):
            return ("mark read" if on else "mark unread"), "\\Seen"
        case A.SetFlag(flag="\\Important", on=on):
            return ("mark important" if on else "mark not important"), "\\Important"
        case A.SetFlag(on=on):
            return ("flag" if on else "unflag"), "\\Flagged"
        case A.Tag(keyword=k, on=on):
            return ("tag" if on else "untag"), k
        case A.Forward(address=a):
            return "forward", a
        case A.Redirect(address=a):
            return "redirect", a
        case A.Stop():
            return "stop", ""
    raise AssertionError(action)


def needs_of_template(t: A.Template | None) -> FetchNeeds:
    """What a mailbox template reads from the message (headers, INTERNALDATE)."""
    if t is None:
        return FetchNeeds()
    headers: set[str] = set()
    internaldate = False
    for p in t.parts:
        if isinstance(p, A.Placeholder):
            if p.name in ("year", "month", "day"):
                internaldate = True
                headers.add("Date")
            elif p.name == "from.domain":
                headers.add("From")
            elif p.name == "list":
                headers.add("List-Id")
    return FetchNeeds(headers=frozenset(headers), internaldate=internaldate)
