"""An account's tokens as its connections see them (oauth/accounts.py) and the manager's stop after
invalid_grant, against the suite's authorization server: no IMAP server needed."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mailrules.config import AccountSettings, load_config
from mailrules.oauth.accounts import KEEP_MAX_WAIT, TokenManagers, client_settings, failure_reason
from mailrules.oauth.client import tokens_from_response
from mailrules.oauth.errors import InvalidGrant, LoginRequired, TokenEndpointUnavailable
from tests.oauth_server import OAuthTestServer

USER = "me@example.org"


class Recorder:
    def __init__(self) -> None:
        self.refreshes: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.expiries: list[float | None] = []

    def oauth_refresh(self, account: str, outcome: str) -> None:
        self.refreshes[outcome] += 1

    def oauth_tokens(self, account: str, expires_at: float | None) -> None:
        self.expiries.append(expires_at)

    def auth_failure(self, account: str, reason: str) -> None:
        self.failures[reason] += 1


@pytest.fixture
def server() -> Iterator[OAuthTestServer]:
    with OAuthTestServer(access_lifetime=600) as s:
        yield s


def settings(tmp_path: Path, server: OAuthTestServer, env: dict[str, str] | None = None) -> AccountSettings:
    path = tmp_path / "mailrules.toml"
    path.write_text(
        f"""
[accounts.lab]
host = "127.0.0.1"
username = "{USER}"
auth = "oauth2"
[accounts.lab.oauth2]
token_url = "{server.token_url}"
client_id = "mailrules-test"
scopes = ["imap"]
refresh_token_env = "RT"
""",
        encoding="utf-8",
    )
    return load_config(path, env=env or {"RT": server.grant(USER)["refresh_token"]}).accounts["lab"]


def test_one_manager_per_account_and_none_for_a_password_account(
    tmp_path: Path, server: OAuthTestServer
) -> None:
    acct = settings(tmp_path, server)
    managers = TokenManagers()
    first = managers.for_account(acct)
    assert first is not None and managers.for_account(acct) is first
    assert first.mechanism == "auto" and "lab" in repr(first)
    assert managers.for_account(replace(acct, auth="password", oauth2=None)) is None


def test_client_settings_follow_the_configuration(tmp_path: Path, server: OAuthTestServer) -> None:
    acct = settings(tmp_path, server)
    assert acct.oauth2 is not None
    client = client_settings(acct.oauth2)
    assert (client.token_url, client.client_id) == (server.token_url, "mailrules-test")
    assert client.scopes == ("imap",)


def test_the_expiry_and_every_refresh_reach_the_observer(tmp_path: Path, server: OAuthTestServer) -> None:
    seen = Recorder()
    tokens = TokenManagers(seen).for_account(settings(tmp_path, server))
    assert tokens is not None
    tokens.access_token()
    assert seen.refreshes == {"ok": 1}
    expiry = seen.expiries[-1]
    assert expiry is not None and time.time() + 500 < expiry < time.time() + 601


def test_a_session_that_ended_for_an_expired_token_refreshes_at_the_next_login(
    tmp_path: Path, server: OAuthTestServer
) -> None:
    seen = Recorder()
    tokens = TokenManagers(seen).for_account(settings(tmp_path, server))
    assert tokens is not None
    first = tokens.access_token()
    assert tokens.access_token() == first  # an hour left: no refresh
    tokens.expired(first)  # `BYE Session invalidated - AccessTokenExpired`
    second = tokens.access_token()
    assert second != first and seen.refreshes == {"ok": 2} and seen.failures == {"expired": 1}
    assert tokens.access_token() == second


def test_invalid_grant_is_logged_once_and_not_asked_again(
    tmp_path: Path, server: OAuthTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Recorder()
    tokens = TokenManagers(seen).for_account(settings(tmp_path, server))
    assert tokens is not None
    server.revoke(USER)
    caplog.set_level(logging.INFO, logger="mailrules.oauth")
    for _ in range(3):
        with pytest.raises(InvalidGrant):
            tokens.access_token()
    assert server.requests["refresh_token"] == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "account lab" in errors[0].getMessage() and "`mailrules auth login lab`" in errors[0].getMessage()
    assert tokens.login_required is not None and "mailrules auth login lab" in tokens.login_required
    assert seen.failures == {"invalid_grant": 3} and seen.refreshes == {"invalid_grant": 1}
    # a login (here: in this process) brings the account back
    tokens.manager.save_login(tokens_from_response(server.grant(USER), time.time(), ("imap",)))
    assert tokens.login_required is None
    tokens.access_token()


def test_no_tokens_at_all_is_login_required(tmp_path: Path, server: OAuthTestServer) -> None:
    seen = Recorder()
    tokens = TokenManagers(seen).for_account(settings(tmp_path, server, env={"RT": "x"}))
    assert tokens is not None
    tokens.manager._initial_refresh = None  # the configured refresh token is not there
    with pytest.raises(LoginRequired, match="run `mailrules auth login lab`"):
        tokens.access_token()
    assert seen.failures == {"no_token": 1} and tokens.login_required is not None


def test_failure_reasons() -> None:
    assert failure_reason(InvalidGrant("x")) == "invalid_grant"
    assert failure_reason(LoginRequired("x")) == "no_token"
    assert failure_reason(TokenEndpointUnavailable("x")) == "unavailable"
    assert failure_reason(ValueError("x")) == "error"


def test_an_account_whose_session_ended_for_its_token_refreshes_first(
    tmp_path: Path, server: OAuthTestServer
) -> None:
    from mailrules.accounts import Account
    from mailrules.imap.errors import TokenExpired

    acct = settings(tmp_path, server)
    oauth = TokenManagers()
    account = Account(acct, oauth=oauth)
    tokens = account.tokens
    assert tokens is not None and tokens is oauth.for_account(acct)
    assert account.sender is None  # no SMTP configured: nothing else to share the token with
    first = tokens.access_token()
    account.session_ended(TokenExpired("BYE Session invalidated - AccessTokenExpired"))
    assert tokens.access_token() != first
    assert server.requests["refresh_token"] == 2


def test_the_keeper_refreshes_what_is_due_and_sleeps_until_the_next(
    tmp_path: Path, server: OAuthTestServer
) -> None:
    now = [time.time()]
    managers = TokenManagers(clock=lambda: now[0], sleep=lambda s: None)
    tokens = managers.for_account(settings(tmp_path, server))
    assert tokens is not None
    assert managers.refresh_due() == KEEP_MAX_WAIT  # first token obtained; due in 540 s
    assert server.requests["refresh_token"] == 1
    now[0] += 530
    assert 9 <= managers.refresh_due() <= 11  # not due yet: no request, wake up when it is
    assert server.requests["refresh_token"] == 1
    now[0] += 15
    managers.refresh_due()  # 55 s left of 600: due (under 60 s)
    assert server.requests["refresh_token"] == 2
    server.revoke(USER)
    now[0] += 600
    assert managers.refresh_due() == KEEP_MAX_WAIT  # refused: stopped, looked at again in a minute
    assert managers.refresh_due() == KEEP_MAX_WAIT
    assert server.requests["refresh_token"] == 3 and list(managers.login_required()) == ["lab"]
    stop = threading.Event()
    stop.set()
    managers.keep_fresh(stop)  # one look, then it sees the stop
    assert server.requests["refresh_token"] == 3
