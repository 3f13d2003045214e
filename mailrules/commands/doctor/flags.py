"""`mailrules doctor`'s row for `on flag change` rules: refused on an account without CONDSTORE."""

from __future__ import annotations

from collections.abc import Sequence

from mailrules.commands.doctor.report import Check
from mailrules.config import AccountSettings
from mailrules.dsl import ast as A
from mailrules.dsl import unparse
from mailrules.imap.modseq import condstore_problem
from mailrules.imap.session import ImapSession


def flag_change_rows(
    session: ImapSession, account: AccountSettings, rules: Sequence[A.Rule] | None
) -> list[Check]:
    """One row when a flag-change rule applies to `account`: OK with CONDSTORE, FAIL without it
    (the daemon refuses those rules for the account and runs the others, language.md)."""
    mine = [
        r
        for r in rules or ()
        if isinstance(r.trigger, A.FlagChange) and (not r.accounts or account.name in r.accounts)
    ]
    if not mine:
        return []
    names = ", ".join(unparse.quote(r.name) for r in mine)
    problem = condstore_problem(session, 0)  # the capability; a NOMODSEQ mailbox shows at SELECT
    if problem is None:
        return [Check("on flag change", "OK", f"{len(mine)} rule(s) ({names}): CONDSTORE present")]
    return [
        Check(
            "on flag change",
            "FAIL",
            f"rule(s) {names} refused for this account: {problem}",
            hint="use a server with CONDSTORE (Dovecot, Cyrus, Gmail, Fastmail), or a scheduled rule",
        )
    ]
