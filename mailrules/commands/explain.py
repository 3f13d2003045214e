"""`mailrules explain`: for every rule, its scope, trigger, SEARCH as sent, residual and actions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from mailrules.compile.dialect import Dialect
from mailrules.compile.explain import explain_condition, format_needs, format_search
from mailrules.compile.plan import plan_condition
from mailrules.compile.refusal import server_refusal
from mailrules.dsl import ast as A
from mailrules.dsl import unparse
from mailrules.imap import names


def _trigger(t: A.Trigger) -> str:
    """The trigger as written; `manually` says how such a rule is run, `on flag change` on what."""
    text = unparse.trigger(t)
    if isinstance(t, A.FlagChange):
        return f"{text} (the messages someone else changed: UID FETCH ... (CHANGEDSINCE mark))"
    return f"{text} (mailrules run --rule NAME)" if isinstance(t, A.Manually) else text


def explain_rule(rule: A.Rule, dialect: Dialect, *, now: dt.datetime, tz: dt.tzinfo) -> str:
    """One rule's block of `explain` output (a rule this server cannot answer says why)."""
    accounts = ", ".join(rule.accounts) if rule.accounts else "every account"
    mailboxes = ", ".join(unparse.quote(m) for m in rule.mailboxes)
    lines = [
        f"rule {unparse.quote(rule.name)}  ({rule.span.short})",
        f"  scope:    {mailboxes} of {accounts}",
        f"  trigger:  {_trigger(rule.trigger)}"
        + (f" (group {unparse.quote(rule.group)}: its rules in order)" if rule.group is not None else ""),
    ]
    refusal = server_refusal(rule.condition, dialect)
    if refusal is None and isinstance(rule.trigger, A.FlagChange) and not dialect.condstore:
        refusal = "the server lacks CONDSTORE (RFC 7162), which `on flag change` needs"
    if refusal is not None:
        lines.append(f"  refused:  {refusal}: the rule does not run on such a server")
    else:
        plan = plan_condition(rule.condition, dialect, now, tz)
        lines += [
            f"  search:   {format_search(plan, dialect)}",
            f"  residual: {explain_condition(plan.residual)}",
            f"  fetch:    {format_needs(plan.needs)}",
        ]
    lines.append(f"  actions:  {'; '.join(unparse.action(a) for a in rule.actions)}")
    if rule.limit is not None:
        lines.append(f"  limit:    acts on at most {rule.limit} messages per run (else on none)")
    return "\n".join(lines)


def names_block(rules: Sequence[A.Rule], server: str) -> list[str]:
    """How the rules' mailbox names map on `server` (NAMESPACE as measured, names.KNOWN_NAMESPACES),
    as comment lines; a server not measured says so (doctor shows the mapping once connected)."""
    ns = names.KNOWN_NAMESPACES.get(server)
    if ns is None:
        return [
            f"# mailbox names: not known for a {server} server without a connection; "
            "`mailrules doctor` shows how they map"
        ]
    return ["# " + line for line in names.describe(ns, [n for n, _ in names.rule_mailboxes(rules)])]


def explain_rule_set(rules: Sequence[A.Rule], dialect: Dialect, *, now: dt.datetime, tz: dt.tzinfo) -> str:
    """Every rule's block, separated by blank lines, headed by the dialect used and how mailbox names
    map on that server."""
    head = [
        f"# planned for a {dialect.name} server; relative dates as of {now:%Y-%m-%d %H:%M %Z}",
        *names_block(rules, dialect.name),
    ]
    return "\n\n".join(["\n".join(head), *(explain_rule(r, dialect, now=now, tz=tz) for r in rules)])
