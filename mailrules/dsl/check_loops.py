"""Loop warnings: a mailbox name the sender picks, and rules that file mail back where they read it.

At run time a copy, move, archive or delete into the mailbox the rule reads is skipped
(actions/loops.py), so none of these can flood a mailbox; the warnings say where a rule set
leaves that guard to do the work, or lets a stranger choose a top-level mailbox.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

from mailrules.dsl import ast
from mailrules.source import Diagnostic

#: Placeholders whose value the message's sender writes ({year}, {month}, {day} are digits).
_SENDER_WRITTEN = frozenset({"list", "from.domain", "match"})
#: The hierarchy separators servers use; the checker does not know which one will apply.
_SEPARATORS = ("/", ".")

MailboxAction = ast.Move | ast.Copy | ast.Archive


def _top_level(template: ast.Template) -> list[ast.TemplateText | ast.Placeholder]:
    """The parts of the first hierarchy level: up to the first literal separator of any server."""
    out: list[ast.TemplateText | ast.Placeholder] = []
    for part in template.parts:
        if isinstance(part, ast.TemplateText):
            cuts = [i for i in (part.text.find(s) for s in _SEPARATORS) if i >= 0]
            if cuts:
                out.append(ast.TemplateText(part.text[: min(cuts)]))
                return out
        out.append(part)
    return out


def sender_picks_top_level(template: ast.Template) -> bool:
    """Whether the whole first level of the name is written by the sender (`{list}`,
    `{from.domain}`, `{match.1}`, `"{list}/x"`): they can then name INBOX, Trash, Junk or any other
    top-level mailbox. Literal text or a date placeholder in that level keeps them from it."""
    top = _top_level(template)
    if any(isinstance(p, ast.TemplateText) and p.text for p in top):
        return False
    placeholders = [p for p in top if isinstance(p, ast.Placeholder)]
    return bool(placeholders) and all(p.name in _SENDER_WRITTEN for p in placeholders)


def _canonical(name: str) -> tuple[str, ...]:
    """The spellings of a mailbox name that are one mailbox on some server (INBOX in any case)."""
    out = {name}
    for sep in _SEPARATORS:
        head, s, rest = name.rstrip(sep).partition(sep)
        if head.upper() == "INBOX":
            head = "INBOX"
        out.add(head + s + rest)
    return tuple(sorted(out))


def _same(a: str, b: str) -> bool:
    return bool(set(_canonical(a)) & set(_canonical(b)))


def _static_destinations(rule: ast.Rule) -> Iterator[tuple[MailboxAction, str]]:
    """The mailbox actions of a rule whose destination is written out in full (no placeholder)."""
    for action in rule.actions:
        if isinstance(action, MailboxAction) and action.dest is not None and action.dest.is_literal:
            yield action, action.dest.raw


def loop_warnings(rules: Sequence[ast.Rule]) -> list[Diagnostic]:
    """Sender-chosen top-level mailboxes, rules filing into their own mailbox, arrival cycles."""
    out: list[Diagnostic] = []
    for rule in rules:
        for action in rule.actions:
            dest = action.dest if isinstance(action, MailboxAction) else None
            if dest is not None and sender_picks_top_level(dest):
                out.append(
                    Diagnostic(
                        dest.span,
                        f'the mailbox name "{dest.raw}" starts with a value from the message: '
                        "its sender can pick any top-level mailbox (INBOX, Trash, Junk...); put a "
                        f'fixed folder first, e.g. "Filed/{dest.raw}"',
                        severity="warning",
                    )
                )
        for action, name in _static_destinations(rule):
            watched = next((m for m in rule.mailboxes if _same(name, m)), None)
            if watched is not None:
                why = (
                    " (on arrival it would come in again as new mail, without end)"
                    if isinstance(rule.trigger, ast.OnArrival)
                    else ""
                )
                out.append(
                    Diagnostic(
                        action.span,
                        f'rule "{rule.name}" reads "{watched}" and files into it: this action is '
                        f"always skipped{why}",
                        severity="warning",
                    )
                )
    out.extend(_arrival_cycles(rules))
    return out


def _arrival_cycles(rules: Sequence[ast.Rule]) -> list[Diagnostic]:
    """Arrival rules that pass mail round a circle of mailboxes (A -> B -> A): each message would
    go round for ever (moves) or multiply (copies). One warning per circle (a strongly connected
    set of mailboxes), on the first action in it."""
    scopes = {a for r in rules for a in r.accounts} | {None}
    seen: set[frozenset[str]] = set()
    out: list[Diagnostic] = []
    for scope in sorted(scopes, key=lambda s: (s is None, s or "")):
        edges: dict[str, list[Edge]] = defaultdict(list)
        for rule in rules:
            if not isinstance(rule.trigger, ast.OnArrival):
                continue
            if rule.accounts and (scope is None or scope not in rule.accounts):
                continue
            for action, dest in _static_destinations(rule):
                for source in rule.mailboxes:
                    if not _same(source, dest):
                        edges[_canonical(source)[0]].append((_canonical(dest)[0], rule, action))
        for component in _components(edges):
            if len(component) < 2 or component in seen:
                continue
            seen.add(component)
            inside = [(r, a) for n in component for d, r, a in edges.get(n, []) if d in component]
            inside.sort(key=lambda ra: (ra[1].span.file, ra[1].span.line, ra[1].span.column))
            rule, action = inside[0]
            names = ", ".join(dict.fromkeys(f'"{r.name}"' for r, _ in inside))
            boxes = ", ".join(f'"{m}"' for m in sorted(component))
            out.append(
                Diagnostic(
                    action.span,
                    f"arrival rules {names} file mail round a circle of mailboxes ({boxes}): "
                    "a message they all match would go round without end",
                    severity="warning",
                )
            )
    return out


Edge = tuple[str, ast.Rule, MailboxAction]


def _components(edges: dict[str, list[Edge]]) -> list[frozenset[str]]:
    """The strongly connected components of the mailbox graph (Tarjan, iterative: linear)."""
    nodes = sorted(set(edges) | {d for out in edges.values() for d, _, _ in out})
    # each node's distinct successors, listed once (rebuilding them at every step was quadratic
    # in the rules that file out of one mailbox: 7,500 out of INBOX took most of `check`)
    succs = {n: list(dict.fromkeys(d for d, _, _ in out)) for n, out in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            succ = succs.get(node, [])
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp = set()
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.add(top)
                    if top == node:
                        break
                found.append(frozenset(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found
