"""What `mailrules doctor` checks of the state: its directory, the database file, and its lock.

Read-only: nothing is created, migrated or locked (the lock is probed shared for an instant).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from mailrules.state.files import probe_lock
from mailrules.state.findings import Finding as Finding
from mailrules.state.guard import describe
from mailrules.state.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from mailrules.config.model import PostgresUrl


def check_state(path: Path | PostgresUrl) -> list[Finding]:
    """The directory (exists, writable), the file (a database, its schema, quick_check, who may
    read it) and the lock (free, or who holds it) of the state at `path`; for a PostgreSQL state,
    the login, the schema and the leases (state/pg_health.py)."""
    if not isinstance(path, Path):
        try:
            from mailrules.state.pg_health import check_postgres
        except ImportError as exc:
            return [Finding("state", "FAIL", f"{path}: {exc}", "pip install 'mailrules[postgres]'")]
        return check_postgres(path.url, None if path.password is None else path.password.reveal())
    if str(path) == ":memory:":
        return [Finding("state", "INFO", "in memory: nothing is kept between runs")]
    out = [_directory(path.parent)]
    if out[0].status == "FAIL":
        return out
    out.append(_database(path))
    out.append(_lock(path))
    return out


def _directory(directory: Path) -> Finding:
    who = f"uid {os.geteuid()}"
    if directory.is_dir():
        if os.access(directory, os.W_OK | os.X_OK):
            return Finding("state directory", "OK", f"{directory} (writable)")
        return Finding(
            "state directory", "FAIL", f"{directory} is not writable by {who}",
            "the database, its -wal and -shm files and the lock are created there: "
            "give the user running mailrules write access, or point `state =` elsewhere",
        )  # fmt: skip
    if directory.exists():
        return Finding("state directory", "FAIL", f"{directory} is not a directory")
    parent = directory
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return Finding("state directory", "INFO", f"{directory} does not exist yet: made 0700 on first use")
    return Finding(
        "state directory", "FAIL", f"{directory} does not exist and {parent} is not writable by {who}",
        f"create {directory} for the user running mailrules, or point `state =` elsewhere",
    )  # fmt: skip


def _database(path: Path) -> Finding:
    if not path.exists():
        return Finding("state file", "INFO", f"{path} does not exist yet: created 0600 on first use")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        return Finding("state file", "FAIL", f"{path}: {describe(exc)}")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.Error as exc:
        return Finding("state file", "FAIL", f"{path}: {describe(exc)}")
    finally:
        conn.close()
    if problems != ["ok"]:
        return Finding(
            "state file", "FAIL", f"{path}: quick_check: {'; '.join(problems)}",
            f"the database is damaged: restore a backup, or try `sqlite3 {path} .recover`",
        )  # fmt: skip
    if version > SCHEMA_VERSION:
        return Finding(
            "state file", "FAIL", f"{path}: schema {version} is newer than this mailrules's {SCHEMA_VERSION}",
            "a newer mailrules wrote it: run that version, or restore a backup",
        )  # fmt: skip
    st = path.stat()
    mode, size = stat.S_IMODE(st.st_mode), st.st_size
    schema = f"schema {version}"
    if version < SCHEMA_VERSION:
        schema += f" (migrated to {SCHEMA_VERSION} at the next start)"
    result = f"{path}: {schema}, quick_check ok, {size / 1e6:.1f} MB, mode {mode:04o}"
    if not os.access(path, os.W_OK):
        return Finding("state file", "FAIL", f"{result}; not writable by uid {os.geteuid()}")
    if mode & 0o077:
        return Finding(
            "state file", "WARN", f"{result}: others may read it",
            f"chmod 600 {path} (and its -wal, -shm files): the journal holds Message-IDs, "
            "mailbox names and forward addresses",
        )  # fmt: skip
    return Finding("state file", "OK", result)


def _lock(path: Path) -> Finding:
    try:
        holder = probe_lock(path)
    except OSError as exc:
        return Finding("state lock", "WARN", f"cannot read the lock: {describe(exc)}")
    if holder is None:
        return Finding("state lock", "OK", "free")
    return Finding(
        "state lock", "INFO", f"held by {holder}",
        "while it runs, a `mailrules run`, an `undo` or a second daemon on this state exits with code 75",
    )  # fmt: skip
