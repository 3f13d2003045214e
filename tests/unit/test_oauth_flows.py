"""The login flows against the suite's authorization server: authorization code + PKCE with a
loopback redirect (urllib plays the browser), device code, client credentials."""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from mailrules.config.model import Secret
from mailrules.oauth import (
    ClientSettings,
    DeviceAuthorization,
    InvalidGrant,
    OAuthError,
    TokenClient,
    login_authorization_code,
    login_client_credentials,
    login_device_code,
)
from mailrules.oauth.client import AuthorizationRequest
from tests.oauth_server import DEFAULT_CLIENT, DEVICE_GRANT, OAuthTestServer, decode_jwt


class FakeTime:
    """The server's and the poller's clock; `sleep` advances it instead of waiting."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def server(fake_time: FakeTime) -> Iterator[OAuthTestServer]:
    with OAuthTestServer(clock=fake_time, device_interval=5, device_lifetime=60) as s:
        yield s


def client_for(server: OAuthTestServer, authorize_params: tuple[tuple[str, str], ...] = ()) -> TokenClient:
    settings = ClientSettings(
        server.token_url,
        DEFAULT_CLIENT,
        scopes=("imap", "offline_access"),
        authorization_url=server.authorization_url,
        device_authorization_url=server.device_url,
        authorize_params=authorize_params,
    )
    return TokenClient(settings)


def browser(url: str) -> None:
    """What a browser does with the authorization URL: follow the redirect to the loopback listener."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        assert b"mailrules is logged in" in answer.read()


# -- authorization code + PKCE ----------------------------------------------------------------------


def test_authorization_code_with_pkce_and_a_loopback_redirect(
    server: OAuthTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    shown: list[str] = []

    def show(url: str) -> None:
        shown.append(url)
        browser(url)

    tokens = login_authorization_code(client_for(server), show, timeout=10)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(shown[0]).query))
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"].startswith("http://127.0.0.1:") and query["scope"] == "imap offline_access"
    assert decode_jwt(tokens.access_token.reveal(), server.key)["email"] == server.authorize_user
    assert tokens.refresh_token is not None and tokens.scope == ("imap", "offline_access")
    assert server.requests["authorization_code"] == 1
    for secret in server.all_secrets():
        assert secret not in caplog.text


def test_extra_authorize_params_reach_the_url(server: OAuthTestServer) -> None:
    client = client_for(server, authorize_params=(("access_type", "offline"), ("prompt", "consent")))
    request = client.authorization_request("http://127.0.0.1:1/")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(request.url).query))
    assert (query["access_type"], query["prompt"]) == ("offline", "consent")


def test_a_refused_authorization_is_an_error(server: OAuthTestServer) -> None:
    server.deny_authorization = True

    def show(url: str) -> None:
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert b"not completed" in answer.read()

    with pytest.raises(OAuthError, match="access_denied") as info:
        login_authorization_code(client_for(server), show, timeout=10)
    assert info.value.error == "access_denied"


def test_a_redirect_with_a_foreign_state_is_refused(server: OAuthTestServer) -> None:
    def show(url: str) -> None:
        redirect = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["redirect_uri"]
        urllib.request.urlopen(f"{redirect}?code=stolen&state=not-ours", timeout=10).read()

    with pytest.raises(OAuthError, match="state does not match"):
        login_authorization_code(client_for(server), show, timeout=10)
    assert server.requests["authorization_code"] == 0  # the foreign code was never exchanged


def test_no_redirect_times_out(server: OAuthTestServer) -> None:
    with pytest.raises(OAuthError, match="no redirect from the browser"):
        login_authorization_code(client_for(server), lambda url: None, timeout=0.2)


def test_the_server_checks_the_pkce_verifier(server: OAuthTestServer) -> None:
    client = client_for(server)
    request = client.authorization_request("http://127.0.0.1:9/")
    location = _no_follow(request.url)
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]
    forged = AuthorizationRequest(request.url, request.state, Secret("x" * 64), request.redirect_uri)
    with pytest.raises(InvalidGrant, match="PKCE"):
        client.exchange_code(code, forged)


def _no_follow(url: str) -> str:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    try:
        urllib.request.build_opener(NoRedirect).open(url, timeout=10)
    except urllib.error.HTTPError as exc:
        assert exc.code == 302
        return str(exc.headers["Location"])
    raise AssertionError("no redirect")


# -- device code ------------------------------------------------------------------------------------


def test_device_code_waits_for_the_approval(server: OAuthTestServer, fake_time: FakeTime) -> None:
    shown: list[DeviceAuthorization] = []
    polls = 0
    real_sleep = fake_time.sleep

    def sleep(seconds: float) -> None:
        nonlocal polls
        real_sleep(seconds)
        polls += 1
        if polls == 3:  # the user approves while the third poll is on its way
            server.approve(shown[0].user_code, "dev@example.org")

    tokens = login_device_code(client_for(server), shown.append, sleep=sleep, clock=fake_time)
    device = shown[0]
    assert device.verification_uri.endswith("/device/verify") and device.interval == 5
    assert decode_jwt(tokens.access_token.reveal(), server.key)["email"] == "dev@example.org"
    assert fake_time.sleeps == [5, 5, 5]
    assert server.requests[DEVICE_GRANT] == 3  # two authorization_pending, then the tokens
    assert "***" in repr(device) and device.device_code.reveal() not in repr(device)


def test_slow_down_adds_five_seconds(server: OAuthTestServer, fake_time: FakeTime) -> None:
    shown: list[DeviceAuthorization] = []
    calls = 0

    def sleep(seconds: float) -> None:
        nonlocal calls
        calls += 1
        fake_time.sleeps.append(seconds)
        # The first wait comes up a second short (a clock step): the server says slow_down.
        fake_time.now += seconds - 1 if calls == 1 else seconds
        if calls == 2:
            server.approve(shown[0].user_code, "dev@example.org")

    login_device_code(client_for(server), shown.append, sleep=sleep, clock=fake_time)
    assert fake_time.sleeps == [5, 10]


def test_an_unapproved_device_code_expires(server: OAuthTestServer, fake_time: FakeTime) -> None:
    with pytest.raises(OAuthError, match="expired before it was approved") as info:
        login_device_code(client_for(server), lambda d: None, sleep=fake_time.sleep, clock=fake_time)
    assert info.value.error == "expired_token"
    assert sum(fake_time.sleeps) <= 60 + 5


def test_a_denied_device_code_is_an_error(server: OAuthTestServer, fake_time: FakeTime) -> None:
    with pytest.raises(OAuthError, match="denied") as info:
        login_device_code(
            client_for(server), lambda d: server.deny(d.user_code), sleep=fake_time.sleep, clock=fake_time
        )
    assert info.value.error == "access_denied"


def test_device_polls_survive_a_few_network_failures(server: OAuthTestServer, fake_time: FakeTime) -> None:
    def show(device: DeviceAuthorization) -> None:
        server.approve(device.user_code, "dev@example.org")
        server.fail_next(2, "drop")

    tokens = login_device_code(client_for(server), show, sleep=fake_time.sleep, clock=fake_time)
    assert tokens.refresh_token is not None
    assert server.requests[DEVICE_GRANT] == 3


# -- client credentials -----------------------------------------------------------------------------


def test_client_credentials(server: OAuthTestServer) -> None:
    server.add_client("daemon-app", "app-secret-value", app_user="shared@example.org")
    settings = ClientSettings(
        server.token_url,
        "daemon-app",
        Secret("app-secret-value"),
        scopes=("https://outlook.office365.com/.default",),
    )
    tokens = login_client_credentials(TokenClient(settings))
    claims = decode_jwt(tokens.access_token.reveal(), server.key)
    assert claims["email"] == "shared@example.org"
    assert claims["scope"] == "https://outlook.office365.com/.default"
    assert tokens.refresh_token is None


def test_client_credentials_need_a_secret(server: OAuthTestServer) -> None:
    with pytest.raises(OAuthError, match="needs a client secret"):
        login_client_credentials(client_for(server))
