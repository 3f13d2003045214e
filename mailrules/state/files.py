"""The state's files on disk: created private (0700 directories, 0600 files), and its exclusive lock.

The journal holds Message-IDs, mailbox names and forward addresses: nobody else on the machine
needs to read them. SQLite gives the `-wal`, `-shm` and `-journal` files it creates the mode of the
database file (unix VFS, `findCreateFileMode`), so creating the database file 0600 first covers
them too. A directory or a file that already exists is left as it is: it may not be ours to change
(`mailrules doctor` reports a state file others can read).

The lock (`STATE.lock` beside the database) lets one process at a time act on a state: the
daemon, `mailrules run` and `mailrules undo` take it, commands that only read (`log`, `doctor`) do
not. It is an `flock(2)` lock, released by the kernel when its holder exits however it exits; the
file says who holds it (pid, command, since when) for the message a second process prints.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from mailrules.errors import StateLocked, StateOpenError
from mailrules.state.guard import describe

DIR_MODE = 0o700
FILE_MODE = 0o600
LOCK_SUFFIX = ".lock"


def make_private_dir(directory: Path) -> None:
    """Create `directory` and its missing parents 0700 (whatever the umask); existing ones stay."""
    missing: list[Path] = []
    d = directory
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by someone else: theirs
        os.chmod(d, DIR_MODE)  # mkdir's mode went through the umask


def create_private_file(path: Path) -> bool:
    """Create `path` empty, 0600, unless it exists; True if this call created it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    except PermissionError:
        if path.exists():  # Linux says EACCES before EEXIST in a directory we may not write
            return False
        raise
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away, never added: this is exact
    finally:
        os.close(fd)
    return True


def lock_path(state: Path) -> Path:
    """The lock file of the state database `state`."""
    return state.with_name(state.name + LOCK_SUFFIX)


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a state's lock, as its lock file says (empty fields when it did not say)."""

    pid: int | None
    command: str
    since: str

    def __str__(self) -> str:
        if self.pid is None:
            return "another process"
        what = ", ".join(p for p in (self.command, f"since {self.since}" if self.since else "") if p)
        return f"pid {self.pid}" + (f" ({what})" if what else "")


def _holder(fd: int) -> Holder:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        text = ""
    lines = [*text.splitlines(), "", "", ""]
    pid = int(lines[0]) if lines[0].strip().isdigit() else None
    return Holder(pid, lines[1].strip(), lines[2].strip())


class StateLock:
    """An exclusive lock on one state database, held until `release()` (or the process ends)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state: Path, command: str) -> StateLock:
        """Take the lock of `state` without waiting; StateLocked names the holder if another has it."""
        path = lock_path(state)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise StateOpenError(f"state {state}: cannot open its lock file: {describe(exc)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StateLocked(
                f"state {state} is in use by {holder}: one process at a time may act on a state "
                "(stop it first, or give this one another `state`)"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StateOpenError(f"state {state}: cannot lock {path}: {describe(exc)}") from exc
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{command}\n{now}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Say nobody holds it, and let it go (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # still ours: nobody can be reading a new holder's lines yet
        finally:
            os.close(fd)  # closing releases the flock


def probe_lock(state: Path) -> Holder | None:
    """Who holds the lock of `state` now, or None when nobody does (taken shared for an instant)."""
    try:
        fd = os.open(lock_path(state), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
