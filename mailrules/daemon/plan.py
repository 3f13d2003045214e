"""What the daemon watches, on how many connections: the watched mailboxes of each account (arrival
rules, `watch = [...]`, never Gmail's All Mail or Spam unless named), the IDLE/poll split within
`max_connections`, and the budgets refused at load."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mailrules.accounts import mailboxes_of, rules_for
from mailrules.config import AccountSettings
from mailrules.dsl import ast as A
from mailrules.imap import gmail

#: The triggers a mailbox watcher serves: new mail, and flags someone else changed (daemon/flagwatch.py).
WATCHED = A.OnArrival | A.FlagChange


def plan_connections(watched: int, budget: int, scheduled: bool) -> tuple[int, int]:
    """(mailboxes that get their own IDLE connection, connections used in all).

    One connection is kept for scheduled runs when there are any; if the rest cannot give every
    watched mailbox its own, one of them polls the overflow in turn.
    """
    reserve = 1 if scheduled else 0
    available = budget - reserve
    if watched == 0:
        return 0, reserve
    if watched <= available:
        return watched, watched + reserve
    idle = max(0, available - 1)
    return idle, idle + 1 + reserve


def has_scheduled(rules: Sequence[A.Rule], account: str) -> bool:
    """Whether a rule with a schedule (not `on arrival`, `on flag change` or `manually`) is in scope
    for `account`."""
    return any(not isinstance(r.trigger, WATCHED | A.Manually) for r in rules_for(rules, account))


def unwatched(
    rules: Sequence[A.Rule],
    accounts: Mapping[str, AccountSettings],
    special_use: Mapping[str, Mapping[str, str]],
) -> list[tuple[str, str, str]]:
    """(account, mailbox, why) for each mailbox of a watched rule that is not watched: on
    Gmail (`special_use`: the accounts' special uses, known once connected), All Mail holds every
    message again and Spam is spam (imap/gmail.py), unless the account's `watch` names it."""
    arrival = [r for r in rules if isinstance(r.trigger, WATCHED)]
    out = []
    for name, uses in special_use.items():
        for mailbox in mailboxes_of(arrival, name):
            why = gmail.never_watched(mailbox, dict(uses))
            if why is not None and mailbox not in accounts[name].watch:
                out.append((name, mailbox, why))
    return out


def watched(
    rules: Sequence[A.Rule],
    accounts: Mapping[str, AccountSettings],
    special_use: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, list[str]]:
    """Per account: the mailboxes of its `on arrival` and `on flag change` rules but the
    `unwatched`, then its `watch`."""
    dropped = {(a, m) for a, m, _ in unwatched(rules, accounts, special_use or {})}
    arrival = [r for r in rules if isinstance(r.trigger, WATCHED)]
    out: dict[str, list[str]] = {}
    for name, acct in accounts.items():
        boxes = [m for m in mailboxes_of(arrival, name) if (name, m) not in dropped]
        boxes += [m for m in acct.watch if m not in boxes]
        if boxes:
            out[name] = boxes
    return out


def budget_problems(
    rules: Sequence[A.Rule], accounts: Mapping[str, AccountSettings], boxes: Mapping[str, Sequence[str]]
) -> list[str]:
    """Accounts whose max_connections cannot hold what the rules need (refused at load); `boxes`:
    the watched mailboxes of each account (`watched`)."""
    out = []
    for name, mine in boxes.items():
        budget = accounts[name].max_connections
        sched = has_scheduled(rules, name)
        if plan_connections(len(mine), budget, sched)[1] > budget:
            out.append(
                f"account {name}: max_connections = {budget} is too small: watching "
                f"needs 1 connection{' and scheduled rules 1 more' if sched else ''}"
            )
    return out
