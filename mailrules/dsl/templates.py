"""Templates rendered for one message: mailbox names and tag names, placeholders, filters, sanitizing."""

from __future__ import annotations

import datetime as dt
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from mailrules.dsl.ast import GmailFacts, Placeholder, Template, TemplateText, ThreadFacts
from mailrules.dsl.lexemes import keyword_problem, label_problem
from mailrules.errors import MailrulesError
from mailrules.message.view import MessageView

__all__ = [
    "MAX_VALUE_CHARS",
    "EvalContext",
    "TemplateError",
    "domain_of",
    "gmail_label_refusal",
    "important_flag",
    "in_zone",
    "render_tag",
    "render_template",
    "sanitize_tag_value",
    "sanitize_value",
]

log = logging.getLogger(__name__)

#: A substituted value longer than this is cut (a 1 MB Subject must not become a mailbox name).
MAX_VALUE_CHARS = 100
#: What an IMAP keyword cannot hold (RFC 9051 §9 atom-specials and space), `\` included.
_KEYWORD_SPECIALS = frozenset('(){ %*"\\]')


class TemplateError(MailrulesError):
    """A template cannot be rendered for this message (a placeholder has no value, or the tag it
    gives is no name the server takes)."""


@dataclass(frozen=True, slots=True)
class EvalContext:
    """The clock and place of an evaluation: `now` (aware), the time zone of calendar days, the
    account's IMAP hierarchy separator, whether tags are Gmail labels there, and (in a test
    block) what Gmail's search answers for the message."""

    now: dt.datetime
    tz: dt.tzinfo
    separator: str = "/"
    labels: bool = False
    #: What a test block declares Gmail's search finds (`given ... gmail ...`); None: not known
    gmail: GmailFacts | None = None
    #: What a test block declares the message's thread holds (`given ... thread tagged "k"`;
    #: none declared: the message alone); None: not known (only the server knows threads)
    thread: ThreadFacts | None = None


def important_flag(labels: bool) -> str:
    """What `mark important` sets: Gmail's `\\Important` label, else the keyword `$Important`
    (RFC 8457, which other clients show as important)."""
    return "\\Important" if labels else "$Important"


def gmail_label_refusal(name: str) -> str:
    """Why a Gmail system label (`tag "\\Starred"`) cannot be set on another server."""
    return f"{name!r} is a Gmail system label; this server is not Gmail and has no such flag"


def domain_of(addr: str) -> str:
    """The domain of an addr-spec; "" when it has none or is not valid: `@example.org` has no
    local part, so no domain either (RFC 5228 §2.7.4: an invalid address matches no :domain)."""
    local, at, domain = addr.rpartition("@")
    if not at or not local.strip():
        return ""
    return domain.strip().rstrip(".").lower()


def in_zone(when: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """`when` in the zone `tz`, or as written when that is past the datetime range (a Date of
    9999-12-31 23:59:59 -2359 is in the year 10000 anywhere east of it)."""
    try:
        return when.astimezone(tz)
    except (OverflowError, ValueError):
        log.info("date %s cannot be shown in time zone %s; it is used as written", when.isoformat(), tz)
        return when


def sanitize_value(value: str, separator: str = "/") -> str:
    """Make a substituted value one harmless mailbox name segment.

    Hierarchy separators (the account's, and `/`, `\\` and `.` whatever the account's is), IMAP
    wildcards (`*`, `%`) and control or format characters become `_`; surrounding whitespace and
    leading `~` go; empty becomes `_`; at most MAX_VALUE_CHARS characters are kept. Dots go too
    because Dovecot's default Maildir++ layout refuses them in names even where `/` separates
    levels: `{from.domain}` reads `github_com`, which every server accepts.
    """
    bad = set("/\\.*%") | set(separator)
    out = "".join("_" if ch in bad or unicodedata.category(ch)[0] == "C" else ch for ch in value)
    out = out[:MAX_VALUE_CHARS].strip().lstrip("~").strip()
    return out or "_"


def sanitize_tag_value(value: str, labels: bool) -> str:
    """Make a substituted value a harmless piece of a tag name.

    `/` (a Gmail label's level) and `\\` (a system flag's mark), control and format characters
    always become `_`; where tags are IMAP keywords (`labels` False) white space and the other
    characters a keyword cannot hold (`( ) { % * " ]`) do too. Surrounding white space goes, an
    empty value becomes `_`, at most MAX_VALUE_CHARS characters are kept. Dots stay: a keyword
    or label may hold them.
    """
    bad = set("/\\") if labels else set("/") | _KEYWORD_SPECIALS

    def clean(ch: str) -> str:
        if ch in bad or unicodedata.category(ch)[0] == "C" or (not labels and ch.isspace()):
            return "_"
        return ch

    out = "".join(map(clean, value[:MAX_VALUE_CHARS].strip())).strip()
    return out or "_"


def _date_for_template(view: MessageView, ctx: EvalContext) -> dt.datetime:
    return in_zone(view.internaldate or view.sent_date or ctx.now, ctx.tz)


def _value(
    p: Placeholder, view: MessageView, captures: Sequence[str] | None, whole: str | None, ctx: EvalContext
) -> str:
    if p.name in ("year", "month", "day"):
        d = _date_for_template(view, ctx)
        return {"year": f"{d.year:04d}", "month": f"{d.month:02d}", "day": f"{d.day:02d}"}[p.name]
    if p.name == "from.domain":
        addrs = view.addresses("from")
        dom = domain_of(addrs[0]) if addrs else ""
        if not dom:
            raise TemplateError("{from.domain}: the message has no From address with a domain")
        return dom
    if p.name == "list":
        if view.list_id is None:
            raise TemplateError("{list}: the message has no List-Id header")
        return view.list_id
    if p.index == 0:
        if whole is None:
            raise TemplateError("{match.0}: no `matches` test matched in this rule")
        return whole
    if captures is None:
        raise TemplateError(f"{{match.{p.index}}}: no `matches` test matched in this rule")
    if p.index > len(captures):
        raise TemplateError(
            f"{{match.{p.index}}}: the regular expression that matched has {len(captures)} group(s)"
        )
    return captures[p.index - 1]


def _filtered(
    p: Placeholder, view: MessageView, captures: Sequence[str] | None, whole: str | None, ctx: EvalContext
) -> str:
    """A placeholder's value with its filters applied, left to right (before sanitizing)."""
    value = _value(p, view, captures, whole, ctx)
    for f in p.filters:
        value = value.lower() if f == "lower" else value.upper() if f == "upper" else value.capitalize()
    return value


def render_template(
    t: Template,
    view: MessageView,
    captures: Sequence[str] | None,
    ctx: EvalContext,
    *,
    whole: str | None = None,
) -> str:
    """The mailbox name for this message; substituted values are sanitized (`sanitize_value`).

    `captures[N-1]` is `{match.N}`; `whole` is `{match.0}`. Raises TemplateError.
    """
    out: list[str] = []
    for part in t.parts:
        if isinstance(part, TemplateText):
            out.append(part.text)
        else:
            out.append(sanitize_value(_filtered(part, view, captures, whole, ctx), ctx.separator))
    return "".join(out)


def render_tag(
    t: Template,
    view: MessageView,
    captures: Sequence[str] | None,
    ctx: EvalContext,
    *,
    whole: str | None = None,
) -> str:
    """The tag name for this message (a keyword; a Gmail label where `ctx.labels`).

    Substituted values are sanitized (`sanitize_tag_value`); a name that is still no keyword (a
    non-ASCII value, text written so) raises TemplateError where tags are keywords, as it does
    where even a label cannot be it. Raises TemplateError for a placeholder without a value too.
    """
    out: list[str] = []
    for part in t.parts:
        if isinstance(part, TemplateText):
            out.append(part.text)
        else:
            out.append(sanitize_tag_value(_filtered(part, view, captures, whole, ctx), ctx.labels))
    name = "".join(out)
    problem = label_problem(name) if ctx.labels else keyword_problem(name)
    if problem is not None:
        only_gmail = not ctx.labels and label_problem(name) is None
        hint = "; only Gmail takes it, as a label" if only_gmail else ""
        raise TemplateError(f"tag {t.raw!r} gives {name!r}: {problem}{hint}")
    return name
