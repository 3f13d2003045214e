"""A state that is robust and private: clear errors instead of sqlite3 tracebacks, one process at a
time, files nobody else reads, and what `mailrules doctor` says about it."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailrules.cli import main
from mailrules.state import SCHEMA_VERSION, StateError, StateLocked, StateOpenError, StateStore
from mailrules.state.files import probe_lock
from mailrules.state.health import check_state
from tests.unit.test_state_store import entry

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def garbage(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database\n" * 200)
    return path


def capped(store: StateStore) -> None:
    """No page more than the database has now: SQLite answers SQLITE_FULL, as on a full disk."""
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")


# -- errors -----------------------------------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_named_with_what_to_do(garbage: Path) -> None:
    with pytest.raises(StateOpenError) as raised:
        StateStore.open(garbage)
    text = str(raised.value)
    assert text.startswith(f"state {garbage}: cannot open it: file is not a database (")
    assert "move the file away" in text
    assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)
    assert garbage.read_bytes().startswith(b"this is not")  # left as it was
    with pytest.raises(StateOpenError):  # and the lock was let go: a second try says the same
        StateStore.open(garbage, lock="mailrules run")
    assert probe_lock(garbage) is None


def test_a_full_disk_is_a_state_error_and_nothing_is_half_written(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "state.db") as store:
        run = store.begin_run("run", False)
        capped(store)
        full = r"cannot record the journal: database or disk is full \("
        with pytest.raises(StateError, match=full) as raised:
            store.record_many([entry(run, uid=i) for i in range(2000)])
        assert str(raised.value).startswith(f"state {tmp_path / 'state.db'}: ")
        assert "nothing past this point was done" in str(raised.value)
        assert store.find() == []
        assert store.get_checkpoint("work", "INBOX") is None  # reads still work
        store._conn.execute("PRAGMA max_page_count = 1073741823")
        store.record(entry(run))  # and writes, once there is room again
        assert len(store.find()) == 1


def _open_as_nobody(path: Path) -> str:
    """Open the state as an unprivileged user (root writes anywhere); the StateOpenError's text.

    In a forked child that drops to `nobody`: every module it needs is imported already (the
    interpreter's own files may be out of nobody's reach)."""
    if os.geteuid() != 0:
        path.parent.chmod(0o500)
        try:
            StateStore.open(path)
        except StateOpenError as exc:
            return str(exc)
        finally:
            path.parent.chmod(0o700)
        return "opened"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, try, report through the pipe, never return
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            StateStore.open(path)
            text = "opened"
        except StateOpenError as exc:
            text = str(exc)
        except BaseException as exc:
            text = f"unexpected: {exc!r}"
        os.write(write, text.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    return text


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory anyone may enter (pytest's tmp_path is under a 0700 directory of root's)."""
    path = Path(tempfile.mkdtemp(prefix="mailrules-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_a_directory_it_cannot_write_is_named_with_the_user(public_dir: Path) -> None:
    directory = public_dir / "ro"
    directory.mkdir(mode=0o755)
    text = _open_as_nobody(directory / "state.db")
    assert text.startswith(f"state {directory / 'state.db'}: cannot create it: Permission denied"), text
    assert "not writable by this user (uid " in text
    # a database others may read but not write
    StateStore.open(directory / "state.db").close()
    (directory / "state.db").chmod(0o644)
    text = _open_as_nobody(directory / "state.db")
    assert text.startswith(f"state {directory / 'state.db'}: cannot open it: "), text
    assert "not writable by this user (uid " in text


# -- the lock ---------------------------------------------------------------------------------------


def test_one_process_at_a_time_and_the_second_is_told_who(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = StateStore.open(path, lock="mailrules daemon")
    try:
        with pytest.raises(StateLocked) as raised:
            StateStore.open(path, lock="mailrules run")
        assert f"is in use by pid {os.getpid()} (mailrules daemon, since " in str(raised.value)
        holder = probe_lock(path)
        assert holder is not None and holder.pid == os.getpid() and holder.command == "mailrules daemon"
        with StateStore.open(path) as reader:  # readers (`mailrules log`) need no lock
            assert reader.runs() == []
    finally:
        first.close()
    assert probe_lock(path) is None
    with StateStore.open(path, lock="mailrules run"):  # free again
        pass


def test_the_lock_goes_with_the_process(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    code = (
        "import sys, os\nfrom mailrules.state import StateStore\n"
        "StateStore.open(sys.argv[1], lock='x')\nos._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, check=True)  # never closed
    assert probe_lock(path) is None
    StateStore.open(path, lock="y").close()


# -- private files ----------------------------------------------------------------------------------


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_new_state_files_and_directories_are_private(tmp_path: Path, loose_umask: None) -> None:
    base = tmp_path / "base"
    base.mkdir(mode=0o755)
    path = base / "new" / "deeper" / "state.db"
    store = StateStore.open(path, lock="mailrules run")
    try:
        run = store.begin_run("run", False)
        store.record(entry(run))
        files = {p.name: mode(p) for p in path.parent.iterdir()}
        assert files == {
            "state.db": 0o600,
            "state.db-wal": 0o600,
            "state.db-shm": 0o600,
            "state.db.lock": 0o600,
        }, {k: oct(v) for k, v in files.items()}
    finally:
        store.close()
    assert mode(path.parent) == mode(path.parent.parent) == 0o700
    assert mode(base) == 0o755  # not ours to change


def test_an_existing_directory_and_file_keep_their_modes(tmp_path: Path, loose_umask: None) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "state.db"
    StateStore.open(path).close()
    path.chmod(0o640)
    StateStore.open(path).close()
    assert mode(path) == 0o640 and mode(tmp_path) == 0o755
    rows = {f.check: f for f in check_state(path)}
    assert rows["state file"].status == "WARN" and "chmod 600" in rows["state file"].hint


# -- doctor -----------------------------------------------------------------------------------------


def test_doctor_rows_for_a_healthy_state(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    assert [(f.check, f.status) for f in check_state(path)] == [
        ("state directory", "OK"),
        ("state file", "INFO"),  # not created yet
        ("state lock", "OK"),
    ]
    with StateStore.open(path, lock="mailrules daemon"):
        rows = {f.check: f for f in check_state(path)}
        assert rows["state file"].status == "OK"
        assert f"schema {SCHEMA_VERSION}, quick_check ok" in rows["state file"].result
        assert rows["state lock"].status == "INFO"
        assert rows["state lock"].result.startswith(f"held by pid {os.getpid()} (mailrules daemon, since ")
    assert not (tmp_path / "missing").exists()
    assert check_state(tmp_path / "missing" / "state.db")[0].status == "INFO"
    assert not (tmp_path / "missing").exists()  # doctor creates nothing


def test_doctor_fails_a_broken_state(garbage: Path, tmp_path: Path) -> None:
    rows = {f.check: f for f in check_state(garbage)}
    assert rows["state file"].status == "FAIL" and "file is not a database" in rows["state file"].result
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    rows = {f.check: f for f in check_state(newer)}
    assert rows["state file"].status == "FAIL" and "schema 99 is newer" in rows["state file"].result
    not_dir = tmp_path / "file"
    not_dir.write_text("x")
    assert [(f.check, f.status) for f in check_state(not_dir / "state.db")] == [("state directory", "FAIL")]


# -- the command line -------------------------------------------------------------------------------


def _config(tmp_path: Path, state: Path) -> Path:
    rules = tmp_path / "rules.d"
    rules.mkdir(exist_ok=True)
    (rules / "10.rules").write_text('rule "r" { when subject is "x" then flag }\n')
    config = tmp_path / "mailrules.toml"
    config.write_text(
        f'rules = "{rules}"\nstate = "{state}"\n[metrics]\nlisten = ""\n'
        '[accounts.a]\nhost = "127.0.0.1"\nport = 1\ntls = "none"\nallow_insecure = true\n'
        'username = "u"\npassword = "p"\n'
    )
    return config


@pytest.mark.parametrize("command", [["run"], ["log"], ["undo", "20250101T000000-abcdef"], ["daemon"]])
def test_a_state_that_cannot_be_opened_exits_78_with_its_reason(
    command: list[str], garbage: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(main, [*command, "--config", str(_config(tmp_path, garbage))])
    assert result.exit_code == 78, result.output
    assert f"mailrules: state {garbage}: cannot open it: file is not a database" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", [["run"], ["undo", "20250101T000000-abcdef"], ["daemon"]])
def test_a_state_in_use_exits_75_naming_its_holder(command: list[str], tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    config = _config(tmp_path, state)
    with StateStore.open(state, lock="mailrules daemon"):
        result = CliRunner().invoke(main, [*command, "--config", str(config)])
        assert result.exit_code == 75, result.output
        assert f"is in use by pid {os.getpid()} (mailrules daemon" in result.stderr
        # reading the journal, and a dry run, need no lock
        assert CliRunner().invoke(main, ["log", "--config", str(config)]).exit_code == 0
        dry = CliRunner().invoke(main, ["run", "--dry-run", "--config", str(config)])
        assert dry.exit_code == 1 and "in use" not in dry.output  # it got as far as the server
        assert "account a:" in dry.output
