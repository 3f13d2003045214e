"""`sqlite3` errors as StateError: which state file, what was being done, and what to do about it."""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from mailrules.errors import StateError

#: Primary SQLite result code -> what it means for an operator (https://sqlite.org/rescode.html).
_HINTS: dict[int, str] = {
    sqlite3.SQLITE_FULL: "the disk is full, or the database reached its size limit: "
    "nothing past this point was done; free space and start again",
    sqlite3.SQLITE_NOTADB: "the file is not a SQLite database: check `state =` in the configuration, "
    "or move the file away to start a new state",
    sqlite3.SQLITE_CORRUPT: "the database is damaged: restore a backup, or try `sqlite3 FILE .recover`",
    sqlite3.SQLITE_READONLY: "the file or its directory is not writable by this user",
    sqlite3.SQLITE_PERM: "the file or its directory is not writable by this user",
    sqlite3.SQLITE_CANTOPEN: "the file cannot be opened or created: does its directory exist, "
    "and may this user write to it?",
    sqlite3.SQLITE_BUSY: "another process kept the database locked for 30 s",
    sqlite3.SQLITE_LOCKED: "another connection kept the database locked",
    sqlite3.SQLITE_IOERR: "an I/O error: check the disk and its file system",
    sqlite3.SQLITE_NOMEM: "out of memory",
}


def describe(exc: BaseException) -> str:
    """The error's own text, and what it means when SQLite (or the OS) says which error it is."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
        hint = _HINTS[sqlite3.SQLITE_PERM] if isinstance(exc, PermissionError) else None
    else:
        text = str(exc) or type(exc).__name__
        code = getattr(exc, "sqlite_errorcode", None)
        hint = _HINTS.get(code & 0xFF) if isinstance(code, int) else None
        if hint is None and isinstance(exc, sqlite3.OperationalError):
            hint = _hint_from_text(text.lower())  # not every code reaches Python with its number
    if hint is None:
        return text
    return f"{text} ({hint.replace('this user', f'this user (uid {os.geteuid()})')})"


def _hint_from_text(lowered: str) -> str | None:
    for needle, code in (
        ("disk is full", sqlite3.SQLITE_FULL),
        ("readonly", sqlite3.SQLITE_READONLY),
        ("read-only", sqlite3.SQLITE_READONLY),
        ("unable to open", sqlite3.SQLITE_CANTOPEN),
        ("locked", sqlite3.SQLITE_BUSY),
    ):
        if needle in lowered:
            return _HINTS[code]
    return None


def state_error(
    path: str | Path, doing: str, exc: BaseException, kind: type[StateError] = StateError
) -> StateError:
    """`state PATH: cannot DOING: WHY (HINT)` as a StateError (or `kind`), for the caller to raise."""
    return kind(f"state {path}: cannot {doing}: {describe(exc)}")


class Guardable(Protocol):
    """What `guarded` needs of a store: its lock, the file's name, and a slot for what it does."""

    _lock: threading.RLock
    _doing: str | None
    path: str


S = TypeVar("S", bound=Guardable)
P = ParamSpec("P")
R = TypeVar("R")


def guarded(doing: str) -> Callable[[Callable[Concatenate[S, P], R]], Callable[Concatenate[S, P], R]]:
    """Run the method under the store's lock; a `sqlite3` error becomes a StateError saying that
    `doing` failed on this file (never a raw traceback: a full disk is an operator's problem).
    The store's `transaction()` names its own failures (BEGIN, COMMIT) by the same `doing`."""

    def wrap(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
        @functools.wraps(method)
        def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            with self._lock:
                outer, self._doing = self._doing, doing
                try:
                    return method(self, *args, **kwargs)
                except sqlite3.Error as exc:
                    raise state_error(self.path, doing, exc) from exc
                finally:
                    self._doing = outer

        return run

    return wrap
