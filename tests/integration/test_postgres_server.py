"""The private PostgreSQL cluster of the fixtures: password logins, isolated databases, restarts, crashes."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from tests.integration.postgres import PostgresServer, _newest_first, postgres_bindir
from tests.needs import pytest_without_server

psycopg = pytest.importorskip("psycopg", reason="psycopg is in the `test` extra: pip install -e '.[test]'")
psycopg_pool = pytest.importorskip("psycopg_pool", reason="psycopg-pool is in the `test` extra")

pytestmark = pytest.mark.integration


def _tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
    return [r[0] for r in rows]


def test_a_password_login_over_tcp_creates_and_reads_a_table(postgres: PostgresServer, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        user, superuser, host = conn.execute(
            "SELECT current_user, rolsuper, host(inet_server_addr())"
            " FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        # The application's role, not a superuser, over TCP on loopback; PostgreSQL 15 lets only a
        # database's owner create in `public`, and each fresh database is the role's own.
        assert (user, superuser, host) == (postgres.user, False, "127.0.0.1")
        conn.execute("CREATE TABLE seen (uid bigint PRIMARY KEY, mailbox text NOT NULL)")
        conn.execute("INSERT INTO seen VALUES (1, 'INBOX'), (2, 'Archive')")
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT uid, mailbox FROM seen ORDER BY uid").fetchall() == [
            (1, "INBOX"),
            (2, "Archive"),
        ]


def test_a_wrong_password_is_refused(postgres: PostgresServer, pg_dsn: str) -> None:
    wrong = pg_dsn.replace(f":{postgres.password}@", ":not-the-password@")
    assert wrong != pg_dsn
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong).close()
    with postgres.admin() as conn:
        query = "SELECT rolpassword FROM pg_authid WHERE rolname = %s"
        stored = conn.execute(query, (postgres.user,)).fetchone()
    assert stored is not None and stored[0].startswith("SCRAM-SHA-256$")


def test_fresh_databases_are_isolated(postgres: PostgresServer) -> None:
    first, second = postgres.fresh_database(), postgres.fresh_database()
    assert first != second
    with psycopg.connect(first) as conn:
        conn.execute("CREATE TABLE only_here (x int)")
    assert _tables(first) == ["only_here"]
    assert _tables(second) == []


def test_the_cluster_is_private(postgres: PostgresServer) -> None:
    with postgres.admin() as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            for name in ("data_directory", "listen_addresses", "port", "unix_socket_directories", "fsync")
        }
    assert settings == {
        "data_directory": str(postgres.data_dir),
        "listen_addresses": "127.0.0.1",
        "port": str(postgres.port),
        "unix_socket_directories": str(postgres.socket_dir),
        "fsync": "off",
    }
    pid = postgres.pid
    assert pid is not None
    if os.geteuid() == 0:  # PostgreSQL refuses root: the cluster is the `postgres` user's
        owner = pwd.getpwnam("postgres").pw_uid
        assert Path(f"/proc/{pid}").stat().st_uid == owner
        assert postgres.data_dir.stat().st_uid == owner


def test_a_pool_with_check_recovers_from_a_restart(postgres: PostgresServer, pg_dsn: str) -> None:
    with psycopg_pool.ConnectionPool(
        pg_dsn, min_size=2, max_size=4, check=psycopg_pool.ConnectionPool.check_connection, open=True
    ) as pool:
        pool.wait(timeout=30)
        with pool.connection() as conn:
            conn.execute("CREATE TABLE checkpoint (mailbox text PRIMARY KEY, uid bigint)")
            conn.execute("INSERT INTO checkpoint VALUES ('INBOX', 41)")
            before = conn.info.backend_pid
        postgres.restart()
        # Every pooled connection died with the server; `check` finds out before handing one out.
        with pool.connection(timeout=30) as conn:
            conn.execute("UPDATE checkpoint SET uid = 42 WHERE mailbox = 'INBOX'")
            assert conn.execute("SELECT uid FROM checkpoint").fetchall() == [(42,)]
            assert conn.info.backend_pid != before


def test_a_pool_without_check_fails_once_after_a_restart(postgres: PostgresServer, pg_dsn: str) -> None:
    # Why the state store's pool needs `check` (or a retry): without it, the connection the server
    # cut is handed out as it is. The pool throws it away when it comes back broken.
    with psycopg_pool.ConnectionPool(pg_dsn, min_size=1, max_size=1, open=True) as pool:
        pool.wait(timeout=30)
        postgres.restart()
        with pytest.raises(psycopg.OperationalError), pool.connection() as conn:
            conn.execute("SELECT 1")
        with pool.connection(timeout=30) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_committed_rows_survive_a_crash(postgres: PostgresServer, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE journal (id int PRIMARY KEY)")
        conn.execute("INSERT INTO journal VALUES (7)")
    postgres.kill()
    try:
        assert not postgres.running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg_dsn, connect_timeout=5).close()
    finally:
        postgres.start()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT id FROM journal").fetchall() == [(7,)]


def test_the_server_binaries_are_found_without_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # After `apt-get install postgresql` on a fresh machine, initdb is not on PATH.
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("MAILRULES_PG_BINDIR", raising=False)
    try:
        found = postgres_bindir()
    except Exception as exc:
        pytest.fail(f"{exc}: where is PostgreSQL installed here?")
    assert all((found / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def test_the_newest_major_version_comes_first() -> None:
    dirs = [Path(f"/usr/lib/postgresql/{v}/bin") for v in ("9.6", "16", "15")]
    assert _newest_first(dirs) == [dirs[1], dirs[2], dirs[0]]


@pytest.mark.parametrize(("ci", "expected"), [("", "1 skipped"), ("true", "1 error")])
def test_missing_postgres_skips_locally_and_fails_in_ci(tmp_path: Path, ci: str, expected: str) -> None:
    stdout = pytest_without_server(tmp_path, "postgres", {"MAILRULES_PG_BINDIR": "/nonexistent"}, ci)
    assert expected in stdout, stdout
    assert "package `postgresql`" in stdout
    assert "make test" in stdout
