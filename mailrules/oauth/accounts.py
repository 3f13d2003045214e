"""OAuth2 accounts of one process: their token managers built from the configuration, one per
account, shared by every IMAP and SMTP connection of it, and told to an observer (the metrics)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from mailrules.config.model import AccountSettings, OAuth2Settings, Secret
from mailrules.oauth.errors import OAuthError
from mailrules.oauth.store import Tokens

if TYPE_CHECKING:
    from mailrules.oauth.client import ClientSettings
    from mailrules.oauth.manager import StoreFor, TokenManager, TokenStorage

log = logging.getLogger(__name__)

#: `mailrules_auth_failures_total{reason}`: why an OAuth2 login did not happen (a fixed set).
#: refused: the server refused the access token; expired: it ended a session whose token ran out;
#: invalid_grant: the authorization server refused the refresh token; no_token: never logged in;
#: unavailable: the token endpoint did not answer (after its retries); error: anything else
#: (an error answer, the token store).
AUTH_FAILURE_REASONS = ("refused", "expired", "invalid_grant", "no_token", "unavailable", "error")
#: How long `TokenManagers.keep_fresh` sleeps at most between two looks (a stopped account is looked
#: at this often: a login another process saved brings it back), and at least.
KEEP_MAX_WAIT, KEEP_MIN_WAIT = 60.0, 0.5


class OAuthObserver(Protocol):
    """What the metrics are told about the accounts' tokens (mailrules/daemon/metrics.py)."""

    def oauth_refresh(self, account: str, outcome: str) -> None:
        """A refresh ended with `outcome` (mailrules.oauth.manager.OUTCOMES)."""

    def oauth_tokens(self, account: str, expires_at: float | None) -> None:
        """The account's access token now expires at `expires_at` (Unix time; None: unknown or none)."""

    def auth_failure(self, account: str, reason: str) -> None:
        """An OAuth2 login failed for one of AUTH_FAILURE_REASONS."""


def client_settings(settings: OAuth2Settings) -> ClientSettings:
    """The token client's settings from an account's `[oauth2]` table."""
    from mailrules.oauth.client import ClientSettings

    return ClientSettings(
        token_url=settings.token_url,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        scopes=settings.scopes,
        authorization_url=settings.authorization_url,
        device_authorization_url=settings.device_authorization_url,
        authorize_params=settings.authorize_params,
    )


def failure_reason(exc: BaseException) -> str:
    """The AUTH_FAILURE_REASONS value of a token failure."""
    from mailrules.oauth.errors import InvalidGrant, LoginRequired, TokenEndpointUnavailable

    if isinstance(exc, InvalidGrant):
        return "invalid_grant"
    if isinstance(exc, LoginRequired):
        return "no_token"
    if isinstance(exc, TokenEndpointUnavailable):
        return "unavailable"
    return "error"


class AccountTokens:
    """One account's tokens as its connections see them (the `TokenSource` of ImapSession and
    SmtpSender): the current access token, a refresh when a server refused it or ended a session
    because it expired, and every failure told to the observer."""

    def __init__(
        self, account: str, manager: TokenManager, mechanism: str, observer: OAuthObserver | None = None
    ) -> None:
        self.account = account
        self.manager = manager
        self.mechanism = mechanism
        self.observer = observer
        self._lock = threading.Lock()
        self._expired: Secret | None = None  # a token a server said had expired (BYE)

    def __repr__(self) -> str:
        return f"AccountTokens(account={self.account!r})"

    @property
    def login_required(self) -> str | None:
        """Why the account is stopped until `mailrules auth login ACCOUNT` (None: it is not)."""
        return self.manager.login_required

    def access_token(self) -> Secret:
        """The token to log in with; refreshed first when a server said the current one expired.
        Raises OAuthError (InvalidGrant, LoginRequired, TokenEndpointUnavailable...)."""
        with self._lock:
            expired, self._expired = self._expired, None
        if expired is not None:
            return self._guard(lambda: self.manager.force_refresh(expired))
        return self._guard(self.manager.access_token)

    def force_refresh(self, refused: Secret | None = None) -> Secret:
        """A new token because a server refused `refused` (counted as reason "refused")."""
        self._failure("refused")
        return self._guard(lambda: self.manager.force_refresh(refused))

    def expired(self, token: Secret | None = None) -> None:
        """A server ended a session because its token expired (`BYE ... AccessTokenExpired`): the next
        login refreshes first, even if the token looks valid here (a clock ahead of the server's)."""
        self._failure("expired")
        current = token
        if current is None:
            tokens = self.manager.tokens()
            current = tokens.access_token if tokens is not None else None
        with self._lock:
            self._expired = current

    def _guard(self, get: Callable[[], Secret]) -> Secret:
        try:
            return get()
        except OAuthError as exc:
            self._failure(failure_reason(exc))
            raise

    def _failure(self, reason: str) -> None:
        if self.observer is None:
            return
        try:
            self.observer.auth_failure(self.account, reason)
        except Exception:  # an observer never breaks the work (house style 13)
            log.exception("auth_failure hook failed")


class TokenManagers:
    """The OAuth2 accounts of a process, each with one token manager (built on first use)."""

    def __init__(
        self, observer: OAuthObserver | None = None, stores: StoreFor | None = None, **manager_options: Any
    ) -> None:
        self.observer = observer
        #: where each account's tokens are kept (None: its token file); set before the first use:
        #: the rows of a PostgreSQL state shared by daemons (oauth/shared.py)
        self.stores = stores
        self._options = manager_options  # TokenManager keywords (tests: clock, margin, attempts...)
        self._lock = threading.Lock()
        self._accounts: dict[tuple[str, OAuth2Settings], AccountTokens] = {}

    def for_account(self, account: AccountSettings) -> AccountTokens | None:
        """The account's tokens; None for an account that logs in with a password."""
        if account.oauth2 is None:
            return None
        key = (account.name, account.oauth2)
        with self._lock:
            found = self._accounts.get(key)
            if found is None:
                found = self._accounts[key] = AccountTokens(
                    account.name,
                    make_manager(
                        account.name,
                        account.oauth2,
                        self.observer,
                        store=None if self.stores is None else self.stores(account.name, account.oauth2),
                        **self._options,
                    ),
                    account.oauth2.mechanism,
                    self.observer,
                )
        return found

    def keep_fresh(self, stop: threading.Event, owns: Callable[[str], bool] | None = None) -> None:
        """Until `stop`: refresh each account's token when it is due, whether or not a connection
        needs one (the daemon's thread). A session that outlives its token (IDLE) does not leave the
        refresh token unused for months (Microsoft's expire after 90 days unused), a refused refresh
        token shows at once, and the expiry metric stays in the future while all is well.

        `owns(account)`: only the accounts this daemon works on now (several daemons sharing a
        PostgreSQL state): one refresher per account, so that a provider rotating refresh tokens
        never sees two daemons race with the same one (docs/operations.md, *OAuth2 in a cluster*)."""
        while not stop.wait(self.refresh_due(owns)):
            pass

    def refresh_due(self, owns: Callable[[str], bool] | None = None) -> float:
        """Refresh the tokens that are due (of the accounts `owns`, when given); seconds until the
        next one is (KEEP_MIN_WAIT..KEEP_MAX_WAIT)."""
        with self._lock:
            found = [t for t in self._accounts.values() if owns is None or owns(t.account)]
        wait = KEEP_MAX_WAIT
        for tokens in found:
            manager = tokens.manager
            try:
                manager.access_token()  # refreshes when due; takes up a login another process saved
            except OAuthError as exc:
                if manager.login_required is None:  # a refused or missing login is logged once, there
                    log.warning("account %s: %s; the token is refreshed again later", tokens.account, exc)
                continue
            due = manager.due_in()
            if due is not None:
                wait = min(wait, due)
        return max(KEEP_MIN_WAIT, wait)

    def login_required(self) -> dict[str, str]:
        """The accounts stopped until `mailrules auth login ACCOUNT`, and why."""
        with self._lock:
            found = list(self._accounts.values())
        return {t.account: t.login_required for t in found if t.login_required is not None}


def make_manager(
    name: str,
    settings: OAuth2Settings,
    observer: OAuthObserver | None = None,
    *,
    store: TokenStorage | None = None,
    **options: Any,
) -> TokenManager:
    """A token manager for the account `name`, reporting to `observer`, its tokens in `store`
    (default: its token file)."""
    from mailrules.oauth.client import TokenClient
    from mailrules.oauth.manager import TokenManager
    from mailrules.oauth.store import TokenStore

    def on_tokens(account: str, tokens: Tokens | None) -> None:
        if observer is not None:
            observer.oauth_tokens(account, None if tokens is None else tokens.expires_at)

    return TokenManager(
        name,
        TokenClient(client_settings(settings)),
        TokenStore(settings.token_store) if store is None else store,
        flow=settings.flow,
        initial_refresh=settings.refresh_token,
        on_refresh=observer.oauth_refresh if observer is not None else None,
        on_tokens=on_tokens,
        **options,
    )


_PROCESS = TokenManagers()


def process_tokens() -> TokenManagers:
    """The token managers of this process for whatever builds a connection without its own
    (`mailrules undo`, doctor): the daemon and `mailrules run` keep theirs, with an observer."""
    return _PROCESS
