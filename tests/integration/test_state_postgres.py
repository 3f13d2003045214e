"""The PostgreSQL state on a real PostgreSQL: the same behaviour as SQLite (the contract tests run
here against it), its migrations, its password kept out of sight, and recovery from a restart."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mailrules.config import Secret
from mailrules.config.model import ClusterSettings, PostgresUrl, Settings
from mailrules.state import Checkpoint, JournalEntry, State, StateError, StateLocked, StateOpenError
from mailrules.state.factory import open_leases, open_state
from mailrules.state.health import check_state
from mailrules.state.leases import Leases
from mailrules.state.pg_conn import split_password
from mailrules.state.pg_schema import MIGRATIONS, SCHEMA_VERSION, Migration, migrate
from mailrules.state.postgres import PostgresState
from tests.integration.postgres import PostgresServer
from tests.unit.test_state_contract import *  # noqa: F403 - the same behaviour, on PostgreSQL
from tests.unit.test_state_contract import T0, Opener, entry


@pytest.fixture  # type: ignore[no-redef]  # overrides the contract's SQLite opener, star-imported above
def opener(pg_dsn: str) -> Iterator[Opener]:
    opened: list[PostgresState] = []

    def open_() -> State:
        opened.append(PostgresState.open(pg_dsn, retry_seconds=20))
        return opened[-1]

    yield open_
    for s in opened:
        s.close()


# -- migrations -------------------------------------------------------------------------------------


def versions(postgres: PostgresServer, dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        return [
            (int(v), str(n))
            for v, n in conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1")
        ]


def test_migrations_are_recorded_once_and_a_reopen_changes_nothing(
    postgres: PostgresServer, pg_dsn: str
) -> None:
    PostgresState.open(pg_dsn).close()
    recorded = versions(postgres, pg_dsn)
    assert recorded == [(m.version, m.name) for m in MIGRATIONS] and len(recorded) == SCHEMA_VERSION
    with psycopg.connect(pg_dsn) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"runs", "journal", "intents", "checkpoints", "retries", "leases", "replicas"} <= tables
    PostgresState.open(pg_dsn).close()
    assert versions(postgres, pg_dsn) == recorded


def test_only_pending_steps_run_and_a_failed_step_leaves_nothing(pg_dsn: str) -> None:
    one = (Migration(1, "a", "CREATE TABLE a (x integer);"),)
    two = (*one, Migration(2, "b", "ALTER TABLE a ADD COLUMN y text; CREATE TABLE b (z integer);"))
    bad = (*two, Migration(3, "c", "CREATE TABLE c (x integer); CREATE TABLE a (x integer);"))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert migrate(conn, one) == 1
        assert migrate(conn, two) == 2  # step 1 is not run again (it would fail: a exists)
        assert migrate(conn, two) == 2
        with pytest.raises(psycopg.errors.DuplicateTable):
            migrate(conn, bad)
        assert conn.execute("SELECT to_regclass('c')").fetchone() == (None,)
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (2,)
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'a' "
            "ORDER BY ordinal_position"
        ).fetchall()
        assert columns == [("x",), ("y",)]
        # the lock was let go: another session can take it at once
        assert conn.execute("SELECT pg_try_advisory_lock(%s)", (0x6D61696C72756C65,)).fetchone() == (True,)


def test_replicas_starting_together_migrate_once(pg_dsn: str) -> None:
    start = threading.Barrier(5)
    errors: list[BaseException] = []
    opened: list[PostgresState] = []

    def open_() -> None:
        start.wait()
        try:
            opened.append(PostgresState.open(pg_dsn))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in opened:
        s.close()
    assert errors == [] and len(opened) == 5
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*), max(version) FROM schema_migrations").fetchone() == (
            SCHEMA_VERSION,
            SCHEMA_VERSION,
        )


def test_a_newer_schema_is_refused(pg_dsn: str) -> None:
    PostgresState.open(pg_dsn).close()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (%s, 'future')", (SCHEMA_VERSION + 1,)
        )
    with pytest.raises(StateOpenError, match="newer than this mailrules knows"):
        PostgresState.open(pg_dsn)


def test_step_5_drops_the_rule_and_account_indexes_and_log_still_filters(
    postgres: PostgresServer, pg_dsn: str
) -> None:
    def indexes() -> set[str]:
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'journal'")
            return {str(r[0]) for r in rows}

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        migrate(conn, MIGRATIONS[:4])  # a database of the release before step 5
    kept = {"journal_pkey", "journal_run", "journal_message_id", "journal_message", "journal_at"}
    assert indexes() == kept | {"journal_rule", "journal_account"}
    with PostgresState.open(pg_dsn) as s:
        run = s.begin_run("run", False, now=T0)
        s.record_many([entry(run, uid=1), entry(run, uid=2, rule="b", account="home"), entry(run, uid=3)])
        assert [e.uid for e in s.find(rule="lists")] == [3, 1]
        assert [e.uid for e in s.find(account="home")] == [2]
        assert [e.uid for e in s.find(rule="lists", account="work", limit=1)] == [3]
    assert indexes() == kept
    assert [v for v, _ in versions(postgres, pg_dsn)] == list(range(1, SCHEMA_VERSION + 1))


# -- the journal is append-only ----------------------------------------------------------------------


def test_the_journal_is_append_only(state: PostgresState, pg_dsn: str) -> None:
    run = state.begin_run("manual", dry_run=False)
    state.record(entry(run))
    with psycopg.connect(pg_dsn) as conn:
        for statement in ("UPDATE journal SET outcome = 'failed'", "DELETE FROM journal", "TRUNCATE journal"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
            conn.rollback()
    assert len(state.find()) == 1


# -- the password ------------------------------------------------------------------------------------


def test_split_password_takes_it_out_of_the_url() -> None:
    assert split_password("postgresql://u:p%40ss@db:5432/x?sslmode=require") == (
        "postgresql://u@db:5432/x?sslmode=require",
        "p@ss",
    )
    assert split_password("postgresql://u@db/x?password=s3&application_name=a") == (
        "postgresql://u@db/x?application_name=a",
        "s3",
    )
    assert split_password("postgresql://db/x") == ("postgresql://db/x", None)


def test_the_password_is_never_shown(
    postgres: PostgresServer, pg_dsn: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = postgres.password
    bare, _ = split_password(pg_dsn)
    with PostgresState.open(pg_dsn) as state:
        assert secret not in repr(state) and secret not in state.where and state.where == bare
        assert secret not in repr(state.database)
        run = state.begin_run("manual", dry_run=False)
        with pytest.raises(StateError) as raised:
            state.record(entry("no-such-run"))
        assert secret not in str(raised.value) and bare in str(raised.value)
        state.end_run(run, {})
    # the password given apart, and a wrong one: refused, without either in the message
    with PostgresState.open(bare, password=secret):
        pass
    with pytest.raises(StateOpenError) as refused:
        PostgresState.open(pg_dsn.replace(secret, "wrong-" + secret[:4]))
    assert "password authentication failed" in str(refused.value) and "state_password_file" in str(
        refused.value
    )
    assert secret not in str(refused.value) and "wrong-" not in str(refused.value)
    # nobody listening
    with pytest.raises(StateOpenError, match="cannot connect") as unreachable:
        PostgresState.open(pg_dsn.replace(f":{postgres.port}/", ":1/"))
    assert secret not in str(unreachable.value)
    assert secret not in caplog.text and "wrong-" not in caplog.text


# -- PostgreSQL restarted ----------------------------------------------------------------------------


def test_operations_wait_for_a_restarted_server_and_go_on(postgres: PostgresServer, pg_dsn: str) -> None:
    with PostgresState.open(pg_dsn, retry_seconds=60) as state:
        run = state.begin_run("daemon", dry_run=False)
        state.set_checkpoint("work", "INBOX", Checkpoint(7, 10, None, T0))
        postgres.restart()  # every connection of the pool is cut
        assert state.get_checkpoint("work", "INBOX") == Checkpoint(7, 10, None, T0)
        postgres.kill()  # as a crash: the server is gone until it is started again
        restarted = threading.Timer(1.0, postgres.start)
        restarted.start()
        try:
            state.record(entry(run, uid=11))  # waits for the server, then writes
            state.set_checkpoint("work", "INBOX", Checkpoint(7, 11, None, T0))
        finally:
            restarted.join()
        assert [e.uid for e in state.find(run_id=run)] == [11]
        assert state.get_checkpoint("work", "INBOX") == Checkpoint(7, 11, None, T0)


def test_a_connection_cut_in_the_middle_of_a_write_is_tried_again_once(
    postgres: PostgresServer, pg_dsn: str
) -> None:
    """The journal batch waits on a lock; its connection is cut (an administrator, a failover)
    before COMMIT: written again on a new connection, once."""
    with PostgresState.open(pg_dsn, retry_seconds=60) as state, psycopg.connect(pg_dsn) as holder:
        run = state.begin_run("daemon", dry_run=False)
        holder.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (run,))  # the FK waits on it
        writer = threading.Thread(target=state.record, args=(entry(run, uid=12),))
        writer.start()
        with postgres.admin(pg_dsn.rsplit("/", 1)[1]) as admin:
            waiting: list[tuple[int]] = []
            for _ in range(600):  # until the INSERT waits for the row lock
                waiting = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND application_name = 'mailrules'"
                ).fetchall()
                if waiting:
                    break
                time.sleep(0.05)
            assert waiting, "the write never waited for the lock"
            admin.execute("SELECT pg_terminate_backend(%s)", waiting[0])
            holder.rollback()
        writer.join()
        assert [e.uid for e in state.find(run_id=run)] == [12]
        assert state.database.retries == 1


def test_a_server_that_stays_down_is_a_state_error_after_the_retry_time(
    postgres: PostgresServer, pg_dsn: str
) -> None:
    state = PostgresState.open(pg_dsn, retry_seconds=1)
    try:
        postgres.stop()
        with pytest.raises(StateError, match=r"cannot read a checkpoint: .*is it running and reachable"):
            state.get_checkpoint("work", "INBOX")
    finally:
        postgres.start()
        state.close()


# -- open_state and the exclusive lock -----------------------------------------------------------------


def test_open_state_opens_the_configured_postgresql_and_its_lock_is_exclusive(
    postgres: PostgresServer, pg_dsn: str, tmp_path: Path
) -> None:
    bare, password = split_password(pg_dsn)
    settings = Settings(
        rules=tmp_path / "rules.d",
        state=PostgresUrl(bare, Secret(password or "")),
        config_path=tmp_path / "mailrules.toml",
        cluster=ClusterSettings("host-a", 15.0),
    )
    with open_state(settings, lock="mailrules daemon") as state:
        assert isinstance(state, PostgresState) and state.where == bare
        leases = open_leases(state, settings)
        try:
            assert isinstance(leases, Leases) and leases.replica == "host-a"
            assert leases.lease_seconds == 15.0 and leases.acquire("work") is not None
        finally:
            leases.close()
        holder = r"is in use by mailrules daemon \(host-a\) \(from 127\.0\.0\.1"
        with pytest.raises(StateLocked, match=holder):
            open_state(settings, lock="mailrules run")
        with open_state(settings) as reader:  # readers take no lock
            assert reader.runs() == []
    with open_state(settings, lock="mailrules run"):  # closed: the lock went with it
        pass


def test_doctor_reads_the_schema_and_the_leases_and_never_shows_the_password(
    postgres: PostgresServer, pg_dsn: str
) -> None:
    bare, password = split_password(pg_dsn)
    assert password is not None
    (fresh,) = check_state(PostgresUrl(bare, Secret(password)))
    assert fresh.status == "INFO" and "schema 0 (migrated to" in fresh.result  # nothing created
    PostgresState.open(pg_dsn).close()
    (found,) = check_state(PostgresUrl(bare, Secret(password)))
    assert found.status == "OK" and found.result.startswith(f"{bare}: schema {SCHEMA_VERSION}, ")
    assert "0 of 0 accounts leased" in found.result
    (refused,) = check_state(PostgresUrl(bare, Secret("wrong")))
    assert refused.status == "FAIL" and "password authentication failed" in refused.result
    assert password not in refused.result


def test_replicas_claiming_overlapping_groups_get_each_key_once(pg_dsn: str) -> None:
    """Copies of the same messages claimed by two replicas at once, in opposite orders: every key
    is granted to exactly one of them, and neither fails."""
    with PostgresState.open(pg_dsn) as a, PostgresState.open(pg_dsn) as b:
        run = a.begin_run("daemon", dry_run=False)
        items = [(f"imap/work/INBOX/7/{u}/c/copy/F", entry(run, uid=u, action="copy")) for u in range(200)]
        start = threading.Barrier(2)
        won: dict[str, set[str]] = {}

        def claim(name: str, store: PostgresState, group: list[tuple[str, JournalEntry]]) -> None:
            start.wait()
            won[name] = store.claim(group)

        threads = [
            threading.Thread(target=claim, args=("a", a, items)),
            threading.Thread(target=claim, args=("b", b, items[::-1])),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert won["a"] | won["b"] == {k for k, _ in items} and not won["a"] & won["b"]


def test_a_closed_state_fails_at_once(pg_dsn: str) -> None:
    state = PostgresState.open(pg_dsn, retry_seconds=600)
    state.close()
    with pytest.raises(StateError, match="cannot read a checkpoint"):
        state.get_checkpoint("work", "INBOX")  # not tried again for ten minutes
