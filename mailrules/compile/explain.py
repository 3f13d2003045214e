"""Plans in words: the SEARCH command as sent, the residual and what it fetches, for `mailrules explain`."""

from __future__ import annotations

from mailrules.compile.dialect import Dialect
from mailrules.compile.keys import SearchKey
from mailrules.compile.needs import FIELD_HEADERS, FetchNeeds
from mailrules.compile.plan import ConditionPlan
from mailrules.compile.serialize import needs_charset, render, search_arguments
from mailrules.dsl import ast as A
from mailrules.dsl import unparse
from mailrules.dsl.walk import Atom


def _source(c: Atom) -> str:
    """Where the client reads an atom's value from."""
    if isinstance(c, A.StringTest | A.RegexTest | A.DomainTest | A.AddressPartTest):
        t = c.target
        if t.header is not None:
            return f"the fetched {t.header} header"
        if t.field in ("body", "text"):
            return "the fetched message" if t.field == "text" else "the fetched message body"
        heads = FIELD_HEADERS[str(t.field)]
        if len(heads) == 1:
            return f"the fetched {heads[0]} header"
        return f"the fetched {', '.join(heads[:-1])} and {heads[-1]} headers"
    if isinstance(c, A.HeaderExists):
        return f"the fetched {c.header} header"
    if isinstance(c, A.HasAttachment | A.AttachmentNameTest):
        return "the fetched BODYSTRUCTURE"
    if isinstance(c, A.DateTest):
        return "the fetched Date header" if c.which == "sent" else "the fetched INTERNALDATE"
    if isinstance(c, A.AgeTest):
        return "the fetched INTERNALDATE"
    if isinstance(c, A.SizeTest):
        return "the fetched RFC822.SIZE"
    return "the fetched FLAGS"


def explain_condition(cond: A.Condition | None) -> str:
    """The residual in words: each test with where it is checked, e.g.
    `from matches /x@y/ (checked on the fetched From header)`."""
    if cond is None:
        return "nothing (the server's answer is exact)"
    return unparse.condition(cond, _checked)


def _checked(atom: Atom) -> str:
    """A residual test as written, and where the client reads it."""
    if isinstance(atom, A.All):
        return "all"
    return f"{unparse.atom(atom)} (checked on {_source(atom)})"


def format_key(key: SearchKey) -> str:
    """The SEARCH keys as text (literals shown as `{n}` + text)."""
    return render(search_arguments(key, charset=False, describe=True))


def format_search(plan: ConditionPlan, dialect: Dialect) -> str:
    """The whole command as sent: `UID SEARCH [RETURN (ALL)] [CHARSET UTF-8] <keys>`.

    RETURN (ALL) when the dialect has ESEARCH, as the IMAP layer sends it (RFC 4731 §3.1).
    """
    charset = needs_charset(plan.server)
    pieces = search_arguments(plan.server, charset=charset, esearch=dialect.esearch, describe=True)
    return "UID SEARCH " + render(pieces)


def format_needs(needs: FetchNeeds) -> str:
    """The FETCH items the residual needs, or `nothing`."""
    items = needs.fetch_items()
    return " ".join(items) if items else "nothing"


def explain_plan(plan: ConditionPlan, dialect: Dialect) -> str:
    """Three lines: the server command, the residual, and what is fetched for it."""
    return "\n".join(
        (
            f"server:   {format_search(plan, dialect)}",
            f"residual: {explain_condition(plan.residual)}",
            f"fetch:    {format_needs(plan.needs)}",
        )
    )
