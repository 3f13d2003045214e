"""Plans in words: the SEARCH command as sent, the residual and what it fetches, for `mailrules explain`."""

from __future__ import annotations

from mailrules.compile.dialect import Dialect
from mailrules.compile.keys import SearchKey
from mailrules.compile.plan import FIELD_HEADERS, ConditionPlan, FetchNeeds
from mailrules.compile.serialize import needs_charset, render, search_arguments
from mailrules.dsl import ast as A

_OPS = {"contains": "contains", "is": "is", "starts_with": "starts with", "ends_with": "ends with"}
_FLAG_WORDS = {
    ("\\Seen", True): "seen", ("\\Seen", False): "unseen",
    ("\\Flagged", True): "flagged", ("\\Flagged", False): "not flagged",
    ("\\Answered", True): "answered", ("\\Answered", False): "not answered",
    ("\\Draft", True): "draft", ("\\Draft", False): "not draft",
    ("\\Deleted", True): "deleted", ("\\Deleted", False): "not deleted",
}
_UNITS = ((1024**3, "GB"), (1024**2, "MB"), (1024, "KB"))


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _size(n: int) -> str:
    for factor, unit in _UNITS:
        if n and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"


def condition_text(c: A.Condition) -> str:
    """The condition written back in the rule language (normalised spelling)."""
    if isinstance(c, A.And | A.Or):
        word = " and " if isinstance(c, A.And) else " or "
        parts = [f"({condition_text(i)})" if _needs_parens(c, i) else condition_text(i) for i in c.items]
        return word.join(parts)
    if isinstance(c, A.Not):
        inner = condition_text(c.item)
        return f"not ({inner})" if isinstance(c.item, A.And | A.Or) else f"not {inner}"
    if isinstance(c, A.All):
        return "all"
    if isinstance(c, A.StringTest):
        return f"{c.target} {_OPS[c.op]} {_quote(c.value)}"
    if isinstance(c, A.RegexTest):
        return f"{c.target} matches /{c.regex.pattern}/{c.regex.flags}"
    if isinstance(c, A.DomainTest):
        return f"{c.target} domain is {_quote(c.domain)}"
    if isinstance(c, A.HeaderExists):
        return f"header {_quote(c.header)} exists"
    if isinstance(c, A.SizeTest):
        return f"size {c.op} {_size(c.bytes)}"
    if isinstance(c, A.AgeTest):
        return f"{'older' if c.older else 'newer'} than {c.amount} {c.unit}"
    if isinstance(c, A.DateTest):
        return f"{c.which} {c.relation} {c.date.isoformat()}"
    if isinstance(c, A.FlagTest):
        return _FLAG_WORDS[(c.flag, c.present)]
    if isinstance(c, A.KeywordTest):
        return f"tagged {_quote(c.keyword)}"
    if isinstance(c, A.HasAttachment):
        return "has attachment"
    if isinstance(c, A.AttachmentNameTest):
        if c.op == "matches" and c.regex is not None:
            return f"attachment name matches /{c.regex.pattern}/{c.regex.flags}"
        return f"attachment name {_OPS.get(c.op, c.op)} {_quote(c.value or '')}"
    raise TypeError(f"not a condition: {c!r}")  # pragma: no cover


def _needs_parens(parent: A.And | A.Or, child: A.Condition) -> bool:
    # `not` binds tighter than `and`, which binds tighter than `or` (language.md §3).
    return isinstance(parent, A.And) and isinstance(child, A.Or)


def _source(c: A.Condition) -> str:
    """Where the client reads an atom's value from."""
    if isinstance(c, A.StringTest | A.RegexTest | A.DomainTest):
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
    if isinstance(cond, A.And | A.Or):
        word = " and " if isinstance(cond, A.And) else " or "
        return word.join(
            f"({explain_condition(i)})" if isinstance(i, A.Or | A.And) else explain_condition(i)
            for i in cond.items
        )
    if isinstance(cond, A.Not):
        inner = explain_condition(cond.item)
        return f"not ({inner})" if isinstance(cond.item, A.And | A.Or) else f"not {inner}"
    if isinstance(cond, A.All):
        return "all"
    return f"{condition_text(cond)} (checked on {_source(cond)})"


def format_key(key: SearchKey) -> str:
    """The SEARCH keys as text (literals shown as `{n}` + text)."""
    return render(search_arguments(key, charset=False))


def format_search(plan: ConditionPlan, dialect: Dialect) -> str:
    """The whole command as sent: `UID SEARCH [RETURN (ALL)] [CHARSET UTF-8] <keys>`.

    RETURN (ALL) when the dialect has ESEARCH, as the IMAP layer sends it (RFC 4731 §3.1).
    """
    charset = needs_charset(plan.server)
    pieces = search_arguments(plan.server, charset=charset, esearch=dialect.esearch)
    return "UID SEARCH " + render(pieces)


def format_needs(needs: FetchNeeds) -> str:
    """The FETCH items the residual needs, or `nothing`."""
    items = needs.fetch_items()
    return " ".join(items) if items else "nothing"


def explain_plan(plan: ConditionPlan, dialect: Dialect) -> str:
    """Three lines: the server command, the residual, and what is fetched for it."""
    return "\n".join((
        f"server:   {format_search(plan, dialect)}",
        f"residual: {explain_condition(plan.residual)}",
        f"fetch:    {format_needs(plan.needs)}",
    ))
