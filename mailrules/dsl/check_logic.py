"""Cheap logic over conditions: span-free shapes, contradictions (never matches), rule shadowing."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from itertools import combinations
from typing import Any

from mailrules.dsl import ast, unparse

# Bounds of each age unit in minutes (months and years vary; use the safe side of each bound).
_UNIT_MIN = {
    "minutes": 1,
    "hours": 60,
    "days": 1440,
    "weeks": 10080,
    "months": 28 * 1440,
    "years": 365 * 1440,
}
_UNIT_MAX = {
    "minutes": 1,
    "hours": 60,
    "days": 1440,
    "weeks": 10080,
    "months": 31 * 1440,
    "years": 366 * 1440,
}

_SPAN_FIELDS = ("span", "name_span")


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        fields = dataclasses.fields(cls)
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields if f.name not in _SPAN_FIELDS)
    return names


def shape(node: Any) -> Any:
    """A hashable, span-free structural key of an AST value (structural equality ignoring spans)."""
    if isinstance(node, tuple):
        return tuple(shape(x) for x in node)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        cls = type(node)
        return (cls.__name__, *(shape(getattr(node, n)) for n in _field_names(cls)))
    return node


def conjuncts(cond: ast.Condition) -> list[ast.Condition]:
    """The top-level conjunction of a condition, nested Ands flattened."""
    if isinstance(cond, ast.And):
        return [c for item in cond.items for c in conjuncts(item)]
    return [cond]


def contradiction(cond: ast.Condition) -> str | None:
    """Why `cond` can never be true (cheap, incomplete), or None when no reason was found."""
    if isinstance(cond, ast.Not) and isinstance(cond.item, ast.All):
        return "'not all' matches nothing"
    if isinstance(cond, ast.Or):
        reasons = [contradiction(c) for c in cond.items]
        return reasons[0] if all(reasons) else None
    if isinstance(cond, ast.Not):
        return None
    items = conjuncts(cond)
    for item in items:
        if not isinstance(item, ast.And):
            inner = contradiction(item) if isinstance(item, (ast.Or, ast.Not)) else None
            if inner:
                return inner
    return (
        _flag_clash(items)
        or _negation_clash(items)
        or _size_clash(items)
        or _age_clash(items)
        or (_date_clash(items, "received") or _date_clash(items, "sent"))
    )


def _flag_clash(items: list[ast.Condition]) -> str | None:
    seen: dict[str, bool] = {}
    for item in items:
        flag, present = None, True
        if isinstance(item, ast.FlagTest):
            flag, present = item.flag, item.present
        elif isinstance(item, ast.Not) and isinstance(item.item, ast.FlagTest):
            flag, present = item.item.flag, not item.item.present
        if flag is None:
            continue
        if seen.get(flag, present) != present:
            word = flag.lstrip("\\").lower()
            return f"it asks for a message both {word} and not {word}"
        seen[flag] = present
    return None


def _negation_clash(items: list[ast.Condition]) -> str | None:
    if not any(isinstance(i, ast.Not) for i in items):
        return None
    shapes = {shape(i) for i in items if not isinstance(i, ast.Not)}
    for item in items:
        if isinstance(item, ast.Not) and shape(item.item) in shapes:
            return "it asks for a test and its negation"
    return None


def _size_clash(items: list[ast.Condition]) -> str | None:
    lo, hi = 0, None
    for item in items:
        if isinstance(item, ast.SizeTest):
            if item.op == ">":
                lo = max(lo, item.bytes + 1)
            elif item.op == ">=":
                lo = max(lo, item.bytes)
            elif item.op == "<":
                hi = item.bytes - 1 if hi is None else min(hi, item.bytes - 1)
            else:
                hi = item.bytes if hi is None else min(hi, item.bytes)
    if hi is not None and lo > hi:
        return "no size satisfies its size tests"
    return None


def _age_clash(items: list[ast.Condition]) -> str | None:
    older = [i for i in items if isinstance(i, ast.AgeTest) and i.older]
    newer = [i for i in items if isinstance(i, ast.AgeTest) and not i.older]
    for o in older:  # age > o and age < n is empty when o >= n for sure
        for n in newer:
            if o.amount * _UNIT_MIN[o.unit] >= n.amount * _UNIT_MAX[n.unit]:
                return f"no message is both {unparse.atom(o)} and {unparse.atom(n)}"
    return None


def _date_clash(items: list[ast.Condition], which: str) -> str | None:
    lo, hi = dt.date.min, dt.date.max
    for item in items:
        if isinstance(item, ast.DateTest) and item.which == which:
            if item.relation in ("after", "on"):
                day = item.date if item.relation == "on" else _shift(item.date, 1)
                lo = max(lo, day)
            if item.relation in ("before", "on"):
                day = item.date if item.relation == "on" else _shift(item.date, -1)
                hi = min(hi, day)
    if lo > hi:
        return f"no {which} date satisfies its {which} tests"
    return None


def _shift(day: dt.date, days: int) -> dt.date:
    try:
        return day + dt.timedelta(days=days)
    except OverflowError:
        return day


#: Placeholders that always have a value ({year}... fall back to the sent date, then to now).
_ALWAYS_FILLED = frozenset({"year", "month", "day"})


def _certainly_removes(action: ast.Action) -> bool:
    """A removing action that cannot fail for want of a template value ({list} may be missing)."""
    if isinstance(action, ast.Stop | ast.Delete):
        return True
    if isinstance(action, ast.Move | ast.Archive):
        dest = action.dest
        return dest is None or all(
            not isinstance(p, ast.Placeholder) or p.name in _ALWAYS_FILLED for p in dest.parts
        )
    return False


def always_removes(rule: ast.Rule) -> bool:
    """Whether a rule takes every message it matches away from later rules (no limit guard).

    A move whose mailbox name needs `{list}`, `{from.domain}` or `{match.N}` fails for a message
    without that value, which later rules then still see: it does not count.
    """
    return rule.limit is None and any(_certainly_removes(a) for a in rule.actions)


def _scope_key(mailbox: str) -> str:
    return "INBOX" if mailbox.upper() == "INBOX" else mailbox


def covers(earlier: ast.Rule, later: ast.Rule) -> bool:
    """Whether `earlier` sees every message `later` sees (mailboxes and accounts)."""
    if not {_scope_key(m) for m in later.mailboxes} <= {_scope_key(m) for m in earlier.mailboxes}:
        return False
    if not earlier.accounts:
        return True
    return bool(later.accounts) and set(later.accounts) <= set(earlier.accounts)


def _subsets(keys: frozenset[Any], limit: int = 10) -> Iterator[frozenset[Any]]:
    items = list(keys)
    if len(items) > limit:  # too many to enumerate: the whole set, the empty set and singletons
        yield keys
        yield frozenset()
        yield from (frozenset([i]) for i in items)
        return
    for k in range(len(items) + 1):
        for combo in combinations(items, k):
            yield frozenset(combo)


def find_shadowed(rules: tuple[ast.Rule, ...]) -> list[tuple[ast.Rule, ast.Rule]]:
    """(later, earlier) pairs where every message `later` matches was already taken by `earlier`."""
    index: dict[tuple[str, frozenset[Any]], list[ast.Rule]] = {}
    out: list[tuple[ast.Rule, ast.Rule]] = []
    for rule in rules:
        if isinstance(rule.trigger, ast.Manually):
            continue  # a manual rule runs alone, when asked for: nothing runs before it
        # What runs before a rule on the same messages (language.md, Triggers): every arrival rule
        # before it (every flag-change rule, for one); for a group's rule, the group's rules before
        # it; a scheduled rule outside a group runs alone, so no rule comes before it.
        if isinstance(rule.trigger, ast.OnArrival):
            kind = "arrival"
        elif isinstance(rule.trigger, ast.FlagChange):
            kind = "flag change"
        elif rule.group is not None:
            kind = "group " + rule.group.casefold()
        else:
            kind = f"alone {id(rule)}"
        parts = frozenset(shape(c) for c in conjuncts(rule.condition) if not isinstance(c, ast.All))
        found: ast.Rule | None = None
        for subset in _subsets(parts):
            for earlier in index.get((kind, subset), ()):
                if covers(earlier, rule) and (found is None or _pos(earlier) < _pos(found)):
                    found = earlier
        if found is not None:
            out.append((rule, found))
        if always_removes(rule):
            index.setdefault((kind, parts), []).append(rule)
    return out


def _pos(rule: ast.Rule) -> tuple[str, int, int]:
    return (rule.span.file, rule.span.line, rule.span.column)
