"""`mailrules doctor`: the configuration, the rules and the state, then each account's probes in order.

A probe module (imap.py, smtp.py) gives one function of the `Probe` shape; `PROBES` runs them in
order for every account, each appending its rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress

from mailrules.commands.doctor.imap import imap_checks
from mailrules.commands.doctor.net import Clock
from mailrules.commands.doctor.oauth import oauth_checks
from mailrules.commands.doctor.report import AccountReport, Check, Report
from mailrules.commands.doctor.smtp import smtp_checks
from mailrules.config import AccountSettings, Settings
from mailrules.dsl import ast as A
from mailrules.errors import StateError
from mailrules.oauth.accounts import process_tokens
from mailrules.oauth.shared import state_token_stores
from mailrules.redact import redact
from mailrules.state.health import check_state

#: (account, the rules that apply to it or None when the rules did not load, timeout, rows to append to)
Probe = Callable[[AccountSettings, list[A.Rule] | None, float, list[Check]], None]

#: What is checked for each account, in this order.
PROBES: tuple[Probe, ...] = (oauth_checks, imap_checks, smtp_checks)


def run_doctor(settings: Settings, *, accounts: Sequence[str] = (), timeout: float = 10.0) -> Report:
    """Check the rules, then every (selected) account: IMAP from DNS to mailboxes, and SMTP when set."""
    from mailrules.dsl.loader import load_rule_set

    report = Report()
    report.general.append(Check("config", "OK", str(settings.config_path)))
    report.general += [Check("config warning", "WARN", w) for w in settings.warnings]
    clock = Clock()
    loaded = load_rule_set(settings.rules)
    rules: list[A.Rule] | None = list(loaded.rule_set.rules)
    if loaded.ok:
        n = len(loaded.rule_set.rules)
        report.general.append(Check("rules", "OK", f"{n} rules from {settings.rules}", clock.ms()))
    else:
        rules = None
        report.general.append(
            Check(
                "rules",
                "FAIL",
                f"{len(loaded.errors)} errors in {settings.rules}",
                clock.ms(),
                f"run `mailrules check {settings.rules}` to see them; mailbox checks are skipped",
            )
        )
    report.general += [Check(f.check, f.status, f.result, None, f.hint) for f in check_state(settings.state)]
    with ExitStack() as stack:
        # Daemons sharing a PostgreSQL state keep the OAuth2 tokens in it: look there (if it
        # cannot be opened, check_state said why, and the token files are looked at instead).
        with suppress(StateError):
            process_tokens().stores = stack.enter_context(state_token_stores(settings))
        for name, account in settings.accounts.items():
            if accounts and name not in accounts:
                continue
            report.accounts.append(check_account(account, rules, timeout=timeout))
    process_tokens().stores = None
    return report


def check_account(
    account: AccountSettings, rules: list[A.Rule] | None, *, timeout: float = 10.0
) -> AccountReport:
    """Every probe of `PROBES` on one account: IMAP (DNS, TCP, TLS, login, capabilities, mailboxes),
    then SMTP."""
    target = f"{account.username}@{account.host}:{account.port}, tls = {account.tls}"
    out = AccountReport(account.name, target)
    secrets = tuple(s.reveal() for s in (account.password, account.smtp and account.smtp.password) if s)
    mine = None if rules is None else [r for r in rules if not r.accounts or account.name in r.accounts]
    for probe in PROBES:
        probe(account, mine, timeout, out.checks)
    for c in out.checks:  # belt and braces: nothing a server echoed may show a password
        c.result, c.hint = redact(c.result, secrets), redact(c.hint, secrets)
    return out
