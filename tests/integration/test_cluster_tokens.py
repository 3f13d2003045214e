"""OAuth2 tokens in a PostgreSQL state shared by daemons (issue 14, oauth/shared.py).

Against the suite's authorization server, which rotates refresh tokens (each use invalidates the
one used): two daemons with token files of their own (no shared volume) keep one account's token
through the state; only the owner refreshes; after a takeover the new owner refreshes with the
token the old one rotated. A token file from before is imported once; a refresh holds the state's
lock, so two processes never refresh at once; `mailrules auth status` and `logout` use the rows.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailrules.config import AccountSettings, load_config
from mailrules.oauth.accounts import TokenManagers
from mailrules.oauth.client import tokens_from_response
from mailrules.oauth.shared import SharedTokenStore, stores_of
from mailrules.oauth.store import TokenStore
from mailrules.state.factory import token_rows
from mailrules.state.postgres import PostgresState
from tests.integration.postgres import PostgresServer
from tests.oauth_server import OAuthTestServer

pytestmark = pytest.mark.integration

USER = "me@example.org"


@pytest.fixture
def server() -> Iterator[OAuthTestServer]:
    with OAuthTestServer(access_lifetime=600) as s:
        yield s


def config(directory: Path, server: OAuthTestServer, dsn: str, refresh: str = "") -> Path:
    """A daemon's configuration: the shared state, its own token file (beside its config)."""
    directory.mkdir(exist_ok=True)
    path = directory / "mailrules.toml"
    path.write_text(
        f"""
state = "{dsn}"
[accounts.lab]
host = "127.0.0.1"
username = "{USER}"
auth = "oauth2"
[accounts.lab.oauth2]
token_url = "{server.token_url}"
client_id = "mailrules-test"
scopes = ["imap"]
{'refresh_token_env = "RT"' if refresh else ""}
token_store = "{directory / "tokens" / "lab.json"}"
""",
        encoding="utf-8",
    )
    return path


def account(path: Path, refresh: str = "") -> AccountSettings:
    return load_config(path, env={"RT": refresh} if refresh else {}).accounts["lab"]


def test_daemons_share_a_rotating_token_through_the_state(
    tmp_path: Path, server: OAuthTestServer, pg_dsn: str
) -> None:
    refresh = server.grant(USER)["refresh_token"]
    now = [time.time()]
    states = {name: PostgresState.open(pg_dsn, lease_seconds=3) for name in ("a", "b")}
    try:
        replicas = {
            name: TokenManagers(stores=stores_of(state), clock=lambda: now[0], sleep=lambda s: None)
            for name, state in states.items()
        }
        for name, managers in replicas.items():
            acct = account(config(tmp_path / name, server, pg_dsn, refresh), refresh)
            found = managers.for_account(acct)
            assert found is not None and isinstance(found.manager.store, SharedTokenStore)
        owner = {"lab": "a"}

        def keep(name: str) -> None:
            replicas[name].refresh_due(lambda acct: owner[acct] == name)

        keep("a")
        keep("b")
        assert server.requests["refresh_token"] == 1  # only the owner
        now[0] += 550
        keep("a")
        assert server.requests["refresh_token"] == 2  # rotated: the configured token is dead
        owner["lab"] = "b"
        now[0] += 550
        keep("b")  # from the state: the token a rotated (b's own file has none)
        assert server.requests["refresh_token"] == 3
        assert not replicas["a"].login_required() and not replicas["b"].login_required()
        assert not (tmp_path / "a" / "tokens" / "lab.json").exists()  # nothing in the files
        rows = token_rows(states["a"])
        assert rows is not None
        stored = rows.load("lab")
        assert stored is not None and stored["refresh_token"] == server.issued[-1]
    finally:
        for state in states.values():
            state.close()


def test_a_token_file_is_imported_once_and_a_refresh_holds_the_states_lock(
    tmp_path: Path, server: OAuthTestServer, pg_dsn: str
) -> None:
    path = config(tmp_path / "a", server, pg_dsn)
    acct = account(path)
    assert acct.oauth2 is not None
    before = tokens_from_response(server.grant(USER), time.time(), ("imap",))
    TokenStore(acct.oauth2.token_store).save(before)  # a login made while the state was SQLite
    first, second = (PostgresState.open(pg_dsn, lease_seconds=3) for _ in range(2))
    try:
        rows_a, rows_b = token_rows(first), token_rows(second)
        assert rows_a is not None and rows_b is not None
        store_a = SharedTokenStore("lab", rows_a, TokenStore(acct.oauth2.token_store))
        store_b = SharedTokenStore("lab", rows_b)  # another daemon: no file of its own
        assert store_b.load() is None
        loaded = store_a.load()
        assert loaded is not None and loaded.refresh_token == before.refresh_token
        imported = store_b.load()
        assert imported is not None and imported.refresh_token == before.refresh_token

        events: list[str] = []
        b_waits = threading.Event()

        def other() -> None:
            b_waits.set()
            with store_b.locked():
                events.append("b locked")

        with store_a.locked():
            thread = threading.Thread(target=other)
            thread.start()
            assert b_waits.wait(10)
            thread.join(0.5)  # b is blocked on the database's lock, not done
            events.append("a releases")
        thread.join(30)
        assert events == ["a releases", "b locked"]
    finally:
        first.close()
        second.close()


def test_auth_status_and_logout_use_the_state(
    tmp_path: Path, server: OAuthTestServer, pg_dsn: str, postgres: PostgresServer
) -> None:
    path = config(tmp_path / "a", server, pg_dsn)
    with PostgresState.open(pg_dsn, lease_seconds=3) as state:
        rows = token_rows(state)
        assert rows is not None
        rows.save("lab", tokens_from_response(server.grant(USER), time.time(), ("imap",)).to_json())

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mailrules", "auth", *args, "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    shown = cli("status", "lab")
    assert shown.returncode == 0, shown.stderr
    assert "table oauth_tokens, account lab" in shown.stdout and "refresh token: present" in shown.stdout
    assert not any(secret in shown.stdout + shown.stderr for secret in server.all_secrets())
    gone = cli("logout", "lab")
    assert gone.returncode == 0, gone.stderr
    assert "tokens removed" in gone.stdout
    db = pg_dsn.rsplit("/", 1)[1]
    with postgres.admin(db) as conn:
        assert conn.execute("SELECT count(*) FROM oauth_tokens").fetchone() == (0,)
