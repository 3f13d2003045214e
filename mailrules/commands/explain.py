"""`mailrules explain`: for every rule, its scope, trigger, SEARCH as sent, residual and actions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from mailrules.commands.rule_tests import format_action
from mailrules.compile.dialect import Dialect
from mailrules.compile.explain import explain_condition, format_needs, format_search
from mailrules.compile.plan import plan_condition
from mailrules.dsl import ast as A

_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def trigger_text(t: A.Trigger) -> str:
    """The trigger as the language writes it."""
    match t:
        case A.OnArrival():
            return "on arrival"
        case A.Every(amount=n, unit=unit):
            return f"every {n} {unit}"
        case A.At(days=days, hour=h, minute=m):
            when = "day" if not days else ", ".join(_DAYS[d] for d in days)
            return f"every {when} at {h:02d}:{m:02d}"
        case A.Cron(expression=e):
            return f'cron "{e}"'
        case A.Manually():
            return "manually (mailrules run --rule NAME)"
    raise AssertionError(t)


def explain_rule(rule: A.Rule, dialect: Dialect, *, now: dt.datetime, tz: dt.tzinfo) -> str:
    """One rule's block of `explain` output."""
    plan = plan_condition(rule.condition, dialect, now, tz)
    accounts = ", ".join(rule.accounts) if rule.accounts else "every account"
    mailboxes = ", ".join(f'"{m}"' for m in rule.mailboxes)
    lines = [
        f'rule "{rule.name}"  ({rule.span.short})',
        f"  scope:    {mailboxes} of {accounts}",
        f"  trigger:  {trigger_text(rule.trigger)}",
        f"  search:   {format_search(plan, dialect)}",
        f"  residual: {explain_condition(plan.residual)}",
        f"  fetch:    {format_needs(plan.needs)}",
        f"  actions:  {'; '.join(format_action(a) for a in rule.actions)}",
    ]
    if rule.limit is not None:
        lines.append(f"  limit:    acts on at most {rule.limit} messages per run (else on none)")
    return "\n".join(lines)


def explain_rule_set(rules: Sequence[A.Rule], dialect: Dialect, *, now: dt.datetime, tz: dt.tzinfo) -> str:
    """Every rule's block, separated by blank lines, headed by the dialect used."""
    head = f"# planned for a {dialect.name} server; relative dates as of {now:%Y-%m-%d %H:%M %Z}"
    return "\n\n".join([head, *(explain_rule(r, dialect, now=now, tz=tz) for r in rules)])
