"""`mailrules doctor`'s OAuth2 probe: the settings, the stored tokens and their expiry, one refresh;
after the IMAP login (imap.py), the SASL mechanism the server offered and the one used."""

from __future__ import annotations

import dataclasses
import time
import urllib.parse

from mailrules.commands.doctor.net import Clock
from mailrules.commands.doctor.report import Check
from mailrules.config import AccountSettings
from mailrules.config.model import OAuth2Settings
from mailrules.dsl import ast as A
from mailrules.imap.session import ImapSession
from mailrules.oauth.errors import InvalidGrant, LoginRequired, OAuthError, TokenEndpointUnavailable
from mailrules.oauth.shared import token_storage
from mailrules.oauth.store import Tokens


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def oauth_checks(
    account: AccountSettings, rules: list[A.Rule] | None, timeout: float, rows: list[Check]
) -> None:
    """For an OAuth2 account (nothing for a password): settings, token store, expiry, a refresh.
    The refresh is real: a rotated refresh token is saved, as the daemon would."""
    o = account.oauth2
    if o is None:
        return
    host = urllib.parse.urlsplit(o.token_url).hostname or o.token_url
    rows.append(
        Check(
            "OAuth2",
            "INFO",
            f"flow {o.flow}, client {o.client_id}, token endpoint {host}, "
            f"scopes {' '.join(o.scopes) or '(none)'}, mechanism {o.mechanism}",
        )
    )
    login = f"run `mailrules auth login {account.name}`"
    try:
        stored = token_storage(account.name, o).load()  # a PostgreSQL state's row, else the file
    except OAuthError as exc:
        rows.append(Check("OAuth2 tokens", "FAIL", str(exc), hint=f"remove the file and {login}"))
        return
    if stored is None and o.refresh_token is None and o.flow != "client_credentials":
        rows.append(Check("OAuth2 tokens", "FAIL", f"none in {o.token_store}", hint=login))
        return
    if stored is None:
        given = "client credentials" if o.flow == "client_credentials" else "the configured refresh token"
        rows.append(Check("OAuth2 tokens", "INFO", f"none stored yet in {o.token_store}: {given} are used"))
    else:
        rows += _stored_rows(o, stored)
    rows.append(_refresh_row(account.name, o, timeout, login))


def _stored_rows(o: OAuth2Settings, stored: Tokens) -> list[Check]:
    out: list[Check] = []
    mode = o.token_store.stat().st_mode & 0o777 if o.token_store.exists() else 0o600
    refresh = "present" if stored.refresh_token is not None else "absent"
    text = f"in {o.token_store}; refresh token {refresh}; scopes {' '.join(stored.scope) or '(none given)'}"
    if mode & 0o077:
        out.append(
            Check("OAuth2 tokens", "WARN", f"{text}; mode {mode:o}", hint=f"chmod 600 {o.token_store}")
        )
    else:
        out.append(Check("OAuth2 tokens", "OK", text))
    now = time.time()
    if stored.expires_at is None:
        out.append(
            Check("OAuth2 token expiry", "INFO", "the server gave no lifetime: refreshed when refused")
        )
    elif stored.expires_at > now:
        out.append(
            Check(
                "OAuth2 token expiry",
                "OK",
                f"valid for {_span(stored.expires_at - now)}; "
                f"last refresh {_span(now - stored.obtained_at)} ago",
            )
        )
    else:
        out.append(
            Check(
                "OAuth2 token expiry",
                "INFO",
                f"expired {_span(now - stored.expires_at)} ago: refreshed at the next login",
            )
        )
    return out


def _refresh_row(name: str, o: OAuth2Settings, timeout: float, login: str) -> Check:
    from mailrules.oauth.accounts import client_settings
    from mailrules.oauth.client import TokenClient
    from mailrules.oauth.manager import TokenManager

    client = TokenClient(dataclasses.replace(client_settings(o), timeout=timeout))
    # One attempt: doctor says what happens now; the daemon retries with backoff.
    manager = TokenManager(
        name, client, token_storage(name, o), flow=o.flow, initial_refresh=o.refresh_token, attempts=1
    )
    clock = Clock()
    before = manager.tokens()
    try:
        manager.force_refresh()
    except (InvalidGrant, LoginRequired) as exc:
        return Check("OAuth2 refresh", "FAIL", str(exc), clock.ms(), login)
    except TokenEndpointUnavailable as exc:
        return Check(
            "OAuth2 refresh",
            "FAIL",
            str(exc),
            clock.ms(),
            f"the token endpoint {o.token_url} must be reachable from here (proxy, firewall, DNS)",
        )
    except OAuthError as exc:
        return Check(
            "OAuth2 refresh",
            "FAIL",
            str(exc),
            clock.ms(),
            "check client_id, client_secret, tenant and scopes against the app registration",
        )
    after = manager.tokens()
    valid = after.remaining(time.time()) if after is not None else None
    rotated = (
        before is not None
        and after is not None
        and before.refresh_token is not None
        and after.refresh_token != before.refresh_token
    )
    return Check(
        "OAuth2 refresh",
        "OK",
        "new access token"
        + (f", valid {_span(valid)}" if valid else "")
        + ("; the rotated refresh token is saved" if rotated else ""),
        clock.ms(),
    )


def sasl_rows(session: ImapSession) -> list[Check]:
    """After an OAuth2 login: the mechanism used, and those the server offered (none for a password)."""
    if session.mechanism is None:
        return []
    offered = ", ".join(session.offered) or "none"
    return [Check("SASL mechanism", "OK", f"{session.mechanism} (offered before login: {offered})")]
