"""The per-user cache directory ($XDG_CACHE_HOME/mailrules): safe to read, written whole or not at all.

Everything in it is optional and rebuilt when missing (docs/operations.md lists the files): the
grammar's parser tables (dsl/parser.py), parsed rule files (dsl/parse_cache.py) and the user
regular expressions' translations (dsl/userregex.py). Lark writes its tables with pickle, which
runs code when loaded, so the directory is used only when it is this user's own and writable by
nobody else; when it cannot be created or is not (a read-only home in a container, another
owner), nothing is cached and nothing fails.
"""

from __future__ import annotations

import contextlib
import os
import stat

__all__ = ["cache_directory", "read_private", "write_atomic"]


def cache_directory() -> str | None:
    """`$XDG_CACHE_HOME/mailrules` (default `~/.cache/mailrules`), created if need be, when it is
    this user's own and not group- or world-writable; else None (nothing is cached)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, empty or relative: the XDG default
        base = os.path.join(os.path.expanduser("~"), ".cache")
        if not os.path.isabs(base):  # no home directory
            return None
    directory = os.path.join(base, "mailrules")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.stat(directory)
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None
    return directory


def read_private(path: str, limit: int) -> bytes | None:
    """The bytes of a cache file when it is a regular file of this user's, writable by nobody else
    and at most `limit` bytes; else None (missing, foreign, too large, unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            st = os.fstat(fd)
            if not _private(st) or st.st_size > limit:
                return None
            return f.read(limit + 1)
        except OSError:
            return None


def _private(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022


def write_atomic(path: str, data: bytes) -> bool:
    """Write `data` to a temporary file beside `path` and rename it over `path` (a reader sees the
    old file or the new one, never half of one); False when that failed (nothing is left)."""
    import tempfile  # only when writing: it imports shutil, random, bz2 and lzma (~3 ms)

    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return True
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return False
