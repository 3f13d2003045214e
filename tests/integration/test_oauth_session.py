"""An OAuth2 account's connections on a real Dovecot and a real SMTP server: ImapSession and
SmtpSender log in with the account's shared token (config -> TokenManagers -> AccountTokens),
a refused token is refreshed once, invalid_grant stops the account until a new login."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from mailrules.config import AccountSettings, load_config
from mailrules.config.model import Secret
from mailrules.imap.sasl import TokenUnavailable
from mailrules.imap.session import ConnectionParams, ImapSession
from mailrules.oauth.accounts import AccountTokens, TokenManagers
from mailrules.oauth.client import tokens_from_response
from mailrules.oauth.store import Tokens, TokenStore
from mailrules.smtp.compose import SmtpActionError
from mailrules.smtp.sender import SmtpParams, SmtpSender
from tests.integration.oauth_dovecot import OAuthDovecot
from tests.integration.smtp_oauth import oauth_smtp
from tests.oauth_server import OAuthTestServer

pytestmark = pytest.mark.integration
ORIGINAL = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n"


class Recorder:
    """The OAuthObserver the metrics implement, as lists."""

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


def account(
    tmp_path: Path,
    server: OAuthDovecot,
    auth: OAuthTestServer,
    user: str,
    *,
    mechanism: str = "auto",
    refresh: str | None = None,
    smtp_port: int | None = None,
) -> AccountSettings:
    """The account "lab" as a user writes it, loaded by the configuration loader."""
    smtp = (
        (
            f'[accounts.lab.smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\ntls = "none"\n'
            "allow_insecure = true\n"
        )
        if smtp_port
        else ""
    )
    text = f"""
[accounts.lab]
host = "127.0.0.1"
port = {server.imap_port}
tls = "starttls"
ca_file = "{server.ca_file}"
username = "{user}"
auth = "oauth2"
[accounts.lab.oauth2]
token_url = "{auth.token_url}"
client_id = "mailrules-test"
scopes = ["imap"]
mechanism = "{mechanism}"
{'refresh_token_env = "LAB_RT"' if refresh else ""}
{smtp}"""
    path = tmp_path / "mailrules.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env={"LAB_RT": refresh} if refresh else {}).accounts["lab"]


def connect(acct: AccountSettings, tokens: AccountTokens | None) -> ImapSession:
    return ImapSession.connect(
        ConnectionParams(
            acct.host,
            acct.port,
            acct.tls,
            acct.username,
            "",
            ca_file=str(acct.ca_file),
            name=acct.name,
            timeout=10,
            tokens=tokens,
        )
    )


def sender(acct: AccountSettings, tokens: AccountTokens | None) -> SmtpSender:
    assert acct.smtp is not None
    return SmtpSender(SmtpParams.from_settings(acct.smtp, timeout=10, tokens=tokens))


@pytest.mark.parametrize(
    ("mechanism", "method"), [("auto", "OAUTHBEARER"), ("xoauth2", "XOAUTH2"), ("oauthbearer", "OAUTHBEARER")]
)
def test_a_session_logs_in_with_the_refresh_token_obtained_elsewhere(
    dovecot_oauth: OAuthDovecot, tmp_path: Path, mechanism: str, method: str
) -> None:
    auth, user = dovecot_oauth.auth, dovecot_oauth.fresh_user()
    acct = account(
        tmp_path, dovecot_oauth, auth, user, mechanism=mechanism, refresh=auth.grant(user)["refresh_token"]
    )
    seen = Recorder()
    tokens = TokenManagers(seen).for_account(acct)
    assert tokens is not None
    with connect(acct, tokens) as session:
        assert session.select("INBOX").exists == 0
        assert session.token is not None and session.token.reveal() in session._secrets
    assert f"user=<{user}>, method={method}" in dovecot_oauth.log_text()
    assert seen.refreshes == {"ok": 1} and not seen.failures
    stored = TokenStore(tmp_path / "tokens" / "lab.json").load()  # beside state.db, rotated, 0600
    assert stored is not None and stored.refresh_token is not None
    assert (tmp_path / "tokens" / "lab.json").stat().st_mode & 0o777 == 0o600
    assert stored.refresh_token.reveal() != auth.issued[1]  # rotated: not the one obtained elsewhere


def test_a_token_the_server_refuses_is_refreshed_once(dovecot_oauth: OAuthDovecot, tmp_path: Path) -> None:
    auth, user = dovecot_oauth.auth, dovecot_oauth.fresh_user()
    acct = account(tmp_path, dovecot_oauth, auth, user)
    assert acct.oauth2 is not None
    # the store holds a token with an hour to go by its own account, which Dovecot refuses
    # (signed with another key: revoked, or a clock the server disagrees with)
    granted = tokens_from_response(auth.grant(user), time.time(), ("imap",))
    wrong = auth.access_token(user, key=b"k" * 32)
    TokenStore(acct.oauth2.token_store).save(
        Tokens(Secret(wrong), time.time() + 3600, time.time(), granted.refresh_token, ("imap",))
    )
    seen = Recorder()
    before = auth.requests["refresh_token"]
    with connect(acct, TokenManagers(seen).for_account(acct)) as session:
        assert session.token is not None and session.token.reveal() != wrong
    assert auth.requests["refresh_token"] == before + 1
    assert seen.failures == {"refused": 1} and seen.refreshes == {"ok": 1}


def test_connections_of_an_account_share_one_refresh(dovecot_oauth: OAuthDovecot, tmp_path: Path) -> None:
    user = dovecot_oauth.fresh_user()
    with dovecot_oauth.auth_server(access_lifetime=2) as auth:
        acct = account(tmp_path, dovecot_oauth, auth, user, refresh=auth.grant(user)["refresh_token"])
        tokens = TokenManagers().for_account(acct)
        connect(acct, tokens).logout()
        assert auth.requests["refresh_token"] == 1
        time.sleep(2.5)  # the token expired: the next logins need a new one
        errors: list[BaseException] = []

        def login() -> None:
            try:
                connect(acct, tokens).logout()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=login) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert auth.requests["refresh_token"] == 2  # one refresh for four connections


def test_invalid_grant_stops_the_account_until_a_new_login(
    dovecot_oauth: OAuthDovecot, tmp_path: Path
) -> None:
    user = dovecot_oauth.fresh_user()
    with dovecot_oauth.auth_server(access_lifetime=2) as auth:
        acct = account(tmp_path, dovecot_oauth, auth, user, refresh=auth.grant(user)["refresh_token"])
        seen = Recorder()
        managers = TokenManagers(seen)
        tokens = managers.for_account(acct)
        assert tokens is not None
        connect(acct, tokens).logout()
        auth.revoke(user)
        time.sleep(2.5)
        with pytest.raises(TokenUnavailable) as exc:
            connect(acct, tokens)
        assert exc.value.login_required and exc.value.kind == "auth"
        assert "account 'lab'" in str(exc.value) and "`mailrules auth login lab`" in str(exc.value)
        assert list(managers.login_required()) == ["lab"]
        asked = auth.requests["refresh_token"]
        with pytest.raises(TokenUnavailable):
            connect(acct, tokens)
        assert auth.requests["refresh_token"] == asked  # a refused refresh token is not sent again
        assert seen.failures["invalid_grant"] == 2 and seen.refreshes["invalid_grant"] == 1
        # `mailrules auth login lab` in another process writes the store: the account comes back
        assert acct.oauth2 is not None
        other = TokenManagers().for_account(acct)
        assert other is not None
        other.manager.save_login(tokens_from_response(auth.grant(user), time.time(), ("imap",)))
        connect(acct, tokens).logout()
        assert managers.login_required() == {}


def test_an_account_never_logged_in_says_how(dovecot_oauth: OAuthDovecot, tmp_path: Path) -> None:
    acct = account(tmp_path, dovecot_oauth, dovecot_oauth.auth, dovecot_oauth.fresh_user())
    seen = Recorder()
    with pytest.raises(TokenUnavailable) as exc:
        connect(acct, TokenManagers(seen).for_account(acct))
    assert exc.value.login_required and "run `mailrules auth login lab`" in str(exc.value)
    assert seen.failures == {"no_token": 1}


def test_smtp_xoauth2_with_the_accounts_token(dovecot_oauth: OAuthDovecot, tmp_path: Path) -> None:
    auth, user = dovecot_oauth.auth, dovecot_oauth.fresh_user()
    with oauth_smtp(auth.key) as (sink, port):
        acct = account(
            tmp_path, dovecot_oauth, auth, user, refresh=auth.grant(user)["refresh_token"], smtp_port=port
        )
        assert acct.smtp is not None and acct.smtp.oauth2 and acct.smtp.username == user
        tokens = TokenManagers().for_account(acct)
        before = auth.requests["refresh_token"]
        with connect(acct, tokens) as session:
            assert session.token is not None
        sender(acct, tokens).send_redirect(ORIGINAL, "boss@example.org", rule="r", idempotency_key="k1")
        assert [m.user for m in sink.messages] == [user]
        assert sink.logins == [(user, True)]
        assert auth.requests["refresh_token"] == before + 1  # IMAP and SMTP used the same token


def test_smtp_refused_token_is_refreshed_once_after_the_error_leg(
    dovecot_oauth: OAuthDovecot, tmp_path: Path
) -> None:
    auth, user = dovecot_oauth.auth, dovecot_oauth.fresh_user()
    with oauth_smtp(auth.key) as (sink, port):
        acct = account(tmp_path, dovecot_oauth, auth, user, smtp_port=port)
        assert acct.oauth2 is not None
        granted = tokens_from_response(auth.grant(user), time.time(), ("imap",))
        wrong = auth.access_token(user, key=b"k" * 32)
        TokenStore(acct.oauth2.token_store).save(
            Tokens(Secret(wrong), time.time() + 3600, time.time(), granted.refresh_token, ("imap",))
        )
        seen = Recorder()
        sender(acct, TokenManagers(seen).for_account(acct)).send_redirect(
            ORIGINAL, "boss@example.org", rule="r", idempotency_key="k2"
        )
        assert [ok for _, ok in sink.logins] == [False, True]
        assert sink.error_answers == [b""]  # the empty response, not the token again
        assert len(sink.messages) == 1
        assert seen.failures == {"refused": 1} and seen.refreshes == {"ok": 1}


def test_smtp_with_a_refused_refresh_token_fails_naming_the_fix(
    dovecot_oauth: OAuthDovecot, tmp_path: Path
) -> None:
    auth, user = dovecot_oauth.auth, dovecot_oauth.fresh_user()
    with oauth_smtp(auth.key) as (sink, port):
        refresh = auth.grant(user)["refresh_token"]
        auth.revoke(user)
        acct = account(tmp_path, dovecot_oauth, auth, user, refresh=refresh, smtp_port=port)
        with pytest.raises(SmtpActionError) as exc:
            sender(acct, TokenManagers().for_account(acct)).send_redirect(
                ORIGINAL, "boss@example.org", rule="r", idempotency_key="k3"
            )
        assert exc.value.kind == "auth" and "`mailrules auth login lab`" in str(exc.value)
        assert refresh not in str(exc.value) and sink.messages == []
