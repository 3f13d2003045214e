"""The token store and the token manager against the suite's authorization server on loopback:
rotation, refresh ahead of expiry, force_refresh, invalid_grant, retries, one refresh at a time."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypedDict, Unpack

import pytest

from mailrules.config.model import Secret
from mailrules.oauth import (
    ClientSettings,
    InvalidGrant,
    LoginRequired,
    OAuthError,
    TokenClient,
    TokenEndpointUnavailable,
    TokenManager,
    Tokens,
    TokenStore,
    TokenStoreError,
)
from tests.oauth_server import DEFAULT_CLIENT, OAuthTestServer

USER = "me@example.org"


class Clock:
    """Wall-clock time plus what a test advanced: the manager's view of 'now'."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def server() -> Iterator[OAuthTestServer]:
    with OAuthTestServer(access_lifetime=600) as s:
        yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


Made = tuple[TokenManager, list[float]]


class ManagerOptions(TypedDict, total=False):
    """The TokenManager keywords the tests set."""

    initial_refresh: Secret | None
    attempts: int
    backoff: float
    on_refresh: Callable[[str, str], None] | None


def make(server: OAuthTestServer, tmp_path: Path, clock: Clock, **kw: Unpack[ManagerOptions]) -> Made:
    sleeps: list[float] = []
    client = TokenClient(ClientSettings(server.token_url, DEFAULT_CLIENT, scopes=("imap",)), clock=clock)
    manager = TokenManager(
        "lab",
        client,
        TokenStore(tmp_path / "tokens" / "lab.json"),
        clock=clock,
        sleep=sleeps.append,
        **kw,
    )
    return manager, sleeps


def logged_in(server: OAuthTestServer, manager: TokenManager, clock: Clock) -> Tokens:
    """Tokens straight from the server, saved as a login flow would."""
    from mailrules.oauth.client import tokens_from_response

    tokens = tokens_from_response(server.grant(USER), clock(), ("imap",))
    manager.save_login(tokens)
    return tokens


# -- the store --------------------------------------------------------------------------------------


def test_store_round_trip_modes_and_no_leftovers(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "new" / "dir" / "a.json")
    assert store.load() is None
    tokens = Tokens(Secret("AT-123456"), 2000.0, 1000.0, Secret("RT-654321"), ("imap", "smtp"))
    store.save(tokens)
    loaded = store.load()
    assert loaded == tokens
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    store.save(Tokens(Secret("AT-2"), None, 1001.0))
    assert os.listdir(store.path.parent) == ["a.json"]  # the temp file was renamed, nothing left over
    assert store.delete() is True
    assert store.delete() is False


def test_tokens_never_show_in_repr(tmp_path: Path) -> None:
    tokens = Tokens(Secret("AT-secret-value"), 2.0, 1.0, Secret("RT-secret-value"))
    assert "secret-value" not in repr(tokens)
    assert "secret-value" not in repr(TokenStore(tmp_path / "x.json"))


def test_a_damaged_store_is_an_error_that_shows_no_content(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('{"version": 1, "access_token": 5, "obtained_at": 1, "refresh_token": "RT-leak"}')
    with pytest.raises(TokenStoreError, match="damaged") as info:
        TokenStore(path).load()
    assert "RT-leak" not in str(info.value)
    path.write_text("not json RT-leak")
    with pytest.raises(TokenStoreError, match="damaged") as info:
        TokenStore(path).load()
    assert "RT-leak" not in str(info.value)


def test_a_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = TokenStore(tmp_path / "a.json")
    store.save(Tokens(Secret("old"), None, 1.0))

    def broken(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(TokenStoreError, match="No space left"):
        store.save(Tokens(Secret("new"), None, 2.0))
    monkeypatch.undo()
    loaded = store.load()
    assert loaded is not None and loaded.access_token == Secret("old")
    assert os.listdir(tmp_path) == ["a.json"]


# -- the manager ------------------------------------------------------------------------------------


def test_a_fresh_token_is_used_without_asking_the_server(
    server: OAuthTestServer, tmp_path: Path, clock: Clock
) -> None:
    manager, _ = make(server, tmp_path, clock)
    tokens = logged_in(server, manager, clock)
    assert manager.access_token() == tokens.access_token
    assert server.requests["refresh_token"] == 0


def test_a_token_near_expiry_is_refreshed_and_the_rotated_refresh_token_saved(
    server: OAuthTestServer, tmp_path: Path, clock: Clock
) -> None:
    manager, _ = make(server, tmp_path, clock)
    first = logged_in(server, manager, clock)
    clock.advance(600 - 59)  # 59 s left of 600: less than min(60 s, 10% = 60 s)
    token = manager.access_token()
    assert token != first.access_token
    assert server.requests["refresh_token"] == 1
    stored = json.loads((tmp_path / "tokens" / "lab.json").read_text())
    assert stored["access_token"] == token.reveal()
    # Rotation: the old refresh token is dead, the stored one is the server's only live one.
    assert server.active_refresh_tokens() == [stored["refresh_token"]]
    assert first.refresh_token is not None and stored["refresh_token"] != first.refresh_token.reveal()
    assert manager.access_token() == token  # fresh again: no second refresh
    assert server.requests["refresh_token"] == 1


def test_short_lifetimes_refresh_at_a_tenth_not_at_60_seconds(tmp_path: Path, clock: Clock) -> None:
    with OAuthTestServer(access_lifetime=10) as server:
        manager, _ = make(server, tmp_path, clock)
        first = logged_in(server, manager, clock)
        clock.advance(8.5)  # 1.5 s of 10 left: not yet due (threshold 1 s)
        assert manager.access_token() == first.access_token
        clock.advance(0.6)
        assert manager.access_token() != first.access_token


def test_force_refresh_replaces_a_refused_token_once(
    server: OAuthTestServer, tmp_path: Path, clock: Clock
) -> None:
    manager, _ = make(server, tmp_path, clock)
    first = logged_in(server, manager, clock)
    second = manager.force_refresh(first.access_token)
    assert second != first.access_token
    # A late caller that was refused the old token gets the new one without another refresh.
    assert manager.force_refresh(first.access_token) == second
    assert server.requests["refresh_token"] == 1
    assert manager.force_refresh() != second  # no refused token named: always refresh
    assert server.requests["refresh_token"] == 2


def test_invalid_grant_is_its_own_error_naming_the_account_and_the_fix(
    server: OAuthTestServer, tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    outcomes: list[tuple[str, str]] = []
    manager, _ = make(server, tmp_path, clock, on_refresh=lambda a, o: outcomes.append((a, o)))
    logged_in(server, manager, clock)
    assert server.revoke(USER) == 1
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InvalidGrant) as info:
        manager.force_refresh()
    err = info.value
    assert err.kind == "login" and err.error == "invalid_grant" and err.account == "lab"
    assert "account 'lab'" in str(err) and "mailrules auth login lab" in str(err)
    assert outcomes == [("lab", "invalid_grant")]
    assert server.requests["refresh_token"] == 1  # refused is final: not retried
    for secret in server.all_secrets():
        assert secret not in str(err) and secret not in caplog.text


def test_an_expired_refresh_token_is_invalid_grant(tmp_path: Path, clock: Clock) -> None:
    with OAuthTestServer(refresh_lifetime=30) as server:
        manager, _ = make(server, tmp_path, clock)
        logged_in(server, manager, clock)
        server.expire_refresh_tokens()
        with pytest.raises(InvalidGrant):
            manager.force_refresh()


@pytest.mark.parametrize("mode", ["503", "drop"])
def test_an_unavailable_token_endpoint_is_retried_with_backoff(
    server: OAuthTestServer, tmp_path: Path, clock: Clock, mode: str
) -> None:
    outcomes: list[str] = []
    manager, sleeps = make(server, tmp_path, clock, backoff=2.0, on_refresh=lambda a, o: outcomes.append(o))
    first = logged_in(server, manager, clock)
    server.fail_next(3, mode)
    assert manager.force_refresh() != first.access_token
    assert server.requests["refresh_token"] == 4  # three failures, then the refresh
    # Exponential with jitter: attempt n waits between half and all of 2 * 2**(n-1) seconds.
    assert len(sleeps) == 3
    for n, slept in enumerate(sleeps):
        assert 2.0 * 2**n / 2 <= slept <= 2.0 * 2**n
    assert outcomes == ["ok"]


def test_retries_end_in_a_retry_error(server: OAuthTestServer, tmp_path: Path, clock: Clock) -> None:
    outcomes: list[str] = []
    manager, sleeps = make(server, tmp_path, clock, attempts=3, on_refresh=lambda a, o: outcomes.append(o))
    first = logged_in(server, manager, clock)
    server.fail_next(5)
    with pytest.raises(TokenEndpointUnavailable) as info:
        manager.force_refresh()
    assert info.value.kind == "retry" and "tried 3 times" in str(info.value)
    assert len(sleeps) == 2 and outcomes == ["unavailable"]
    assert manager.tokens() == first  # nothing lost: the refresh token still works later
    server.fail_next(0)
    assert manager.force_refresh() != first.access_token


def test_ten_threads_one_refresh(server: OAuthTestServer, tmp_path: Path, clock: Clock) -> None:
    manager, _ = make(server, tmp_path, clock)
    first = logged_in(server, manager, clock)
    clock.advance(590)
    barrier = threading.Barrier(10)
    got: list[Secret] = []
    refused: list[Secret] = []

    def worker(i: int) -> None:
        barrier.wait()
        if i % 2:
            got.append(manager.access_token())
        else:
            refused.append(manager.force_refresh(first.access_token))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert server.requests["refresh_token"] == 1
    assert len({s.reveal() for s in got + refused}) == 1 and len(got + refused) == 10
    assert got[0] != first.access_token


def test_a_second_process_adopts_the_rotated_token_instead_of_reusing_the_old_one(
    server: OAuthTestServer, tmp_path: Path, clock: Clock
) -> None:
    daemon, _ = make(server, tmp_path, clock)
    first = logged_in(server, daemon, clock)
    run, _ = make(server, tmp_path, clock)  # `mailrules run` beside the daemon: same store
    assert run.access_token() == first.access_token
    clock.advance(590)
    rotated = daemon.access_token()  # the daemon refreshes: the old refresh token is dead now
    # `run` still holds the old tokens in memory; it must read the store, not use the dead token.
    assert run.access_token() == rotated
    assert server.requests["refresh_token"] == 1
    newer = run.force_refresh(rotated)  # refused: `run` refreshes with the live refresh token
    assert newer != rotated
    assert daemon.access_token() == rotated  # still valid: the daemon has no reason to look
    clock.advance(590)
    # Both are due now; the daemon's refresh token in memory was rotated away by `run`: it reads
    # the store first and refreshes with the live one (no invalid_grant).
    latest = daemon.access_token()
    assert latest not in (rotated, newer)
    assert server.requests["refresh_token"] == 3
    assert run.access_token() == latest


def test_without_tokens_the_account_must_log_in(
    server: OAuthTestServer, tmp_path: Path, clock: Clock
) -> None:
    manager, _ = make(server, tmp_path, clock)
    with pytest.raises(LoginRequired, match="mailrules auth login lab") as info:
        manager.access_token()
    assert info.value.kind == "login"


def test_an_initial_refresh_token_from_elsewhere_is_used_once_then_the_store(
    server: OAuthTestServer, tmp_path: Path, clock: Clock
) -> None:
    grant = server.grant(USER)
    manager, _ = make(server, tmp_path, clock, initial_refresh=Secret(grant["refresh_token"]))
    token = manager.access_token()
    assert token.reveal() != grant["access_token"]
    stored = manager.store.load()
    assert stored is not None and stored.refresh_token is not None
    assert stored.refresh_token.reveal() != grant["refresh_token"]  # rotated, and saved


def test_client_credentials_need_no_refresh_token(
    server: OAuthTestServer, tmp_path: Path, clock: Clock
) -> None:
    server.add_client("app", "s3cret-app-secret", app_user="shared@example.org")
    client = TokenClient(ClientSettings(server.token_url, "app", Secret("s3cret-app-secret")), clock=clock)
    manager = TokenManager(
        "app", client, TokenStore(tmp_path / "app.json"), flow="client_credentials", clock=clock
    )
    first = manager.access_token()
    tokens = manager.tokens()
    assert tokens is not None and tokens.refresh_token is None
    clock.advance(595)
    assert manager.access_token() != first
    assert server.requests["client_credentials"] == 2


def test_a_wrong_client_secret_is_an_error_without_the_secret(
    server: OAuthTestServer, tmp_path: Path, clock: Clock
) -> None:
    server.add_client("app", "right-secret-value")
    for method in ("client_secret_post", "client_secret_basic"):
        settings = ClientSettings(server.token_url, "app", Secret("wrong-secret-value"), auth_method=method)
        with pytest.raises(OAuthError) as info:
            TokenClient(settings).client_credentials()
        assert info.value.error == "invalid_client"
        assert "wrong-secret-value" not in str(info.value) and "wrong-secret-value" not in repr(settings)
    right = ClientSettings(
        server.token_url, "app", Secret("right-secret-value"), auth_method="client_secret_basic"
    )
    assert TokenClient(right).client_credentials().refresh_token is None


def test_a_failed_save_withholds_the_new_token_until_it_is_saved(
    server: OAuthTestServer, tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager, _ = make(server, tmp_path, clock)
    first = logged_in(server, manager, clock)
    real_save = manager.store.save
    failures = ["disk full"]

    def save(tokens: Tokens) -> None:
        if failures:
            failures.pop()
            raise TokenStoreError("cannot write the token store: No space left on device")
        real_save(tokens)

    monkeypatch.setattr(manager.store, "save", save)
    with pytest.raises(TokenStoreError):
        manager.force_refresh()
    # The rotated refresh token lives only in memory: the next call saves it first, then hands
    # out the token it goes with (no second refresh, which the dead old refresh token would fail).
    token = manager.access_token()
    assert token != first.access_token
    assert server.requests["refresh_token"] == 1
    stored = manager.store.load()
    assert stored is not None and stored.access_token == token


def test_endpoints_must_be_https_except_on_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        ClientSettings("http://login.example.com/token", "c")
    ClientSettings("https://login.example.com/token", "c")
    ClientSettings("http://[::1]:8080/token", "c")
