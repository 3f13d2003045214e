"""The OAuth2 metrics (docs/metrics.md): token expiry, refreshes and failed logins per account; the
observer the accounts' token managers report to (mailrules/oauth/accounts.py `OAuthObserver`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from mailrules.daemon.labels import OTHER, KnownAccounts
from mailrules.oauth.accounts import AUTH_FAILURE_REASONS
from mailrules.oauth.manager import OUTCOMES

log = logging.getLogger(__name__)


class OAuthMetrics:
    """`mailrules_oauth_token_expiry_timestamp_seconds{account}`, `mailrules_oauth_refreshes_total{
    account,outcome}`, `mailrules_auth_failures_total{account,reason}` in `registry`. Label values
    come from the configuration (`init`) and fixed sets; anything else is counted as `other`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._accounts = KnownAccounts()
        self.expiry = Gauge(
            "mailrules_oauth_token_expiry_timestamp_seconds",
            "When the OAuth2 access token of an account expires (Unix time); 0 before the first token "
            "is known, after a logout, or when the server gave no lifetime.",
            ["account"],
            registry=registry,
        )
        self.refreshes = Counter(
            "mailrules_oauth_refreshes_total",
            "OAuth2 token refreshes by outcome: ok; invalid_grant (the refresh token was refused: the "
            "account stops until `mailrules auth login ACCOUNT`); unavailable (the token endpoint did "
            "not answer after its retries); error (any other error answer).",
            ["account", "outcome"],
            registry=registry,
        )
        self.failures = Counter(
            "mailrules_auth_failures_total",
            "OAuth2 logins that could not be made as they were, by reason: refused (the server refused "
            "the access token; it is refreshed once), expired (the server ended a session, its token "
            "expired), invalid_grant, no_token (never logged in), unavailable, error.",
            ["account", "reason"],
            registry=registry,
        )

    def init(self, accounts: Iterable[str]) -> None:
        """Create the series of the OAuth2 accounts of the configuration (value 0)."""
        for account in self._accounts.add(accounts):
            self.expiry.labels(account)
            for outcome in OUTCOMES:
                self.refreshes.labels(account, outcome)
            for reason in AUTH_FAILURE_REASONS:
                self.failures.labels(account, reason)

    # -- OAuthObserver ----------------------------------------------------------------------------

    def oauth_refresh(self, account: str, outcome: str) -> None:
        """A refresh of `account`'s token ended with `outcome`."""
        self.refreshes.labels(self._accounts(account), outcome if outcome in OUTCOMES else OTHER).inc()

    def oauth_tokens(self, account: str, expires_at: float | None) -> None:
        """`account`'s access token now expires at `expires_at` (None: unknown, or no token)."""
        self.expiry.labels(self._accounts(account)).set(expires_at or 0)

    def auth_failure(self, account: str, reason: str) -> None:
        """An OAuth2 login of `account` failed for `reason`."""
        self.failures.labels(
            self._accounts(account), reason if reason in AUTH_FAILURE_REASONS else OTHER
        ).inc()
