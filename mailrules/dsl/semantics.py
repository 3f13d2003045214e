"""The per-message reading of the language (conditions, templates, rule order): the engine's oracle."""

from __future__ import annotations

import copy
import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from mailrules.bounds import Deadline, check_deadline, deadline_scope
from mailrules.dsl.ages import subtract_age
from mailrules.dsl.ast import (
    ADDRESS_FIELDS,
    ENVELOPE_HEADERS,
    REMOVING_ACTIONS,
    Action,
    AddressPartTest,
    AgeTest,
    All,
    And,
    Archive,
    AttachmentNameTest,
    Condition,
    Copy,
    DateTest,
    Delete,
    DomainTest,
    FieldRef,
    FlagTest,
    GmailCategory,
    GmailSearch,
    HasAttachment,
    HeaderExists,
    KeywordTest,
    Move,
    Not,
    Or,
    Regex,
    RegexTest,
    Rule,
    SetFlag,
    SizeTest,
    Stop,
    StringOp,
    StringTest,
    Tag,
    ThreadTagged,
)
from mailrules.dsl.ast_server import normal_query
from mailrules.dsl.templates import (
    EvalContext,
    TemplateError,
    domain_of,
    gmail_label_refusal,
    important_flag,
    in_zone,
    render_tag,
    render_template,
    sanitize_value,
)
from mailrules.dsl.unparse import atom as unparse_atom
from mailrules.dsl.userregex import compile_user_regex, language_flags
from mailrules.dsl.walk import regexes
from mailrules.errors import MailrulesError
from mailrules.message.view import MessageView

__all__ = [
    "EvalContext",
    "Match",
    "PlannedAction",
    "ServerOnlyError",
    "TemplateError",
    "compile_regex",
    "evaluate_condition",
    "evaluate_message",
    "prepare_regexes",
    "render_tag",
    "render_template",
    "sanitize_value",
    "subtract_age",
]

log = logging.getLogger(__name__)


class ServerOnlyError(MailrulesError):
    """A test only a server answers (Gmail's search) was asked of a message, with no answer known."""


@dataclass(frozen=True, slots=True)
class Match:
    """Whether a condition holds; `captures` are the groups (None groups as "") of the last
    `matches` test that evaluated true outside any `not`, and `whole` its whole match."""

    ok: bool
    captures: tuple[str, ...] | None = None
    whole: str | None = None


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """One action that happens to a message; `destination` is the rendered mailbox (None for
    non-mailbox actions, `archive` without `to` and `delete`), `error` why it cannot happen."""

    rule: Rule
    action: Action
    destination: str | None
    error: str | None = None

    @property
    def removes(self) -> bool:
        """The action takes the message out of its mailbox (a failed one does not)."""
        return isinstance(self.action, REMOVING_ACTIONS) and self.error is None


# ---------------------------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def compile_regex(pattern: str, flags: str) -> re.Pattern[str] | None:
    """The language's regex as `re` reads it (the reference; evaluation runs the same reading
    with a time limit, mailrules/dsl/userregex.py): IGNORECASE unless `c`; `m`, `s`, `x` honoured;
    None if invalid."""
    try:
        return re.compile(pattern, language_flags(flags))
    except re.error:
        return None  # the checker reports it; an invalid pattern matches nothing


def prepare_regexes(conditions: Iterable[Condition]) -> None:
    """Compile the regular expressions of these conditions now, so that no message's evaluation
    time pays for it (the first one that needs Unicode tables takes a few tenths of a second)."""
    for cond in conditions:
        for rx in regexes(cond):
            compile_user_regex(rx.pattern, rx.flags)


def _string_op(op: StringOp, value: str, needle: str) -> bool:
    v, n = value.lower(), needle.lower()
    if op == "contains":
        return n in v
    if op == "is":
        return v.strip() == n
    if op == "starts_with":
        return v.strip().startswith(n)
    return v.strip().endswith(n)


def _values(target: FieldRef, view: MessageView) -> list[str]:
    if target.header is not None:
        return view.header_values(target.header)
    envelope = ENVELOPE_HEADERS.get(str(target.field))
    if envelope is not None:
        return [v for h in envelope for v in view.header_values(h)]
    return view.field_text(str(target.field))


def _addresses(target: FieldRef, view: MessageView) -> list[str]:
    """The lower-cased addr-specs of an address field (`envelope to`: its stand-in headers)."""
    name = target.header if target.header is not None else str(target.field)
    envelope = ENVELOPE_HEADERS.get(name)
    if envelope is not None:
        return [a for h in envelope for a in view.addresses(h)]
    return view.addresses(name)


def address_parts(addr: str, part: str) -> str | None:
    """The local part, user or detail of an addr-spec (RFC 5233, separator `+`); None when it has none.

    `user+lists@example.org`: localpart `user+lists`, user `user`, detail `lists`; `user@...` has
    no detail (a `detail` test is false for it, as Sieve says); `user+@...` has an empty one.
    """
    local, at, _ = addr.rpartition("@")
    if not at:
        local = addr
    if part == "localpart":
        return local
    user, plus, detail = local.partition("+")
    if part == "user":
        return user
    return detail if plus else None


class _Evaluator:
    __slots__ = ("captures", "ctx", "not_depth", "view", "whole")

    def __init__(self, view: MessageView, ctx: EvalContext) -> None:
        self.view = view
        self.ctx = ctx
        self.captures: tuple[str, ...] | None = None
        self.whole: str | None = None
        self.not_depth = 0

    def search(self, regex: Regex, values: Iterable[str]) -> bool:
        rx = compile_user_regex(regex.pattern, regex.flags)
        if rx is None:
            return False
        for v in values:
            m = rx.search(v)  # EvaluationTimeout past the deadline
            if m is not None:
                if self.not_depth == 0:
                    self.captures = tuple(g if g is not None else "" for g in m.groups())
                    self.whole = m.group(0)
                return True
        return False

    def eval(self, c: Condition) -> bool:  # one dispatch over the closed AST union
        check_deadline()
        view = self.view
        if isinstance(c, And):
            return all(self.eval(i) for i in c.items)  # all/any short-circuit left to right
        if isinstance(c, Or):
            return any(self.eval(i) for i in c.items)
        if isinstance(c, Not):
            self.not_depth += 1
            try:
                return not self.eval(c.item)
            finally:
                self.not_depth -= 1
        if isinstance(c, All):
            return True
        if isinstance(c, StringTest):
            t = c.target
            if t.header is None and t.field in ADDRESS_FIELDS and c.op != "contains":
                # `is`, `starts with`, `ends with` on an address field read each addr-spec
                return any(_string_op(c.op, a, c.value) for a in _addresses(t, view))
            return any(_string_op(c.op, v, c.value) for v in _values(t, view))
        if isinstance(c, RegexTest):
            return self.search(c.regex, _values(c.target, view))
        if isinstance(c, DomainTest):
            dom = c.domain.strip().lstrip("@.").lower()
            domains = map(domain_of, _addresses(c.target, view))
            return any(d == dom or d.endswith("." + dom) for d in domains if d)
        if isinstance(c, AddressPartTest):
            parts = [p for a in _addresses(c.target, view) if (p := address_parts(a, c.part)) is not None]
            if c.op == "matches":
                return c.regex is not None and self.search(c.regex, parts)
            return c.value is not None and any(_string_op(c.op, p, c.value) for p in parts)
        if isinstance(c, HeaderExists):
            return view.has_header(c.header)
        if isinstance(c, SizeTest):
            return _compare(view.size, c.op, c.bytes)
        if isinstance(c, AgeTest):
            if view.internaldate is None:
                return False
            when, limit = view.internaldate, _age_limit(self.ctx.now, self.ctx.tz, c.amount, c.unit)
            return when < limit if c.older else when > limit
        if isinstance(c, DateTest):
            return self.date_test(c)
        if isinstance(c, FlagTest):
            has = c.flag.lower() in {f.lower() for f in view.flags}
            return has if c.present else not has
        if isinstance(c, KeywordTest):
            return c.keyword.lower() in {f.lower() for f in view.flags}  # RFC 3501: case-insensitive
        if isinstance(c, HasAttachment):
            return view.has_attachment
        if isinstance(c, GmailSearch | GmailCategory):
            return self.gmail(c)
        if isinstance(c, ThreadTagged):
            return self.thread(c)
        if isinstance(c, AttachmentNameTest):
            names = view.attachment_names
            if c.op == "matches":
                return c.regex is not None and self.search(c.regex, names)
            return c.value is not None and any(_string_op(c.op, n, c.value) for n in names)
        raise TypeError(f"unknown condition node {type(c).__name__}")

    def gmail(self, c: GmailSearch | GmailCategory) -> bool:
        """Only Gmail's search answers these: a test block declares its answer (`given ... gmail`);
        anywhere else the planner made them exact on the server, and nothing asks here."""
        facts = self.ctx.gmail
        if facts is None:
            raise ServerOnlyError(
                f"{c.span.short}: {unparse_atom(c)} is answered by Gmail's search only; "
                "no local reading exists (a test block declares it: given ... gmail ...)"
            )
        if isinstance(c, GmailCategory):
            return facts.category == c.category
        query = normal_query(c.query)
        declared = {normal_query(q) for q in facts.searches}
        return query in declared or (facts.category is not None and query == f"category:{facts.category}")

    def thread(self, c: ThreadTagged) -> bool:
        """Only the server knows a message's thread: a test block declares what the thread holds
        besides the message itself (`given ... thread tagged "k"`)."""
        facts = self.ctx.thread
        if facts is None:
            raise ServerOnlyError(
                f"{c.span.short}: {unparse_atom(c)} is answered by the server's threads only; "
                "no local reading exists (a test block declares it: given ... thread tagged ...)"
            )
        wanted = c.keyword.casefold()
        return any(k.casefold() == wanted for k in (*facts.tags, *self.view.flags))

    def date_test(self, c: DateTest) -> bool:
        if c.which == "received":
            if self.view.internaldate is None:
                return False
            day = in_zone(self.view.internaldate, self.ctx.tz).date()
        else:
            sent = self.view.sent_date
            if sent is None:
                return False
            day = sent.date()  # the calendar day as written, in the header's own offset
        if c.relation == "before":
            return day < c.date
        if c.relation == "after":
            return day > c.date
        return day == c.date


@lru_cache(maxsize=256)
def _age_limit(now: dt.datetime, tz: dt.tzinfo, amount: int, unit: str) -> dt.datetime:
    """The instant `amount unit` before `now` in `tz`: worked out once per rule and run, not per
    message (the same test over 20,000 messages)."""
    cutoff = subtract_age(now.astimezone(tz), amount, unit)
    # compare instants: aware datetimes sharing a tzinfo would compare wall clocks, so the cutoff
    # goes to UTC (the received date is not converted: 9999-12-31 -2359 overflows)
    return cutoff.astimezone(dt.UTC)


def _compare(a: int, op: str, b: int) -> bool:
    return {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]


def evaluate_condition(
    cond: Condition, view: MessageView, ctx: EvalContext, *, deadline: Deadline | None = None
) -> Match:
    """Evaluate `cond` on one message (and/or short-circuit left to right).

    With a `deadline`, the decoding, the tests and the regular expressions stop when it passes:
    EvaluationTimeout (a BaseException) is raised and the message has no result.
    """
    ev = _Evaluator(view, ctx)
    with deadline_scope(deadline):
        ok = ev.eval(cond)
    return Match(ok, ev.captures, ev.whole)


# ---------------------------------------------------------------------------------------------
# Rules over one message
# ---------------------------------------------------------------------------------------------


def evaluate_message(
    rules: Iterable[Rule],
    view: MessageView,
    *,
    account: str | None,
    mailbox: str,
    ctx: EvalContext,
) -> list[PlannedAction]:
    """What happens to one message, in order (language.md §6).

    Every action of a matching rule is kept, in order, even after a removing one (but none after
    `delete permanently`: the message is gone); after a rule
    that removed the message (move, archive, delete) or said `stop`, no later rule is evaluated.
    A mailbox action whose template cannot be rendered carries `error` and removes nothing.
    Later rules see the flags and keywords earlier rules set or cleared.
    """
    out: list[PlannedAction] = []
    current = view
    for rule in rules:
        if not rule.applies_to(account, mailbox):
            continue
        m = evaluate_condition(rule.condition, current, ctx)
        if not m.ok:
            continue
        done = False
        flags = set(current.flags)
        for action in rule.actions:
            dest: str | None = None
            error: str | None = None
            template = action.dest if isinstance(action, (Move, Copy, Archive)) else None
            if template is not None:
                try:
                    dest = render_template(template, current, m.captures, ctx, whole=m.whole)
                except TemplateError as exc:
                    error = f'{action.span.short}: rule "{rule.name}": {exc}'
            elif isinstance(action, SetFlag | Tag):
                name = action.flag if isinstance(action, SetFlag) else action.keyword
                if name == "\\Important" and isinstance(action, SetFlag):
                    name = important_flag(ctx.labels)
                elif isinstance(action, Tag) and name.startswith("\\") and not ctx.labels:  # off Gmail
                    error = f'{action.span.short}: rule "{rule.name}": {gmail_label_refusal(name)}'
                if isinstance(action, Tag) and action.template is not None:
                    try:  # `tag "lists/{list}"`: the rendered name, shown as the action's destination
                        name = dest = render_tag(action.template, current, m.captures, ctx, whole=m.whole)
                    except TemplateError as exc:
                        error = f'{action.span.short}: rule "{rule.name}": {exc}'
                if error is None:
                    flags = {f for f in flags if f.casefold() != name.casefold()} | (
                        {name} if action.on else set()
                    )
            planned = PlannedAction(rule, action, dest, error)
            out.append(planned)
            done = done or planned.removes or isinstance(action, Stop)
            if isinstance(action, Delete) and action.permanently:
                break  # the message is gone: nothing later in the rule can act on it
        if done:
            break
        if flags != set(current.flags):
            # Later rules see the flags earlier rules set, as they would on the server.
            current = copy.copy(current)  # shares the decoded caches; only the flags differ
            current.flags = frozenset(flags)
    return out
