"""`mailrules auth login|status|logout`: the tokens of the accounts that log in with OAuth2."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailrules.config import AccountSettings, Settings
from mailrules.config.model import OAuth2Settings
from mailrules.errors import MailrulesError, StateError
from mailrules.logs import printable
from mailrules.oauth.accounts import make_manager
from mailrules.oauth.errors import OAuthError
from mailrules.oauth.shared import state_token_stores
from mailrules.oauth.store import Tokens, TokenStore

if TYPE_CHECKING:
    from mailrules.oauth.manager import StoreFor, TokenStorage

#: How long the authorization code flow waits for the browser's redirect.
REDIRECT_SECONDS = 300.0

Echo = Callable[[str], None]


class NotOAuth(MailrulesError):
    """The account logs in with a password: `mailrules auth` has nothing to do for it."""


def oauth2_of(account: AccountSettings) -> OAuth2Settings:
    if account.oauth2 is None:
        raise NotOAuth(
            f'account {account.name} logs in with a password; set auth = "oauth2" and an '
            f"[accounts.{account.name}.oauth2] table to use OAuth2"
        )
    return account.oauth2


@dataclass(frozen=True)
class LoginOptions:
    """How `auth login` talks to the person: `open_url` opens a browser (None: `--no-browser`, the
    URL is only printed); `port` of the loopback redirect listener (0: any free one)."""

    open_url: Callable[[str], object] | None = None
    port: int = 0
    timeout: float = REDIRECT_SECONDS


def login(
    account: AccountSettings,
    echo: Echo,
    options: LoginOptions = LoginOptions(),
    config: Settings | None = None,
) -> Tokens:
    """Obtain the account's first tokens with its `flow` and save them in its token store (they
    replace what was there): its file, or the state of `config` when it is PostgreSQL (daemons
    sharing it read them there, oauth/shared.py). Raises OAuthError (the login failed), NotOAuth,
    or StateError (the state cannot be opened)."""
    with _stores(config) as stores:
        return login_to(account, echo, options, stores)


def login_to(account: AccountSettings, echo: Echo, options: LoginOptions, stores: StoreFor | None) -> Tokens:
    """`login`, the tokens saved in `stores` (None: the account's token file)."""
    from mailrules.oauth.flows import login_authorization_code, login_client_credentials, login_device_code

    settings = oauth2_of(account)
    manager = make_manager(account.name, settings, store=_store(account.name, settings, stores))
    client = manager.client
    if settings.flow == "client_credentials":
        echo(f"account {account.name}: asking {settings.token_url} for an app-only token")
        tokens = login_client_credentials(client)
    elif settings.flow == "device_code":

        def show_code(device: object) -> None:
            from mailrules.oauth.client import DeviceAuthorization

            assert isinstance(device, DeviceAuthorization)
            minutes = max(1, round(device.expires_in / 60))
            echo(
                f"To sign in account {account.name}, open {device.verification_uri} in a browser on any "
                f"device and enter the code {printable(device.user_code)} (valid {minutes} min)."
            )
            if device.verification_uri_complete:
                echo(f"Or open {printable(device.verification_uri_complete)}")
            echo("Waiting for the sign-in...")

        tokens = login_device_code(client, show_code)
    else:

        def show_url(url: str) -> None:
            echo(f"To sign in account {account.name}, open this address in a browser on this machine:")
            echo(url)
            if options.open_url is not None:
                options.open_url(url)
            echo(f"Waiting up to {options.timeout / 60:.0f} min for the browser to come back...")

        tokens = login_authorization_code(client, show_url, port=options.port, timeout=options.timeout)
    if tokens.refresh_token is None and settings.flow != "client_credentials":
        echo(
            f"warning: the authorization server gave no refresh token: account {account.name} will need "
            "another login when this access token expires (Microsoft: add the offline_access scope; "
            "Google: access_type=offline, set by the preset)"
        )
    manager.save_login(tokens)
    where = f"{settings.token_store} (mode 0600)" if stores is None else manager.store.path
    echo(f"account {account.name}: logged in; tokens saved in {where}")
    return tokens


def _when(epoch: float, now: float) -> str:
    stamp = dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = epoch - now
    span = _span(abs(delta))
    return f"{stamp} (in {span})" if delta >= 0 else f"{stamp} ({span} ago)"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def status_lines(
    account: AccountSettings, now: float | None = None, stores: StoreFor | None = None
) -> list[str]:
    """What `auth status` says of one account: how it logs in, and of its tokens everything but
    the tokens (the store is read, nothing is refreshed)."""
    now = time.time() if now is None else now
    if account.oauth2 is None:
        return [f"{account.name}: password login (no OAuth2)"]
    o = account.oauth2
    lines = [
        f"{account.name}: OAuth2, flow {o.flow}, mechanism {o.mechanism}"
        + (" (OAUTHBEARER where the server offers it, else XOAUTH2)" if o.mechanism == "auto" else ""),
        f"  token store:   {o.token_store if stores is None else stores(account.name, o).path}",
    ]
    try:
        tokens = _store(account.name, o, stores).load()
    except OAuthError as exc:
        return [*lines, f"  error:         {exc}"]
    if tokens is None:
        refresh = "configured (refresh_token_file/_env), not used yet" if o.refresh_token else "none"
        return [
            *lines,
            "  access token:  none",
            f"  refresh token: {refresh}",
            f"  -> run `mailrules auth login {account.name}`",
        ]
    if tokens.expires_at is None:
        expiry = "no expiry given by the server"
    else:
        expiry = ("valid until " if tokens.expires_at > now else "expired ") + _when(tokens.expires_at, now)
    lines += [
        f"  access token:  {expiry}",
        f"  scopes:        {' '.join(tokens.scope) or '(none given)'}",
        f"  last refresh:  {_when(tokens.obtained_at, now)}",
        f"  refresh token: {'present' if tokens.refresh_token is not None else 'absent'}",
    ]
    return lines


def status(settings: Settings, names: Sequence[str], echo: Echo) -> None:
    """`auth status [ACCOUNT]`: every account named (default: all of the configuration); the
    tokens as the state keeps them when it is PostgreSQL."""
    try:
        with _stores(settings) as stores:
            for name in names or list(settings.accounts):
                for line in status_lines(settings.accounts[name], stores=stores):
                    echo(line)
    except StateError as exc:
        echo(f"  error:         {exc}")


def logout(account: AccountSettings, echo: Echo, config: Settings | None = None) -> bool:
    """Forget the account's tokens (its token store is removed; the state's row when `config`'s
    state is PostgreSQL); False when there were none. The authorization server is not told:
    revoke the app's access in the account's security settings."""
    with _stores(config) as stores:
        return logout_from(account, echo, stores)


def logout_from(account: AccountSettings, echo: Echo, stores: StoreFor | None) -> bool:
    """`logout` from `stores` (None: the account's token file)."""
    settings = oauth2_of(account)
    manager = make_manager(account.name, settings, store=_store(account.name, settings, stores))
    removed = manager.logout()  # under the store's lock
    where = settings.token_store if stores is None else manager.store.path
    if removed:
        echo(
            f"account {account.name}: tokens removed ({where}); the authorization "
            "server still knows the grant: revoke it in the account's security settings if needed"
        )
    else:
        echo(f"account {account.name}: no tokens stored ({where})")
    return removed


@contextmanager
def _stores(config: Settings | None) -> Iterator[StoreFor | None]:
    if config is None:
        yield None
        return
    with state_token_stores(config) as stores:
        yield stores


def _store(name: str, settings: OAuth2Settings, stores: StoreFor | None) -> TokenStorage:
    """The account's token file, or its row in a PostgreSQL state (`stores`)."""
    return TokenStore(settings.token_store) if stores is None else stores(name, settings)
