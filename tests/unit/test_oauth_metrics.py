"""The OAuth2 metrics: series of the OAuth2 accounts at 0 from the start, what the token managers
report, label values only from the configuration and fixed sets."""

from __future__ import annotations

from mailrules.daemon.metrics import Metrics
from mailrules.oauth.accounts import AUTH_FAILURE_REASONS
from mailrules.oauth.manager import OUTCOMES


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_series_of_the_oauth2_accounts_exist_at_zero() -> None:
    m = Metrics()
    m.oauth.init(["office"])
    assert value(m, "mailrules_oauth_token_expiry_timestamp_seconds", account="office") == 0
    for outcome in OUTCOMES:
        assert value(m, "mailrules_oauth_refreshes_total", account="office", outcome=outcome) == 0
    for reason in AUTH_FAILURE_REASONS:
        assert value(m, "mailrules_auth_failures_total", account="office", reason=reason) == 0
    assert value(m, "mailrules_oauth_token_expiry_timestamp_seconds", account="work") is None


def test_what_the_token_managers_report() -> None:
    m = Metrics()
    m.oauth.init(["office"])
    m.oauth.oauth_tokens("office", 1_900_000_000.5)
    m.oauth.oauth_refresh("office", "ok")
    m.oauth.oauth_refresh("office", "invalid_grant")
    m.oauth.auth_failure("office", "invalid_grant")
    m.oauth.auth_failure("office", "refused")
    assert value(m, "mailrules_oauth_token_expiry_timestamp_seconds", account="office") == 1_900_000_000.5
    assert value(m, "mailrules_oauth_refreshes_total", account="office", outcome="invalid_grant") == 1
    assert value(m, "mailrules_auth_failures_total", account="office", reason="refused") == 1
    m.oauth.oauth_tokens("office", None)  # logged out
    assert value(m, "mailrules_oauth_token_expiry_timestamp_seconds", account="office") == 0


def test_unknown_accounts_and_values_are_other() -> None:
    m = Metrics()
    m.oauth.init(["office"])
    m.oauth.oauth_refresh("someone", "weird")
    m.oauth.auth_failure("office", "weird")
    assert value(m, "mailrules_oauth_refreshes_total", account="other", outcome="other") == 1
    assert value(m, "mailrules_auth_failures_total", account="office", reason="other") == 1
