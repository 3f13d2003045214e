"""OAuth2 tokens of daemons sharing the accounts (issue 14): only the owner refreshes.

The suite's authorization server rotates refresh tokens (each use invalidates the one used), as
Microsoft's does. Two daemons ("replicas") keep the tokens of one account fresh: only the one that
owns the account refreshes; after a takeover the new owner refreshes with the token the old one
rotated, read from the shared token store. Two stores that are not shared break at the first
rotation: why operators must share them (docs/operations.md, *OAuth2 in a cluster*).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailrules.config import AccountSettings, load_config
from mailrules.oauth.accounts import TokenManagers
from tests.oauth_server import OAuthTestServer

USER = "me@example.org"


@pytest.fixture
def server() -> Iterator[OAuthTestServer]:
    with OAuthTestServer(access_lifetime=600) as s:
        yield s


def account(directory: Path, server: OAuthTestServer, store: Path, refresh: str) -> AccountSettings:
    directory.mkdir(exist_ok=True)
    path = directory / "mailrules.toml"
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
token_store = "{store}"
""",
        encoding="utf-8",
    )
    return load_config(path, env={"RT": refresh}).accounts["lab"]


def test_only_the_owner_refreshes_and_a_new_owner_uses_the_rotated_token(
    tmp_path: Path, server: OAuthTestServer
) -> None:
    refresh = server.grant(USER)["refresh_token"]
    shared = tmp_path / "shared" / "lab.json"  # the shared volume both daemons mount
    now = [time.time()]
    replicas = {name: TokenManagers(clock=lambda: now[0], sleep=lambda s: None) for name in ("a", "b")}
    owner = {"lab": "a"}
    for name, managers in replicas.items():
        assert managers.for_account(account(tmp_path / name, server, shared, refresh)) is not None

    def keep(name: str) -> float:
        return replicas[name].refresh_due(lambda acct: owner[acct] == name)

    keep("a")  # the first token, obtained by the owner
    keep("b")  # not its account: nothing asked of the server
    assert server.requests["refresh_token"] == 1
    now[0] += 550  # due (under 60 s of 600 left)
    keep("b")
    assert server.requests["refresh_token"] == 1
    keep("a")
    assert server.requests["refresh_token"] == 2  # rotated: the first refresh token is dead now

    owner["lab"] = "b"  # a takeover
    now[0] += 550
    keep("a")
    assert server.requests["refresh_token"] == 2
    keep("b")  # reads the store first: the token a rotated, not the dead one
    assert server.requests["refresh_token"] == 3
    assert not replicas["b"].login_required() and not replicas["a"].login_required()


def test_stores_that_are_not_shared_break_at_the_first_rotation(
    tmp_path: Path, server: OAuthTestServer
) -> None:
    refresh = server.grant(USER)["refresh_token"]
    now = [time.time()]
    a = TokenManagers(clock=lambda: now[0], sleep=lambda s: None)
    b = TokenManagers(clock=lambda: now[0], sleep=lambda s: None)
    assert a.for_account(account(tmp_path / "a", server, tmp_path / "a" / "lab.json", refresh))
    assert b.for_account(account(tmp_path / "b", server, tmp_path / "b" / "lab.json", refresh))
    a.refresh_due()  # a's store holds the rotated refresh token; b's knows only the dead one
    b.refresh_due()
    assert "lab" in b.login_required() and not a.login_required()
