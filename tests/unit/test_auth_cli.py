"""`mailrules auth login|status|logout` against the suite's authorization server: each flow, what
status shows (never a token), logout, and the refusals."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import webbrowser
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailrules.cli import main
from mailrules.commands.auth import status_lines
from mailrules.config import load_config
from mailrules.oauth.store import TokenStore
from tests.oauth_server import DEFAULT_CLIENT, OAuthTestServer, decode_jwt

USER = "me@example.org"


@pytest.fixture
def server() -> Iterator[OAuthTestServer]:
    with OAuthTestServer(device_interval=0, authorize_user=USER) as s:
        yield s


def config(tmp_path: Path, server: OAuthTestServer, flow: str, extra: str = "") -> Path:
    path = tmp_path / "mailrules.toml"
    path.write_text(
        f"""
[accounts.lab]
host = "127.0.0.1"
username = "{USER}"
auth = "oauth2"
[accounts.lab.oauth2]
token_url = "{server.token_url}"
authorization_url = "{server.authorization_url}"
device_authorization_url = "{server.device_url}"
client_id = "{DEFAULT_CLIENT}"
scopes = ["imap", "offline_access"]
flow = "{flow}"
{extra}
[accounts.pw]
host = "127.0.0.1"
username = "u"
password = "p"
""",
        encoding="utf-8",
    )
    return path


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def stored(tmp_path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((tmp_path / "tokens" / "lab.json").read_text())
    return data


def follow(url: str) -> bool:
    """The browser: the authorization endpoint redirects to the loopback listener."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        return bool(answer.status == 200)


def test_login_with_the_browser_then_status_then_logout(
    tmp_path: Path, server: OAuthTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webbrowser, "open", follow)
    path = config(tmp_path, server, "authorization_code")
    result = cli("auth", "login", "lab", "--config", str(path))
    assert result.exit_code == 0, result.output
    assert f"{server.authorization_url}?" in result.output and "logged in" in result.output
    tokens = stored(tmp_path)
    assert decode_jwt(str(tokens["access_token"]), server.key)["email"] == USER
    assert (tmp_path / "tokens" / "lab.json").stat().st_mode & 0o777 == 0o600

    shown = cli("auth", "status", "--config", str(path))
    assert shown.exit_code == 0, shown.output
    assert "lab: OAuth2, flow authorization_code, mechanism auto" in shown.output
    assert "access token:  valid until" in shown.output
    assert "scopes:        imap offline_access" in shown.output
    assert "last refresh:" in shown.output and "refresh token: present" in shown.output
    assert "pw: password login (no OAuth2)" in shown.output
    for secret in server.all_secrets():
        assert secret not in result.output and secret not in shown.output

    out = cli("auth", "logout", "lab", "--config", str(path))
    assert out.exit_code == 0 and "tokens removed" in out.output
    assert not (tmp_path / "tokens" / "lab.json").exists()
    again = cli("auth", "status", "lab", "--config", str(path))
    assert "access token:  none" in again.output and "run `mailrules auth login lab`" in again.output
    assert "no tokens stored" in cli("auth", "logout", "lab", "--config", str(path)).output


def test_no_browser_prints_the_address_and_waits_for_the_redirect(
    tmp_path: Path, server: OAuthTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_open(url: str) -> bool:
        raise AssertionError("--no-browser opened a browser")

    monkeypatch.setattr(webbrowser, "open", must_not_open)
    import mailrules.oauth.flows as flows

    real = flows.login_authorization_code

    def person(client: object, show: object, **kw: object) -> object:
        # the person copies the printed address into a browser
        def relay(url: str) -> None:
            show(url)  # type: ignore[operator]
            threading.Thread(target=follow, args=(url,), daemon=True).start()

        return real(client, relay, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(flows, "login_authorization_code", person)
    result = cli(
        "auth",
        "login",
        "lab",
        "--no-browser",
        "--config",
        str(config(tmp_path, server, "authorization_code")),
    )
    assert result.exit_code == 0, result.output
    assert "open this address in a browser" in result.output
    assert stored(tmp_path)["refresh_token"]


def test_device_code_login(tmp_path: Path, server: OAuthTestServer) -> None:
    def approve() -> None:
        for _ in range(500):
            codes = server.pending_user_codes()
            if codes:
                server.approve(codes[0], USER)
                return
            time.sleep(0.01)

    helper = threading.Thread(target=approve, daemon=True)
    helper.start()
    result = cli("auth", "login", "lab", "--config", str(config(tmp_path, server, "device_code")))
    helper.join(10)
    assert result.exit_code == 0, result.output
    assert f"open {server.url}" in result.output and "enter the code" in result.output
    assert server.requests["device_authorization"] == 1
    for secret in server.all_secrets():
        assert secret not in result.output  # the device code is not shown, only the user code


def test_client_credentials_login(tmp_path: Path, server: OAuthTestServer) -> None:
    server.add_client("app", secret="app-s3cret-value", app_user=USER)
    path = config(tmp_path, server, "client_credentials", 'client_secret = "app-s3cret-value"')
    text = path.read_text().replace(f'client_id = "{DEFAULT_CLIENT}"', 'client_id = "app"')
    path.write_text(text)
    result = cli("auth", "login", "lab", "--config", str(path))
    assert result.exit_code == 0, result.output
    assert stored(tmp_path)["refresh_token"] is None
    assert "app-s3cret-value" not in result.output
    assert "refresh token: absent" in cli("auth", "status", "lab", "--config", str(path)).output


def test_a_refused_login_exits_1_and_keeps_the_old_tokens(
    tmp_path: Path, server: OAuthTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config(tmp_path, server, "authorization_code")
    monkeypatch.setattr(webbrowser, "open", follow)
    assert cli("auth", "login", "lab", "--config", str(path)).exit_code == 0
    before = stored(tmp_path)
    server.deny_authorization = True
    result = cli("auth", "login", "lab", "--config", str(path))
    assert result.exit_code == 1 and "login failed" in result.output
    assert stored(tmp_path) == before


def test_password_and_unknown_accounts_are_refused(tmp_path: Path, server: OAuthTestServer) -> None:
    path = config(tmp_path, server, "authorization_code")
    result = cli("auth", "login", "pw", "--config", str(path))
    assert result.exit_code == 2 and "logs in with a password" in result.output
    assert cli("auth", "logout", "nope", "--config", str(path)).exit_code == 2
    assert cli("auth", "status", "nope", "--config", str(path)).exit_code == 2


def test_status_of_an_expired_token(tmp_path: Path, server: OAuthTestServer) -> None:
    from mailrules.oauth.client import tokens_from_response

    account = load_config(config(tmp_path, server, "device_code"), env={}).accounts["lab"]
    assert account.oauth2 is not None
    tokens = tokens_from_response(server.grant(USER, lifetime=60), 1_000_000.0, ("imap",))
    TokenStore(account.oauth2.token_store).save(tokens)
    lines = status_lines(account, now=1_000_000.0 + 3600)
    assert "  access token:  expired 1970-01-12 13:47:40 UTC (59 min ago)" in lines
    assert "  last refresh:  1970-01-12 13:46:40 UTC (60 min ago)" in lines
