"""OAuth2 logins on a real Dovecot (oauth2 passdb, local JWT validation) through mailrules' SASL
exchange on an imapclient connection: each mechanism, the error legs, refused -> refresh -> in."""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

from mailrules.config.model import Secret
from mailrules.imap.sasl import OAuthLoginError, authenticate_oauth, choose_mechanism, client_response
from mailrules.oauth import ClientSettings, TokenClient, TokenManager, Tokens, TokenStore
from mailrules.oauth.client import tokens_from_response
from mailrules.tls import ssl_context
from tests.integration.oauth_dovecot import OAuthDovecot
from tests.oauth_server import DEFAULT_CLIENT, OAuthTestServer

pytestmark = pytest.mark.integration
MECHANISMS = ["XOAUTH2", "OAUTHBEARER"]


Connect = Callable[[], IMAPClient]


@pytest.fixture
def connect(dovecot_oauth: OAuthDovecot) -> Iterator[Connect]:
    """A factory of STARTTLS connections (socket timeout 10 s: a hang fails, it does not stall)."""
    opened: list[IMAPClient] = []

    def factory() -> IMAPClient:
        client = IMAPClient(dovecot_oauth.host, dovecot_oauth.imap_port, ssl=False, timeout=10)
        opened.append(client)
        client.starttls(ssl_context(dovecot_oauth.ca_file))
        return client

    yield factory
    for client in opened:
        with contextlib.suppress(OSError):
            client.shutdown()


def login(
    client: IMAPClient, server: OAuthDovecot, mech: str, user: str, token: str, sasl_ir: bool | None = None
) -> None:
    authenticate_oauth(client, mech, user, token, server.host, server.imap_port, sasl_ir=sasl_ir)


def caps(client: IMAPClient) -> list[str]:
    return [str(c) for c in client._imap.capabilities]


@pytest.mark.parametrize("sasl_ir", [True, False], ids=["sasl-ir", "continuation"])
@pytest.mark.parametrize("mech", MECHANISMS)
def test_login_with_each_mechanism(
    dovecot_oauth: OAuthDovecot, connect: Connect, mech: str, sasl_ir: bool
) -> None:
    user = dovecot_oauth.fresh_user()
    token = dovecot_oauth.auth.grant(user)["access_token"]
    client = connect()
    login(client, dovecot_oauth, mech, user, token, sasl_ir=sasl_ir)
    assert client.select_folder("INBOX")[b"EXISTS"] == 0
    client.logout()
    assert f"user=<{user}>, method={mech}" in dovecot_oauth.log_text()


def test_auto_picks_oauthbearer_on_dovecot(connect: Connect) -> None:
    assert choose_mechanism(caps(connect()), "auto") == "OAUTHBEARER"


@pytest.mark.parametrize("mech", MECHANISMS)
@pytest.mark.parametrize("why", ["expired", "wrong-key", "other-user", "not-yet-valid"])
def test_a_refused_token_gets_the_error_leg_and_a_no_with_the_status(
    dovecot_oauth: OAuthDovecot, connect: Connect, mech: str, why: str
) -> None:
    user = dovecot_oauth.fresh_user()
    auth = dovecot_oauth.auth
    token = {
        "expired": lambda: auth.access_token(user, lifetime=-30),
        "wrong-key": lambda: auth.access_token(user, key=b"k" * 32),
        "other-user": lambda: auth.access_token("someone-else@example.org"),
        "not-yet-valid": lambda: auth.access_token(user, not_before=time.time() + 3600),
    }[why]()
    client = connect()
    with pytest.raises(OAuthLoginError) as info:
        login(client, dovecot_oauth, mech, user, token)
    err = info.value
    assert (err.kind, err.code) == ("auth", "AUTHENTICATIONFAILED")
    # Dovecot's challenges (imap-notes.md (e)): XOAUTH2 Google-style, OAUTHBEARER RFC 7628 §3.2.2.
    assert err.status == ("401" if mech == "XOAUTH2" else "invalid_token")
    if mech == "XOAUTH2":
        assert err.scope == "mail" and "(status=401, scope=mail)" in str(err)
    initial = base64.b64encode(client_response(mech, user, token, "h", 1)).decode()
    assert token not in str(err) and initial not in str(err)
    # The connection is still in step: the same client can log in with a good token.
    login(client, dovecot_oauth, mech, user, auth.grant(user)["access_token"])
    assert client.select_folder("INBOX")[b"EXISTS"] == 0


def _manager(auth: OAuthTestServer, tmp_path: Path, account: str) -> TokenManager:
    client = TokenClient(ClientSettings(auth.token_url, DEFAULT_CLIENT, scopes=("imap",)))
    return TokenManager(account, client, TokenStore(tmp_path / f"{account}.json"))


def test_a_refused_token_is_refreshed_once_and_the_login_succeeds(
    dovecot_oauth: OAuthDovecot, connect: Connect, tmp_path: Path
) -> None:
    user = dovecot_oauth.fresh_user()
    auth = dovecot_oauth.auth
    manager = _manager(auth, tmp_path, "lab")
    grant = auth.grant(user)
    # The store believes the token good for an hour; the server has revoked it (a password reset,
    # a policy change): only the server's refusal can tell.
    stale = auth.access_token(user, lifetime=-30)
    now = time.time()
    manager.save_login(Tokens(Secret(stale), now + 3600, now, Secret(grant["refresh_token"])))
    token = manager.access_token()
    assert token.reveal() == stale
    mech = choose_mechanism(caps(connect()), "auto")
    with pytest.raises(OAuthLoginError) as info:
        login(connect(), dovecot_oauth, mech, user, token.reveal())
    assert info.value.kind == "auth"
    fresh = manager.force_refresh(token)
    login(connect(), dovecot_oauth, mech, user, fresh.reveal())
    assert manager.refreshes == 1


def test_expiry_then_refresh_then_login_with_second_long_tokens(
    dovecot_oauth: OAuthDovecot, connect: Connect, tmp_path: Path
) -> None:
    user = dovecot_oauth.fresh_user()
    with dovecot_oauth.auth_server(access_lifetime=2) as auth:
        manager = _manager(auth, tmp_path, "short")
        manager.save_login(tokens_from_response(auth.grant(user), time.time(), ("imap",)))
        first = manager.access_token()
        login(connect(), dovecot_oauth, "XOAUTH2", user, first.reveal())
        time.sleep(4)  # past the token's exp (whole seconds, rounded up; Dovecot's own second too)
        with pytest.raises(OAuthLoginError):
            login(connect(), dovecot_oauth, "XOAUTH2", user, first.reveal())
        second = manager.access_token()  # due: refreshed ahead of use, the rotated token saved
        assert second != first
        login(connect(), dovecot_oauth, "OAUTHBEARER", user, second.reveal())
        assert len(auth.active_refresh_tokens(user)) == 1


def test_no_secret_reaches_a_log_line(
    dovecot_oauth: OAuthDovecot, connect: Connect, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # imapclient logs every line of the conversation at DEBUG
    # setup_logging (run in-process by CLI tests) leaves imapclient at INFO: ask for DEBUG by name
    caplog.set_level(logging.DEBUG, logger="imapclient")
    user = dovecot_oauth.fresh_user()
    sent: list[str] = []  # every SASL message, base64 as on the wire

    def logged_in(mech: str, token: str, sasl_ir: bool | None = None) -> None:
        sent.append(
            base64.b64encode(
                client_response(mech, user, token, dovecot_oauth.host, dovecot_oauth.imap_port)
            ).decode()
        )
        login(connect(), dovecot_oauth, mech, user, token, sasl_ir=sasl_ir)

    with dovecot_oauth.auth_server(access_lifetime=600) as auth:
        manager = _manager(auth, tmp_path, "grep")
        manager.save_login(tokens_from_response(auth.grant(user), time.time(), ("imap",)))
        for mech in MECHANISMS:
            token = manager.force_refresh()
            for sasl_ir in (True, False):
                logged_in(mech, token.reveal(), sasl_ir)
            with pytest.raises(OAuthLoginError) as info:
                logged_in(mech, auth.access_token(user, lifetime=-30))
            logging.getLogger("test").error("%s", info.value)
        auth.revoke(user)
        with pytest.raises(Exception) as refused:
            manager.force_refresh()
        logging.getLogger("test").error("%s", refused.value)
        secrets = auth.all_secrets()
    assert len(secrets) >= 8 and len(sent) == 6
    text = caplog.text
    assert "Logged in" in text  # the conversation was logged...
    for secret in [*secrets, *sent]:
        assert secret not in text  # ...but not one token, plain or in its SASL message
