"""`mailrules doctor` on an OAuth2 account: the token rows, a real refresh, the SASL mechanism, IMAP
login and SMTP AUTH XOAUTH2 with the token; a refused refresh token says how to fix it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailrules.cli import main
from mailrules.oauth.store import TokenStore
from tests.integration.oauth_dovecot import OAuthDovecot
from tests.integration.smtp_oauth import oauth_smtp
from tests.oauth_server import OAuthTestServer

pytestmark = pytest.mark.integration
RULES = 'rule "fwd" { when subject contains "receipt" then forward to "acc@example.org" }\n'


def doctor(
    tmp_path: Path, server: OAuthDovecot, auth: OAuthTestServer, user: str, refresh: str, smtp_port: int
) -> tuple[int, dict[str, Any], str]:
    (tmp_path / "rules.d").mkdir(exist_ok=True)
    (tmp_path / "rules.d" / "a.rules").write_text(RULES)
    (tmp_path / "rt").write_text(refresh)
    config = tmp_path / "mailrules.toml"
    config.write_text(f"""rules = "rules.d"
state = "state.db"
[accounts.a]
host = "127.0.0.1"
port = {server.imap_port}
tls = "starttls"
ca_file = "{server.ca_file}"
username = "{user}"
auth = "oauth2"
[accounts.a.oauth2]
token_url = "{auth.token_url}"
client_id = "mailrules-test"
scopes = ["imap"]
refresh_token_file = "rt"
[accounts.a.smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
allow_insecure = true
""")
    runner = CliRunner()
    result = runner.invoke(main, ["doctor", "--config", str(config), "--json"])
    data = json.loads(result.stdout) if result.stdout.startswith("{") else {}
    return result.exit_code, data, result.output


def rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in data["accounts"]["a"]["checks"]}


def test_doctor_checks_the_oauth2_path(dovecot_oauth: OAuthDovecot, tmp_path: Path) -> None:
    user = dovecot_oauth.fresh_user()
    with dovecot_oauth.auth_server(access_lifetime=600) as auth, oauth_smtp(auth.key) as (sink, port):
        refresh = auth.grant(user)["refresh_token"]
        code, data, output = doctor(tmp_path, dovecot_oauth, auth, user, refresh, port)
        assert code == 0, output
        checks = rows(data)
        assert checks["OAuth2"]["result"].startswith("flow authorization_code, client mailrules-test")
        assert checks["OAuth2 tokens"]["status"] == "INFO"  # none stored yet: the configured refresh token
        assert (
            checks["OAuth2 refresh"]["status"] == "OK"
            and "new access token, valid" in checks["OAuth2 refresh"]["result"]
        )
        assert checks["login"]["status"] == "OK"
        assert checks["SASL mechanism"]["result"].startswith("OAUTHBEARER (offered before login: ")
        assert "XOAUTH2" in checks["SASL mechanism"]["result"]
        assert checks["SMTP AUTH"]["result"] == f"authenticated as {user} (XOAUTH2, the account's token)"
        assert sink.logins == [(user, True)]
        assert auth.requests["refresh_token"] == 1  # doctor's refresh; the login used its token

        code, data, output = doctor(tmp_path, dovecot_oauth, auth, user, "unused-now", port)
        checks = rows(data)
        assert code == 0, output
        assert (
            checks["OAuth2 tokens"]["status"] == "OK"
            and "refresh token present" in checks["OAuth2 tokens"]["result"]
        )
        assert checks["OAuth2 token expiry"]["status"] == "OK"
        assert "the rotated refresh token is saved" in checks["OAuth2 refresh"]["result"]

        auth.revoke(user)
        code, data, output = doctor(tmp_path, dovecot_oauth, auth, user, "unused-now", port)
        checks = rows(data)
        assert code == 1
        assert checks["OAuth2 refresh"]["status"] == "FAIL"
        assert checks["OAuth2 refresh"]["hint"] == "run `mailrules auth login a`"
        stored = TokenStore(tmp_path / "tokens" / "a.json").load()
        assert stored is not None
        secrets = auth.all_secrets()
    everything = output + json.dumps(data)
    assert [s[:10] for s in secrets if s in everything] == []


def test_doctor_says_to_log_in_when_there_are_no_tokens(dovecot_oauth: OAuthDovecot, tmp_path: Path) -> None:
    user = dovecot_oauth.fresh_user()
    with dovecot_oauth.auth_server() as auth, oauth_smtp(auth.key) as (_, port):
        doctor(tmp_path, dovecot_oauth, auth, user, "x", port)  # writes the config
        config = tmp_path / "mailrules.toml"
        config.write_text(config.read_text().replace('refresh_token_file = "rt"\n', ""))
        result = CliRunner().invoke(main, ["doctor", "--config", str(config), "--json"])
        checks = rows(json.loads(result.stdout))
        assert result.exit_code == 1
        assert checks["OAuth2 tokens"]["status"] == "FAIL"
        assert checks["OAuth2 tokens"]["hint"] == "run `mailrules auth login a`"
        assert checks["login"]["status"] == "FAIL" and "mailrules auth login a" in checks["login"]["result"]
