"""The daemon's check at start: each account with work is connected once, before the rules run, to
learn its namespaces (the mailbox names check) and, on Gmail, its special uses.

The accounts are checked a few at a time (CHECKS_AT_ONCE), not one after another: with hundreds of
accounts the serial check was most of a daemon's start (a login each, ~40 ms with STARTTLS on
loopback, far more across a network), and a replica that starts slowly takes its share late.
One connection per account, so each account's own `max_connections` holds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from mailrules.accounts import Account
from mailrules.errors import MailrulesError
from mailrules.imap.names import Namespaces

log = logging.getLogger(__name__)

#: How many accounts the check at start connects to at once (bounded: a start must not open a
#: login storm on a shared server, nor a thread per account).
CHECKS_AT_ONCE = 16


def check_servers(
    accounts: Mapping[str, Account], *, at_once: int = CHECKS_AT_ONCE
) -> tuple[dict[str, Namespaces], dict[str, dict[str, str]]]:
    """Connect each of `accounts` once, `at_once` at a time: (namespaces, Gmail special uses) of
    those reached. An account that cannot be reached now is logged and left out: it is checked
    when a watcher or a firing connects."""
    namespaces: dict[str, Namespaces] = {}
    special_use: dict[str, dict[str, str]] = {}

    def check(name: str, account: Account) -> None:
        try:
            with account.open() as conn:
                namespaces[name] = conn.namespaces
                if conn.store.dialect.gmail:
                    special_use[name] = conn.store.special_use()
        except MailrulesError as exc:
            log.warning(
                "account %s: mailbox names not checked at start (%s); they are when it connects", name, exc
            )

    if len(accounts) <= 1:
        for name, account in accounts.items():
            check(name, account)
    else:
        with ThreadPoolExecutor(
            max_workers=max(1, min(at_once, len(accounts))), thread_name_prefix="check"
        ) as pool:
            for done in [pool.submit(check, name, account) for name, account in accounts.items()]:
                done.result()  # check() logs what it meets; anything else is a bug: raise it
    return {n: namespaces[n] for n in accounts if n in namespaces}, special_use
