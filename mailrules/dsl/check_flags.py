"""Checks of `on flag change` rules: a rule set whose own flag changes could set flag-change rules
off again (language.md, "Flag changes: what the checker refuses").

At run time mailrules never runs a flag-change rule on a change it made itself (the MODSEQs of its
own STOREs are remembered, engine/flagpass.py), so no rule set can loop. The checks say where a
rule set would only work *because* of that guard, which is where its author expected something
else:

- error: a flag-change rule that changes a flag or keyword its own condition tests (it "reacts"
  to what it does; the reaction never comes);
- error: flag-change rules that change what each other test, in a cycle (the two-rule ping-pong:
  `when flagged then mark read` and `when seen then flag` on the same mailbox);
- warning: any other rule whose flag change a flag-change rule tests: that rule does not run on
  mailrules' own change, only on someone else's.

Copies and moves are not flag changes: a message copied or moved into a mailbox is a new UID
there, an arrival, which flag-change rules never see; so they add no edge here.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailrules.dsl import ast
from mailrules.dsl.check_loops import _same
from mailrules.dsl.unparse import quote
from mailrules.dsl.walk import atoms
from mailrules.source import Diagnostic

#: A flag or keyword, compared as IMAP does: keywords case-insensitively; ANY_KEYWORD stands for a
#: keyword only known per message (`tag "lists/{list}"`).
ANY_KEYWORD = "*"

FlagAction = ast.SetFlag | ast.Tag


def _name(flag: str) -> str:
    return flag.casefold()


def tested(rule: ast.Rule) -> set[str]:
    """The flags and keywords a rule's condition tests (casefolded)."""
    out: set[str] = set()
    for atom in atoms(rule.condition):
        if isinstance(atom, ast.FlagTest):
            out.add(_name(atom.flag))
        elif isinstance(atom, ast.KeywordTest | ast.ThreadTagged):
            out.add(_name(atom.keyword))
    return out


def changed(action: FlagAction) -> str:
    """The flag or keyword a flag action sets or clears (`\\Important` is `$Important` off Gmail:
    both names are reported, see `_hits`)."""
    if isinstance(action, ast.Tag):
        return ANY_KEYWORD if action.template is not None else _name(action.keyword)
    return _name(action.flag)


def _hits(flag: str, reads: set[str]) -> bool:
    if flag == ANY_KEYWORD:
        return any(not r.startswith("\\") for r in reads)
    if flag == "\\important":
        return bool({"\\important", "$important"} & reads)
    return flag in reads


def _share(a: ast.Rule, b: ast.Rule) -> bool:
    """Whether two rules can act on the same message: a mailbox and an account in common."""
    if a.accounts and b.accounts and not set(a.accounts) & set(b.accounts):
        return False
    return any(_same(m, n) for m in a.mailboxes for n in b.mailboxes)


def _flag_actions(rule: ast.Rule) -> list[FlagAction]:
    return [a for a in rule.actions if isinstance(a, ast.SetFlag | ast.Tag)]


def _edges(rule: ast.Rule, readers: Sequence[ast.Rule]) -> list[tuple[FlagAction, ast.Rule]]:
    """(action of `rule`, flag-change rule whose test that action's change touches)."""
    out = []
    for action in _flag_actions(rule):
        flag = changed(action)
        for other in readers:
            if _share(rule, other) and _hits(flag, tested(other)):
                out.append((action, other))
    return out


def _cycle(start: ast.Rule, graph: dict[str, list[ast.Rule]]) -> list[ast.Rule] | None:
    """The shortest cycle of two or more flag-change rules through `start`, if any (BFS)."""
    paths: list[list[ast.Rule]] = [[start]]
    seen = {start.name}
    while paths:
        nxt: list[list[ast.Rule]] = []
        for path in paths:
            for other in graph.get(path[-1].name, []):
                if other.name == start.name and len(path) > 1:
                    return path
                if other.name not in seen:
                    seen.add(other.name)
                    nxt.append([*path, other])
        paths = nxt
    return None


def flag_change_problems(rules: Sequence[ast.Rule]) -> list[Diagnostic]:
    """Errors for flag-change rules that would set themselves or each other off; warnings for other
    rules whose flag changes a flag-change rule tests (see the module docstring)."""
    readers = [r for r in rules if isinstance(r.trigger, ast.FlagChange)]
    if not readers:
        return []
    out: list[Diagnostic] = []
    graph: dict[str, list[ast.Rule]] = {}
    for rule in readers:
        for _action, other in _edges(rule, readers):
            if other.name != rule.name and other not in graph.setdefault(rule.name, []):
                graph[rule.name].append(other)
    in_cycle: set[str] = set()
    for rule in rules:
        own = isinstance(rule.trigger, ast.FlagChange)
        cycle = _cycle(rule, graph) if own else None
        for action, other in _edges(rule, readers):
            what = ast_word(action)
            if own and other.name == rule.name:
                out.append(
                    Diagnostic(
                        action.span,
                        f"rule {quote(rule.name)} runs on flag changes and {what}, which its own "
                        "condition tests: it could set itself off again; mailrules never runs a rule "
                        "on its own change, so the rule would not see it. Test other flags than it "
                        "changes, or make it an arrival or scheduled rule",
                    )
                )
            elif own and cycle is not None and other.name == cycle[1].name and rule.name not in in_cycle:
                in_cycle.update(r.name for r in cycle)
                loop = " -> ".join(quote(r.name) for r in [*cycle, rule])
                out.append(
                    Diagnostic(
                        action.span,
                        f"flag-change rules set each other off: {loop} (each changes a flag or keyword "
                        "the next one tests, on the same mailbox); mailrules never runs a rule on its "
                        "own change, so none of them would react to another. Keep one of them, or "
                        "make one an arrival or scheduled rule",
                    )
                )
            elif other.name != rule.name and not (own and cycle is not None):
                out.append(
                    Diagnostic(
                        action.span,
                        f"this action {what}, which flag-change rule {quote(other.name)} ({other.span}) "
                        "tests; it will not run on this change: mailrules' own changes never set off "
                        "flag-change rules, only someone else's",
                        severity="warning",
                    )
                )
    return out


def ast_word(action: FlagAction) -> str:
    """How a message names a flag action: `sets \\Seen`, `clears the keyword "$X"`."""
    verb = "sets" if action.on else "clears"
    if isinstance(action, ast.Tag):
        return f"{verb} the keyword {quote(action.keyword)}"
    return f"{verb} {action.flag}"
