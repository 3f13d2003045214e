"""`state =` as a PostgreSQL URL, `state_password_file` and `[cluster]`: read, checked, shown
without the password, overridden from the environment; `open_state` picks the backend."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from mailrules.config import Secret, load_config
from mailrules.config.model import PostgresUrl, Settings
from mailrules.errors import ConfigError, StateOpenError
from mailrules.state import StateStore
from mailrules.state.factory import open_leases, open_state
from mailrules.state.solo import SoloLeases

ACCOUNT = """
[accounts.a]
host = "imap.example.org"
username = "u@example.org"
password = "pw"
"""
SECRET = "s3cr3t-pw"


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "mailrules.toml"
    path.write_text(text + ACCOUNT, encoding="utf-8")
    return load_config(path, env=env or {})


def refused(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, text, env)
    return str(raised.value)


def test_a_sqlite_path_stays_the_default(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    assert settings.state == tmp_path / "state.db"
    assert settings.cluster.lease_seconds == 15.0
    assert settings.cluster.replica == socket.gethostname()[:48]
    with open_state(settings) as state:
        assert isinstance(state, StateStore)
        leases = open_leases(state, settings)
        assert isinstance(leases, SoloLeases) and leases.replica == settings.cluster.replica


def test_a_url_keeps_its_password_apart(tmp_path: Path) -> None:
    settings = load(
        tmp_path, f'state = "postgresql://app:{SECRET}%40x@db.internal:5432/mailrules?sslmode=require"\n'
    )
    assert settings.state == PostgresUrl(
        "postgresql://app@db.internal:5432/mailrules?sslmode=require", Secret(SECRET + "@x")
    )
    assert SECRET not in str(settings.state) and SECRET not in repr(settings.state)
    shown = json.dumps(settings.redacted_dict())
    assert SECRET not in shown and "postgresql://app@db.internal:5432/mailrules" in shown
    no_password = load(tmp_path, 'state = "postgres://app@db/mailrules"\n').state
    assert no_password == PostgresUrl("postgres://app@db/mailrules", None)  # PGPASSWORD, .pgpass


def test_the_password_file(tmp_path: Path) -> None:
    (tmp_path / "pg_password").write_text(SECRET + "\n")
    text = 'state = "postgresql://app@db/mailrules"\nstate_password_file = "pg_password"\n'
    state = load(tmp_path, text).state
    assert isinstance(state, PostgresUrl) and state.password == Secret(SECRET)
    assert (
        state.password is not None
        and state.password.source == f"state_password_file {tmp_path / 'pg_password'}"
    )
    # from the environment too
    env = {
        "MAILRULES_STATE": "postgresql://app@db/other",
        "MAILRULES_STATE_PASSWORD_FILE": str(tmp_path / "pg_password"),
    }
    state = load(tmp_path, "", env).state
    assert (
        isinstance(state, PostgresUrl) and state.url.endswith("/other") and state.password == Secret(SECRET)
    )


def test_password_problems_are_told_without_the_password(tmp_path: Path) -> None:
    (tmp_path / "pg_password").write_text(SECRET)
    (tmp_path / "empty").write_text("\n")
    twice = refused(
        tmp_path, f'state = "postgresql://app:{SECRET}@db/m"\nstate_password_file = "pg_password"\n'
    )
    assert "holds a password already" in twice
    empty = refused(tmp_path, 'state = "postgresql://app@db/m"\nstate_password_file = "empty"\n')
    assert "is empty" in empty
    missing = refused(tmp_path, 'state = "postgresql://app@db/m"\nstate_password_file = "nope"\n')
    assert "cannot read" in missing
    alone = refused(tmp_path, 'state = "state.db"\nstate_password_file = "pg_password"\n')
    assert "applies only to a PostgreSQL state" in alone
    scheme = refused(tmp_path, f'state = "mysql://app:{SECRET}@db/m"\n')
    assert "must start with postgresql://" in scheme
    for text in (twice, empty, missing, alone, scheme):
        assert SECRET not in text


def test_cluster_keys(tmp_path: Path) -> None:
    url = 'state = "postgresql://app@db/m"\n'
    cluster = load(tmp_path, url + '[cluster]\nreplica = "mailrules-0"\nlease_seconds = 5\n').cluster
    assert (cluster.replica, cluster.lease_seconds) == ("mailrules-0", 5.0)
    env = {"MAILRULES_CLUSTER__LEASE_SECONDS": "30", "MAILRULES_CLUSTER__REPLICA": "pod-7"}
    assert load(tmp_path, url, env).cluster.lease_seconds == 30.0
    assert load(tmp_path, url, env).cluster.replica == "pod-7"
    shown = load(tmp_path, url + "[cluster]\nlease_seconds = 5\n").redacted_dict()["cluster"]
    assert shown["lease_seconds"] == 5.0
    assert "must be from 1.0 to 3600.0 seconds, got 0.5" in refused(
        tmp_path, url + "[cluster]\nlease_seconds = 0.5\n"
    )
    assert "at most 48 bytes" in refused(tmp_path, url + f'[cluster]\nreplica = "{"r" * 49}"\n')
    assert "unknown key" in refused(tmp_path, url + "[cluster]\nlease = 5\n")
    warned = load(tmp_path, "[cluster]\nlease_seconds = 5\n").warnings
    assert any("applies only to a PostgreSQL state" in w for w in warned)


def test_open_state_without_the_driver_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mailrules.state.postgres", None)  # as if psycopg were absent
    settings = load(tmp_path, f'state = "postgresql://app:{SECRET}@db/m"\n')
    with pytest.raises(StateOpenError, match=r"pip install 'mailrules\[postgres\]'") as raised:
        open_state(settings)
    assert SECRET not in str(raised.value)
