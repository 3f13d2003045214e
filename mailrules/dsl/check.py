"""Semantic checks of a parsed rule set; every problem is collected as a Diagnostic, none raised."""

from __future__ import annotations

import os
import re

from mailrules.dsl import ast
from mailrules.dsl.check_flags import flag_change_problems
from mailrules.dsl.check_logic import contradiction, find_shadowed
from mailrules.dsl.check_loops import loop_warnings
from mailrules.dsl.cron import cron_problem
from mailrules.dsl.lexemes import address_problem, keyword_problem, mailbox_problem
from mailrules.dsl.regex_lint import lint_pattern, silence_set_warnings
from mailrules.dsl.unparse import atom as unparse_atom
from mailrules.dsl.unparse import quote
from mailrules.dsl.unparse import regex as regex_text
from mailrules.dsl.walk import atoms, gmail_only, regexes, server_only
from mailrules.source import Diagnostic, Span

silence_set_warnings()  # each is reported below at its place (regex_lint)


def check_rule_set(rule_set: ast.RuleSet, sources: dict[str, str] | None = None) -> list[Diagnostic]:
    """Every semantic error and warning of the rule set, in file then position order."""
    del sources  # the AST carries every span it needs; kept for the contract's signature
    out: list[Diagnostic] = []
    first_rule: dict[str, ast.Rule] = {}
    for rule in rule_set.rules:
        key = rule.name.casefold()
        if key in first_rule:
            first = first_rule[key]
            out.append(
                Diagnostic(
                    rule.name_span or rule.span,
                    f"duplicate rule name {quote(rule.name)}; rule names are unique across the rule set "
                    f"(first defined at {first.name_span or first.span})",
                )
            )
        else:
            first_rule[key] = rule
        out.extend(check_rule(rule))
    for later, earlier in find_shadowed(rule_set.rules):
        out.append(
            Diagnostic(
                later.name_span or later.span,
                f"rule {quote(later.name)} never sees a message: rule {quote(earlier.name)} ({earlier.span}) "
                "matches everything it matches first and takes it away",
                severity="warning",
            )
        )
    out.extend(loop_warnings(rule_set.rules))
    out.extend(flag_change_problems(rule_set.rules))
    out.extend(_group_problems(rule_set.rules))
    for rule_file in rule_set.files:
        out.extend(check_tests(rule_file))
    return sorted(out, key=_order)


def _group_problems(rules: tuple[ast.Rule, ...]) -> list[Diagnostic]:
    """A group written twice (its rules in two places): its name is its schedule's."""
    out: list[Diagnostic] = []
    first: dict[str, ast.Rule] = {}
    current: str | None = None
    for rule in rules:
        key = rule.group.casefold() if rule.group is not None else None
        if key is not None and key != current:
            if key in first:
                where = first[key]
                at = where.name_span or where.span
                name = quote(rule.group or "")
                message = f"group {name} is written twice (first at {at}); give each its own name"
                out.append(Diagnostic(rule.name_span or rule.span, message))
            else:
                first[key] = rule
        current = key
    return out


def _order(d: Diagnostic) -> tuple[str, int, int]:
    return (d.span.file, d.span.line, d.span.column)


def regex_flags(regex: ast.Regex) -> int:
    """The `re` flags of a language regex: case-insensitive unless `c`; m, s, x as in Python."""
    flags = 0 if "c" in regex.flags else re.IGNORECASE
    for letter, flag in (("m", re.MULTILINE), ("s", re.DOTALL), ("x", re.VERBOSE)):
        if letter in regex.flags:
            flags |= flag
    return flags


def check_rule(rule: ast.Rule) -> list[Diagnostic]:
    """The diagnostics of one rule on its own (names across rules are checked by check_rule_set)."""
    out: list[Diagnostic] = []
    groups: int | None = None
    for regex in regexes(rule.condition):
        try:
            compiled = re.compile(regex.pattern, regex_flags(regex))
        except re.error as err:
            out.append(Diagnostic(regex.span, f"invalid regular expression: {err}"))
            continue
        groups = max(groups or 0, compiled.groups)
        out.extend(regex_findings(regex, bool(compiled.flags & re.VERBOSE)))
    out.extend(_check_trigger(rule.trigger))
    out.extend(server_only_problems(rule))
    for atom in atoms(rule.condition):
        if isinstance(atom, ast.KeywordTest):
            warning = gmail_label_warning(atom.keyword, atom.keyword, "the test is never true")
            if warning:
                out.append(Diagnostic(atom.span, warning, severity="warning"))
    if rule.limit is not None and rule.limit < 1:
        out.append(
            Diagnostic(
                rule.name_span or rule.span,
                "limit 0 would never let this rule act; "
                "use 'manually' to keep a rule from running on its own",
            )
        )
    if not rule.actions:
        out.append(Diagnostic(rule.name_span or rule.span, f"rule {quote(rule.name)} has no actions"))
    out.extend(check_actions(rule.actions, groups, in_rule=True))
    reason = contradiction(rule.condition)
    if reason:
        span = getattr(rule.condition, "span", rule.span)
        out.append(Diagnostic(span, f"rule {quote(rule.name)} can never match: {reason}", severity="warning"))
    return out


def regex_findings(regex: ast.Regex, verbose: bool) -> list[Diagnostic]:
    """POSIX classes, possessive quantifiers and set operators (regex_lint) at their columns.

    Offsets are in the pattern as written: the canonical writing (`/` as `\\/`) is the text
    between the slashes of the rule file, which is on one line.
    """
    written = regex_text(regex)
    body = written[1 : written.rfind("/")]
    out: list[Diagnostic] = []
    span = regex.span
    for f in lint_pattern(body, verbose):
        col = span.column + 1 + f.offset
        where = Span(span.file, span.line, col, span.line, col + f.length)
        out.append(Diagnostic(where, f.message, f.severity))
    return out


def server_only_problems(rule: ast.Rule) -> list[Diagnostic]:
    """Gmail's search answers `gmail search` and `category is` whole, and nothing else can: the
    rule must name its (Gmail) accounts, and such a test must sit where the server's answer is
    the whole answer (under `or` and `not` only with tests Gmail answers exactly)."""
    if not server_only(rule.condition):
        return []
    out: list[Diagnostic] = []
    gmail = gmail_only(rule.condition)
    if gmail and not rule.accounts:
        out.append(
            Diagnostic(
                gmail[0].span,
                f"{unparse_atom(gmail[0])} is answered by Gmail's search alone: name the rule's Gmail "
                'accounts with `for account "..."` (on any other server the rule is refused)',
            )
        )
    for branch in _mixed_branches(rule.condition):
        atom = server_only(branch)[0]
        local = next(a for a in atoms(branch) if not _gmail_exact(a))
        out.append(
            Diagnostic(
                atom.span,
                f"{unparse_atom(atom)} is answered by the server alone, so it cannot be combined "
                f"under `or` or `not` with {unparse_atom(local)}, which is checked here; write two "
                "rules (or, on Gmail, put both in one `gmail search` query)",
            )
        )
    return out


def _mixed_branches(cond: ast.Condition) -> list[ast.Condition]:
    """The outermost `or`/`not` branches that hold a server-only test and a locally checked one."""
    out: list[ast.Condition] = []
    stack = [cond]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.And):
            stack.extend(node.items)
        elif isinstance(node, ast.Or | ast.Not) and server_only(node) and not _gmail_exact(node):
            out.append(node)
    return out


def _gmail_exact(cond: ast.Condition) -> bool:
    """Whether Gmail answers `cond` exactly (the planner leaves no residual there)."""
    for a in atoms(cond):
        if isinstance(a, ast.KeywordTest):
            if not (a.keyword.isascii() and a.keyword.isprintable()):
                return False
        elif not isinstance(a, (*ast.SERVER_ONLY, ast.FlagTest, ast.SizeTest, ast.All)):
            return False
    return True


def _check_trigger(trigger: ast.Trigger) -> list[Diagnostic]:
    if isinstance(trigger, ast.At) and not (0 <= trigger.hour <= 23 and 0 <= trigger.minute <= 59):
        return [
            Diagnostic(
                trigger.span,
                f"invalid time {trigger.hour:02d}:{trigger.minute:02d}; expected HH:MM from 00:00 to 23:59",
            )
        ]
    if isinstance(trigger, ast.Every) and trigger.amount < 1:
        return [
            Diagnostic(
                trigger.span, f"an interval of {trigger.amount} {trigger.unit} never ends; use 1 or more"
            )
        ]
    if isinstance(trigger, ast.Cron):
        problem = cron_problem(trigger.expression)
        if problem:
            return [Diagnostic(trigger.span, problem)]
    return []


def check_actions(actions: tuple[ast.Action, ...], groups: int | None, *, in_rule: bool) -> list[Diagnostic]:
    """Templates, addresses and `stop` placement of an action list (`groups`: capture groups seen)."""
    out: list[Diagnostic] = []
    for i, action in enumerate(actions):
        if isinstance(action, (ast.Move, ast.Copy, ast.Archive)) and action.dest is not None:
            out.extend(check_template(action.dest, groups, in_rule=in_rule))
        if isinstance(action, (ast.Forward, ast.Redirect)):
            problem = address_problem(action.address)
            if problem:
                out.append(Diagnostic(action.span, problem))
        if isinstance(action, ast.Tag) and action.template is not None:
            out.extend(check_template(action.template, groups, in_rule=in_rule, what="tag name"))
        if in_rule and isinstance(action, ast.Tag):
            warning = gmail_label_warning(_tag_text(action), action.keyword, "this action fails")
            if warning:  # the parser let it through as a Gmail label
                out.append(Diagnostic(action.span, warning, severity="warning"))
        if in_rule and isinstance(action, ast.Delete) and action.permanently and i + 1 < len(actions):
            out.append(
                Diagnostic(
                    actions[i + 1].span,
                    "this action comes after 'delete permanently' and never runs: the message is gone",
                    severity="warning",
                )
            )
        if in_rule and isinstance(action, ast.Stop) and i + 1 < len(actions):
            out.append(
                Diagnostic(
                    actions[i + 1].span,
                    "this action comes after 'stop'; 'stop' ends the "
                    "rules for a message, not this rule's actions",
                    severity="warning",
                )
            )
    return out


def gmail_label_warning(text: str, written: str, there: str) -> str | None:
    """Why a name only Gmail takes (as a label) is no IMAP keyword, for a warning, or None."""
    problem = keyword_problem(text)
    if problem is None:
        return None
    if text.startswith("\\"):
        return f"{written!r} is a Gmail system label: only Gmail has it; on any other server {there}"
    problem = problem.replace(repr(text), repr(written))
    return f"{problem}: only Gmail takes it, as a label; on any other server {there}"


def _tag_text(tag: ast.Tag) -> str:
    """What of a tag's name is written in the rule: its literal text ("x" for a placeholder)."""
    if tag.template is None:
        return tag.keyword
    return "".join(p.text if isinstance(p, ast.TemplateText) else "x" for p in tag.template.parts)


def check_template(
    template: ast.Template, groups: int | None, *, in_rule: bool = True, what: str = "mailbox name"
) -> list[Diagnostic]:
    """A mailbox (or tag) template: its literal text and whether every placeholder can be filled."""
    out: list[Diagnostic] = []
    literal = "".join(p.text for p in template.parts if isinstance(p, ast.TemplateText))
    if not template.raw.strip():
        out.append(Diagnostic(template.span, f"{what} is empty"))
    elif literal.strip() and what == "mailbox name":
        problem = mailbox_problem(literal)
        if problem:
            out.append(Diagnostic(template.span, problem.replace(repr(literal), repr(template.raw))))
    for part in template.parts:
        if not (in_rule and isinstance(part, ast.Placeholder) and part.name == "match"):
            continue
        if groups is None:
            out.append(
                Diagnostic(
                    part.span, f"{{match.{part.index}}} needs a 'matches' test in this rule's condition"
                )
            )
        elif part.index > groups:
            have = (
                "no capture groups" if groups == 0 else f"at most {groups} capture group" + "s" * (groups > 1)
            )
            out.append(
                Diagnostic(
                    part.span,
                    f"{{match.{part.index}}} cannot be filled: this rule's regular expressions have {have}",
                )
            )
    return out


def check_tests(rule_file: ast.RuleFile) -> list[Diagnostic]:
    """Test blocks of one file: unique names, existing message files, sane expectations."""
    out: list[Diagnostic] = []
    seen: dict[str, ast.TestBlock] = {}
    base = os.path.dirname(rule_file.path)
    for test in rule_file.tests:
        key = test.name.casefold()
        if key in seen:
            out.append(
                Diagnostic(
                    _name_span(test),
                    f"duplicate test name {quote(test.name)} in this file (first at {seen[key].span})",
                )
            )
        else:
            seen[key] = test
        path = os.path.join(base, test.given.path)
        if not os.path.isfile(path):
            out.append(Diagnostic(test.given.span, f"message file not found: {path}"))
        out.extend(check_actions(test.expect, None, in_rule=False))
    return out


def _name_span(test: ast.TestBlock) -> Span:
    return test.span
