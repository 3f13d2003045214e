"""One account's access token, kept fresh: refreshed ahead of expiry, once more on demand when a
server refuses it, one refresh at a time, the rotated refresh token saved before the new access
token is handed out, network failures retried with backoff."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Literal, Protocol

from mailrules.config.model import OAuth2Settings, Secret
from mailrules.oauth.errors import InvalidGrant, LoginRequired, OAuthError, TokenEndpointUnavailable
from mailrules.oauth.store import Tokens

if TYPE_CHECKING:
    from mailrules.oauth.client import TokenClient  # authlib: loaded only where a client is made

log = logging.getLogger(__name__)

Flow = Literal["authorization_code", "device_code", "client_credentials"]


class TokenStorage(Protocol):
    """Where one account's tokens are kept: its file (`TokenStore`, oauth/store.py) or, for
    daemons sharing a PostgreSQL state, a row of it (`SharedTokenStore`, oauth/shared.py)."""

    @property
    def path(self) -> object:
        """Where, for messages (the file, or the state and table)."""

    def load(self) -> Tokens | None:
        """The stored tokens; None when there are none. TokenStoreError when unreadable."""

    def save(self, tokens: Tokens) -> None:
        """Replace the stored tokens, durably. TokenStoreError on failure."""

    def delete(self) -> bool:
        """Forget the tokens; False when there were none."""

    def locked(self) -> AbstractContextManager[None]:
        """One refresh at a time across every process sharing the store."""


#: account name and its `[oauth2]` settings -> where its tokens are kept (oauth/shared.py)
StoreFor = Callable[[str, OAuth2Settings], TokenStorage]


#: Outcomes passed to `on_refresh` (a metrics label: a fixed set).
OUTCOMES = ("ok", "invalid_grant", "unavailable", "error")


class TokenManager:
    """The tokens of one account, shared by every IMAP and SMTP connection of it (thread-safe).

    `access_token()` returns a token with time left, refreshing first when less than
    min(`margin` seconds, `fraction` of its lifetime) remains (60 s for an hour-long token; a
    fraction of a second for the test suite's two-second tokens). `force_refresh(refused)` is for
    a server that refused `refused` (AUTHENTICATIONFAILED, an expired-token BYE): the first caller
    refreshes, the others get the token it obtained. A refresh holds a lock per manager and the
    store's file lock, reloads the store first (another process may have rotated the refresh
    token), retries a token endpoint that is unavailable `attempts` times with jittered exponential
    backoff, and saves the new tokens before returning the access token.

    Without a refresh token (client credentials) the flow's grant is asked again. `initial_refresh`
    (a refresh token obtained elsewhere: `refresh_token_file`) is used when the store holds none.
    `on_refresh(account, outcome)` is told every refresh's outcome (one of OUTCOMES); `on_tokens(
    account, tokens)` the tokens each time they are read from the store, obtained or forgotten (the
    expiry metric).

    A refresh token the server refused (`invalid_grant`) is not sent again: until a login saves new
    tokens (`mailrules auth login ACCOUNT`, in this process or another sharing the store), every
    call raises InvalidGrant at once, and `login_required` says why. That refusal is logged once,
    as an ERROR naming the account and the command that fixes it.
    """

    def __init__(
        self,
        account: str,
        client: TokenClient,
        store: TokenStorage,
        *,
        flow: Flow = "authorization_code",
        initial_refresh: Secret | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        margin: float = 60.0,
        fraction: float = 0.1,
        attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        on_refresh: Callable[[str, str], None] | None = None,
        on_tokens: Callable[[str, Tokens | None], None] | None = None,
    ) -> None:
        self.account = account
        self.client = client
        self.store = store
        self.flow = flow
        self._initial_refresh = initial_refresh
        self._clock = clock
        self._sleep = sleep
        self.margin = margin
        self.fraction = fraction
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.on_refresh = on_refresh
        self.on_tokens = on_tokens
        self._lock = threading.Lock()
        self._refused: Secret | None = None  # the refresh token the server refused (invalid_grant)
        #: why the account cannot log in until `mailrules auth login` (None: it can)
        self.login_required: str | None = None
        self._tokens: Tokens | None = None
        self._unsaved = False  # tokens in memory the store does not have yet (a save failed)
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"TokenManager(account={self.account!r}, store={self.store!r})"

    # -- the facade ---------------------------------------------------------------------------------

    def access_token(self) -> Secret:
        """A current access token; refreshes first when it is due (see the class docstring).
        Raises InvalidGrant, LoginRequired, TokenEndpointUnavailable, TokenStoreError."""
        with self._lock:
            tokens = self._current()
            if tokens is not None and not self.due(tokens, self._clock()):
                return tokens.access_token
            return self._refresh_locked(tokens, refused=None)

    def force_refresh(self, refused: Secret | None = None) -> Secret:
        """A new access token because a server refused `refused` (None: refresh whatever we have).
        When another thread already replaced `refused`, its token is returned without a refresh."""
        with self._lock:
            tokens = self._current()
            if tokens is not None and refused is not None and tokens.access_token != refused:
                return tokens.access_token
            return self._refresh_locked(tokens, refused=refused if refused is not None else _ANY)

    def tokens(self) -> Tokens | None:
        """The tokens as they stand (for `mailrules auth status`, the expiry metric); no refresh."""
        with self._lock:
            return self._current()

    def save_login(self, tokens: Tokens) -> None:
        """Store the tokens a login flow obtained; they replace whatever was there."""
        with self._lock, self.store.locked():
            self.store.save(tokens)
            self._tokens, self._unsaved = tokens, False
            self._refused, self.login_required = None, None
        self._observe_tokens(tokens)

    def logout(self) -> bool:
        """Forget the tokens (memory and store); False when there were none stored."""
        with self._lock, self.store.locked():
            self._tokens, self._unsaved = None, False
            removed = self.store.delete()
        self._observe_tokens(None)
        return removed

    def due_in(self, now: float | None = None) -> float | None:
        """Seconds until the token in memory is due for a refresh (0: it is); None: no token yet, or
        no expiry known."""
        now = self._clock() if now is None else now
        with self._lock:
            tokens = self._tokens
        if tokens is None or tokens.expires_at is None:
            return None
        threshold = min(self.margin, self.fraction * max(tokens.lifetime or 0.0, 0.0))
        return max(0.0, tokens.expires_at - now - threshold)

    def due(self, tokens: Tokens, now: float) -> bool:
        """True when `tokens` should be refreshed before use."""
        remaining = tokens.remaining(now)
        if remaining is None:
            return False  # no expiry known: refreshed when a server refuses it
        lifetime = tokens.lifetime or 0.0
        return remaining <= min(self.margin, self.fraction * max(lifetime, 0.0))

    # -- inside the lock ----------------------------------------------------------------------------

    def _current(self) -> Tokens | None:
        if self._tokens is None:
            self._tokens = self.store.load()
            if self._tokens is not None:
                self._observe_tokens(self._tokens)
        elif self._unsaved:
            self._save(self._tokens)
        return self._tokens

    def _save(self, tokens: Tokens) -> None:
        self._tokens, self._unsaved = tokens, True
        self.store.save(tokens)  # raises TokenStoreError: the access token is not handed out
        self._unsaved = False
        self._observe_tokens(tokens)

    def _refresh_locked(self, tokens: Tokens | None, refused: object) -> Secret:
        with self.store.locked():
            # Another process sharing the store may have refreshed (and rotated) meanwhile.
            on_disk = self.store.load()
            if (
                on_disk is not None
                and not self._unsaved
                and (
                    tokens is None
                    or on_disk.refresh_token != tokens.refresh_token
                    or on_disk.obtained_at > tokens.obtained_at
                )
            ):
                tokens = self._tokens = on_disk
                self._observe_tokens(on_disk)
                if self._refused is not None and on_disk.refresh_token != self._refused:
                    self._refused, self.login_required = None, None  # a login since the refusal
                fresh = not self.due(on_disk, self._clock())
                if fresh and (refused is None or (refused is not _ANY and on_disk.access_token != refused)):
                    return on_disk.access_token
            new = self._obtain(tokens)
            self._save(new)
        self.refreshes += 1
        remaining = new.remaining(self._clock())
        log.info(
            "account %s: access token refreshed%s",
            self.account,
            "" if remaining is None else f", valid for {remaining:.0f} s",
        )
        return new.access_token

    def _obtain(self, tokens: Tokens | None) -> Tokens:
        refresh = tokens.refresh_token if tokens is not None and tokens.refresh_token else None
        if refresh is None and self.flow != "client_credentials":
            refresh = self._initial_refresh
        if refresh is None and self.flow != "client_credentials":
            message = (
                f"no OAuth2 tokens yet (store {self.store.path}); run `mailrules auth login {self.account}`"
            )
            if self.login_required != message:
                log.error("account %s: %s", self.account, message)
            self.login_required = message
            raise LoginRequired(message, account=self.account)
        if refresh is not None and refresh == self._refused:
            # Refused already: asking again would only be refused again (and counted as an attempt).
            raise InvalidGrant(f"{self.login_required}", account=self.account, error="invalid_grant")
        grant = refresh
        for attempt in range(1, self.attempts + 1):
            try:
                new = self.client.refresh(grant) if grant is not None else self.client.client_credentials()
            except TokenEndpointUnavailable as exc:
                if attempt == self.attempts:
                    self._observe("unavailable")
                    raise TokenEndpointUnavailable(
                        f"{exc} (tried {attempt} times)", account=self.account, error=exc.error
                    ) from None
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                log.warning(
                    "account %s: token refresh failed (%s); trying again in %.1f s", self.account, exc, delay
                )
                self._sleep(delay)
                continue
            except InvalidGrant as exc:
                self._observe("invalid_grant")
                self._refused = refresh
                self.login_required = f"{exc}; run `mailrules auth login {self.account}`"
                log.error(
                    "account %s: %s; the account is stopped until then", self.account, self.login_required
                )
                raise InvalidGrant(self.login_required, account=self.account, error=exc.error) from None
            except OAuthError as exc:
                self._observe("error")
                raise OAuthError(str(exc), account=self.account, error=exc.error) from None
            self._observe("ok")
            self._refused, self.login_required = None, None
            return new
        raise AssertionError("unreachable")  # the loop returns or raises

    def _observe_tokens(self, tokens: Tokens | None) -> None:
        if self.on_tokens is None:
            return
        try:
            self.on_tokens(self.account, tokens)
        except Exception:  # an observer never breaks the work (house style 13)
            log.exception("on_tokens hook failed")

    def _observe(self, outcome: str) -> None:
        if self.on_refresh is None:
            return
        try:
            self.on_refresh(self.account, outcome)
        except Exception:  # an observer never breaks the work (house style 13)
            log.exception("on_refresh hook failed")


_ANY = object()  # force_refresh() without a refused token: refresh whatever is current
