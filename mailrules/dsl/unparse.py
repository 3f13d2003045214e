"""AST back to rule-language text: the one canonical spelling, for explain, test output, schedules, logs.

For every AST the parser produces, `parse(unparse(x)) == x` up to spans (a property test holds
it). The spelling is the language specification's (docs/language.md): full day names (`every
monday at 09:00`), plural units but for 1 (`older than 1 day`, `every 15 minutes`), the largest
size unit that divides the size (`size > 1 MB`), one flag word per flag test (`unflagged`, not
`not flagged`), `FIELD OP any [...]` written as the `or` it stands for. Defaults are left out
(`in "INBOX"`, `on arrival`); `when` is always written.

Conditions are parenthesised by structure: an `and` or `or` inside another `and`, `or` or `not`
is put in parentheses, so `a and (b and c)` keeps its shape and `(a and b) or c` reads as it
binds (`not` binds tighter than `and`, which binds tighter than `or`).

Strings are written as the lexer reads them: `"` and `\\` escaped, nothing else (the language has
no other escape; a line break, which no parsed string holds, is written as is). A regex's `/` is
written `\\/`. Text from a rule file may hold control characters: a log line escapes it.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Sequence
from typing import Any, get_args

from mailrules.dsl import ast
from mailrules.dsl.walk import Atom

__all__ = [
    "action",
    "atom",
    "block",
    "condition",
    "field",
    "given",
    "group",
    "quote",
    "regex",
    "rule",
    "rule_file",
    "template",
    "trigger",
    "unparse",
]

_OPS = {"contains": "contains", "is": "is", "starts_with": "starts with", "ends_with": "ends with"}
_FLAG_WORDS = {
    ("\\Seen", True): "seen",
    ("\\Seen", False): "unseen",
    ("\\Flagged", True): "flagged",
    ("\\Flagged", False): "unflagged",
    ("\\Answered", True): "answered",
    ("\\Answered", False): "unanswered",
    ("\\Draft", True): "draft",
    ("\\Draft", False): "undraft",
    ("\\Deleted", True): "deleted",
    ("\\Deleted", False): "undeleted",
}
#: `given ... flags`: the system flags a test block names by word; keywords are quoted.
_GIVEN_FLAG_WORDS = {
    "\\Seen": "seen",
    "\\Flagged": "flagged",
    "\\Answered": "answered",
    "\\Draft": "draft",
    "\\Deleted": "deleted",
}
_SIZE_UNITS = ((1024**3, "GB"), (1024**2, "MB"), (1024, "KB"))
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_GROUPS = {(0, 1, 2, 3, 4): "weekday", (5, 6): "weekend"}
_INDENT = "    "


# ---------------------------------------------------------------------------
# Lexemes
# ---------------------------------------------------------------------------


def quote(value: str) -> str:
    """A string literal the lexer reads back as `value`: `"` and `\\` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def regex(rx: ast.Regex) -> str:
    """`/pattern/flags`, each unescaped `/` of the pattern written `\\/` (lexemes.split_regex)."""
    out: list[str] = []
    i, pattern = 0, rx.pattern
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):  # an escape stays as it is, `\\` included
            out.append(pattern[i : i + 2])
            i += 2
            continue
        out.append("\\/" if ch == "/" else ch)
        i += 1
    return "/" + "".join(out) + "/" + rx.flags


def field(ref: ast.FieldRef) -> str:
    """`subject`, or `header "X-Name"`."""
    return f"header {quote(ref.header)}" if ref.header is not None else str(ref.field)


def template(t: ast.Template) -> str:
    """A mailbox template as a string literal (its text as written, placeholders included)."""
    return quote(t.raw)


def _plural(amount: int, unit: str) -> str:
    return f"{amount} {unit[:-1] if amount == 1 else unit}"


def _size(n: int) -> str:
    for factor, unit in _SIZE_UNITS:
        if n and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"


def _day_time(d: dt.datetime) -> str:
    """`DATE` or `DATE HH:MM` as `given ... received|now` writes it (the time when not 00:00)."""
    day = d.date().isoformat()
    return day if (d.hour, d.minute) == (0, 0) else f"{day} {d.hour:02d}:{d.minute:02d}"


# ---------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------


def _string_test(c: ast.StringTest) -> str:
    return f"{field(c.target)} {_OPS[c.op]} {quote(c.value)}"


def _regex_test(c: ast.RegexTest) -> str:
    return f"{field(c.target)} matches {regex(c.regex)}"


def _domain_test(c: ast.DomainTest) -> str:
    return f"{field(c.target)} domain is {quote(c.domain)}"


def _address_part(c: ast.AddressPartTest) -> str:
    head = f"{field(c.target)} {c.part}"
    if c.op == "matches" and c.regex is not None:
        return f"{head} matches {regex(c.regex)}"
    return f"{head} {_OPS.get(c.op, c.op)} {quote(c.value or '')}"


def _header_exists(c: ast.HeaderExists) -> str:
    return f"header {quote(c.header)} exists"


def _size_test(c: ast.SizeTest) -> str:
    return f"size {c.op} {_size(c.bytes)}"


def _age_test(c: ast.AgeTest) -> str:
    return f"{'older' if c.older else 'newer'} than {_plural(c.amount, c.unit)}"


def _date_test(c: ast.DateTest) -> str:
    return f"{c.which} {c.relation} {c.date.isoformat()}"


def _flag_test(c: ast.FlagTest) -> str:
    return _FLAG_WORDS[(c.flag, c.present)]


def _keyword_test(c: ast.KeywordTest) -> str:
    return f"tagged {quote(c.keyword)}"


def _has_attachment(c: ast.HasAttachment) -> str:
    return "has attachment"


def _attachment_name(c: ast.AttachmentNameTest) -> str:
    if c.op == "matches" and c.regex is not None:
        return f"attachment name matches {regex(c.regex)}"
    return f"attachment name {_OPS.get(c.op, c.op)} {quote(c.value or '')}"


def _all(c: ast.All) -> str:
    return "all"


def _gmail_search(c: ast.GmailSearch) -> str:
    return f"gmail search {quote(c.query)}"


def _gmail_category(c: ast.GmailCategory) -> str:
    return f"category is {quote(c.category)}"


def _thread_tagged(c: ast.ThreadTagged) -> str:
    return f"thread tagged {quote(c.keyword)}"


_ATOMS: dict[type, Callable[[Any], str]] = {
    ast.StringTest: _string_test,
    ast.RegexTest: _regex_test,
    ast.DomainTest: _domain_test,
    ast.AddressPartTest: _address_part,
    ast.HeaderExists: _header_exists,
    ast.SizeTest: _size_test,
    ast.AgeTest: _age_test,
    ast.DateTest: _date_test,
    ast.FlagTest: _flag_test,
    ast.KeywordTest: _keyword_test,
    ast.HasAttachment: _has_attachment,
    ast.AttachmentNameTest: _attachment_name,
    ast.GmailSearch: _gmail_search,
    ast.GmailCategory: _gmail_category,
    ast.ThreadTagged: _thread_tagged,
    ast.All: _all,
}


def atom(c: Atom) -> str:
    """One test as written, e.g. `from matches /x@y/`."""
    writer = _ATOMS.get(type(c))
    if writer is None:
        raise TypeError(f"not a condition atom: {c!r}")
    return writer(c)


def condition(c: ast.Condition, atom_text: Callable[[Atom], str] = atom) -> str:
    """A condition as written; `atom_text` writes each test (explain adds where it is checked).

    An empty `and` is `all` and an empty `or` is `not all`, as the semantics reads them (the
    parser makes neither).
    """
    if isinstance(c, ast.And | ast.Or):
        if not c.items:
            return "all" if isinstance(c, ast.And) else "not all"
        word = " and " if isinstance(c, ast.And) else " or "
        return word.join(_operand(item, atom_text) for item in c.items)
    if isinstance(c, ast.Not):
        return "not " + _operand(c.item, atom_text)
    return atom_text(c)


def _operand(c: ast.Condition, atom_text: Callable[[Atom], str]) -> str:
    text = condition(c, atom_text)
    return f"({text})" if isinstance(c, ast.And | ast.Or) and len(c.items) > 1 else text


# ---------------------------------------------------------------------------
# Actions and triggers
# ---------------------------------------------------------------------------


def action(a: ast.Action, destination: str | None = None) -> str:
    """An action as written, e.g. `move to "GitHub"`, `mark read`, `delete permanently`.

    `destination`: the mailbox (or tag) a template gave for one message, shown instead of the
    template.
    """
    if isinstance(a, ast.Move | ast.Copy | ast.Archive):
        verb = type(a).__name__.lower()
        if a.dest is None:
            return verb
        return f"{verb} to {quote(destination) if destination is not None else template(a.dest)}"
    if isinstance(a, ast.Delete):
        return "delete permanently" if a.permanently else "delete"
    if isinstance(a, ast.SetFlag):
        if a.flag == "\\Seen":
            return "mark read" if a.on else "mark unread"
        if a.flag == "\\Important":
            return "mark important" if a.on else "mark not important"
        return "flag" if a.on else "unflag"
    if isinstance(a, ast.Tag):
        return f"{'tag' if a.on else 'untag'} {quote(destination if destination is not None else a.keyword)}"
    if isinstance(a, ast.Forward):
        return f"forward to {quote(a.address)}"
    if isinstance(a, ast.Redirect):
        return f"redirect to {quote(a.address)}"
    if isinstance(a, ast.Stop):
        return "stop"
    raise TypeError(f"not an action: {a!r}")


def trigger(t: ast.Trigger) -> str:
    """A trigger as written: `on arrival`, `every 15 minutes`, `every monday at 09:00`, ..."""
    if isinstance(t, ast.OnArrival):
        return "on arrival"
    if isinstance(t, ast.Every):
        return f"every {_plural(t.amount, t.unit)}"
    if isinstance(t, ast.At):
        days = "day" if not t.days else _DAY_GROUPS.get(t.days) or ", ".join(_DAYS[d] for d in t.days)
        return f"every {days} at {t.hour:02d}:{t.minute:02d}"
    if isinstance(t, ast.Cron):
        return f"cron {quote(t.expression)}"
    if isinstance(t, ast.Manually):
        return "manually"
    if isinstance(t, ast.FlagChange):
        return "on flag change"
    raise TypeError(f"not a trigger: {t!r}")


# ---------------------------------------------------------------------------
# Rules, test blocks, files
# ---------------------------------------------------------------------------


def _actions_block(actions: tuple[ast.Action, ...]) -> list[str]:
    """`then A` and each further action on its own line under the first, as the spec writes them."""
    lines = [f"{_INDENT}then {action(actions[0])}"] if actions else [f"{_INDENT}then"]
    lines += [f"{_INDENT}     {action(a)}" for a in actions[1:]]
    return lines


def rule(r: ast.Rule, *, in_group: bool = False) -> str:
    """A whole rule: `rule NAME [in ...] [for account ...] [TRIGGER] [limit N] { when ... then ... }`.

    `in_group`: written inside its `group`, which says the trigger (`rule_file` writes groups).
    """
    head = [f"rule {quote(r.name)}"]
    if r.mailboxes != ("INBOX",):
        head.append("in " + ", ".join(quote(m) for m in r.mailboxes))
    if r.accounts:
        head.append("for account " + ", ".join(quote(a) for a in r.accounts))
    if not isinstance(r.trigger, ast.OnArrival) and not in_group:
        head.append(trigger(r.trigger))
    if r.limit is not None:
        head.append(f"limit {r.limit}")
    lines = [" ".join(head) + " {", f"{_INDENT}when {condition(r.condition)}", *_actions_block(r.actions)]
    return "\n".join([*lines, "}"])


def given(g: ast.Given) -> str:
    """`given "FILE.eml" [flags ...] [received ...] [in "MAILBOX"] [account "NAME"] [now ...] [gmail ...]`."""
    parts = [f"given {quote(g.path)}"]
    if g.flags:
        parts.append("flags " + ", ".join(_GIVEN_FLAG_WORDS.get(f) or quote(f) for f in g.flags))
    if g.received is not None:
        parts.append(f"received {_day_time(g.received)}")
    if g.mailbox != "INBOX":
        parts.append(f"in {quote(g.mailbox)}")
    if g.account is not None:
        parts.append(f"account {quote(g.account)}")
    if g.now is not None:
        parts.append(f"now {_day_time(g.now)}")
    if g.gmail is not None:
        parts.append("gmail")
        if g.gmail.category is not None:
            parts.append(f"category {g.gmail.category}")
        parts.extend(f"search {quote(q)}" for q in g.gmail.searches)
    if g.thread is not None:
        parts.extend(f"thread tagged {quote(t)}" for t in g.thread.tags)
    if g.changed:
        parts.append("changed")
    return " ".join(parts)


def block(t: ast.TestBlock) -> str:
    """A whole `test` block; `expect keep` when it expects no action."""
    expect = ", ".join(action(a) for a in t.expect) or "keep"
    return "\n".join(
        (f"test {quote(t.name)} {{", f"{_INDENT}{given(t.given)}", f"{_INDENT}expect {expect}", "}")
    )


def group(name: str, rules: Sequence[ast.Rule]) -> str:
    """`group "NAME" TRIGGER { rule ... }` with the rules indented, a blank line between them."""
    inner = "\n\n".join(rule(r, in_group=True) for r in rules)
    body = "\n".join(_INDENT + line if line else line for line in inner.split("\n"))
    return f"group {quote(name)} {trigger(rules[0].trigger)} {{\n{body}\n}}"


def rule_file(f: ast.RuleFile) -> str:
    """A rule file: its rules (those of a group inside it), then its test blocks, a blank line
    between items."""
    items: list[str] = []
    for name, run in itertools.groupby(f.rules, key=lambda r: r.group):
        rules = list(run)
        items += [rule(r) for r in rules] if name is None else [group(name, rules)]
    items += [block(t) for t in f.tests]
    return "\n\n".join(items) + "\n" if items else ""


# ---------------------------------------------------------------------------
# Any node
# ---------------------------------------------------------------------------


def _placeholder(p: ast.Placeholder) -> str:
    name = f"match.{p.index}" if p.name == "match" else p.name
    return "{" + "|".join((name, *p.filters)) + "}"


_NODES: dict[type, Callable[[Any], str]] = {
    **dict.fromkeys(get_args(ast.Condition), condition),
    **dict.fromkeys(get_args(ast.Action), action),
    **dict.fromkeys(get_args(ast.Trigger), trigger),
    ast.Regex: regex,
    ast.FieldRef: field,
    ast.Template: template,
    ast.TemplateText: lambda t: t.text,
    ast.Placeholder: _placeholder,
    ast.Rule: rule,
    ast.Given: given,
    ast.TestBlock: block,
    ast.RuleFile: rule_file,
}


def unparse(node: Any) -> str:
    """Any AST node as the language writes it (a rule set has one text per file: `rule_file`)."""
    writer = _NODES.get(type(node))
    if writer is None:
        raise TypeError(f"not an AST node: {type(node).__name__}")
    return writer(node)
