"""The dataclasses' generated methods, compiled once per user and interpreter instead of every start.

On CPython 3.11 `dataclasses` writes each method it generates (`__init__`, `__repr__`, `__eq__`,
`__hash__`, a frozen class's `__setattr__` and `__delattr__`) as source text and compiles it with
`exec`: 771 methods for `mailrules run`, ~40% of its imports' CPU, most of it in the compiler
(bench/README.md, session 19, "Start-up"). `install()` puts in `dataclasses._create_fn`'s place
the same function that first looks the text up in a table of code objects: a method is the code
`exec(text)` compiles (same text, same `<string>` file name), only not compiled again. The table is
read from the cache directory (cachedir.py: the user's own, writable by nobody else: it holds code,
as the grammar's pickled tables do) and `save()` writes it back when the process compiled a text it
did not hold. Only where `_create_fn` is the function copied here (CPython 3.11); elsewhere
nothing changes. The command line installs it in a process of its own (`cliexit.whole_process`).
"""

from __future__ import annotations

import dataclasses
import marshal
import os
import sys
import threading
from types import CodeType
from typing import Any

from mailrules.cachedir import cache_directory, read_private, write_atomic

__all__ = ["MAX_BYTES", "MAX_ENTRIES", "cache_path", "install", "installed", "save", "uninstall"]

#: A table file larger than this is not read (the run path's is ~0.65 MB).
MAX_BYTES = 16 * 1024 * 1024
#: A save that would keep more texts than this keeps only those the saving process used.
MAX_ENTRIES = 10_000

# `dataclasses._create_fn` of CPython 3.11 (3.11.0 to 3.11.x), by its code's names and constants:
# any other function is left alone.
_EXPECTED_NAMES = ("MISSING", "join", "keys", "exec")
_EXPECTED_STRINGS = (
    "",
    "_return_type",
    "->_return_type",
    ",",
    "\n",
    " def ",
    "(",
    ")",
    ":\n",
    ", ",
    "def __create_fn__(",
    "):\n",
    "\n return ",
    "__create_fn__",
)

_known: dict[str, CodeType] = {}  # text -> code, as read from the table file
_used: dict[str, CodeType] = {}  # the texts this process asked for
_fresh = False  # a text was compiled here that the file did not hold
_path: str | None = None
_original: Any = None
_lock = threading.Lock()  # the daemon's threads make classes too; a save copies the tables


def cache_path() -> str | None:
    """The table's file for this interpreter (its version and bytecode), or None without a cache
    directory."""
    directory = cache_directory()
    if directory is None:
        return None
    name = f"dataclass-code-{sys.implementation.cache_tag}-{sys.hexversion:x}-{marshal.version}.marshal"
    return os.path.join(directory, name)


def _supported(fn: Any) -> bool:
    code = getattr(fn, "__code__", None)
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11) or code is None:
        return False
    strings = tuple(c for c in code.co_consts if isinstance(c, str))
    inner = [c for c in code.co_consts if isinstance(c, CodeType)]  # the body lines' indent
    return bool(
        code.co_names == _EXPECTED_NAMES
        and strings == _EXPECTED_STRINGS
        and len(inner) == 1
        and "  " in inner[0].co_consts
    )


def _cached_create_fn(
    name: str,
    args: list[str],
    body: list[str],
    *,
    globals: dict[str, Any] | None = None,  # dataclasses' own keywords
    locals: dict[str, Any] | None = None,
    return_type: Any = dataclasses.MISSING,
) -> Any:
    """`dataclasses._create_fn` of CPython 3.11, line for line, but for the compiled text's lookup."""
    global _fresh
    if locals is None:
        locals = {}
    return_annotation = ""
    if return_type is not dataclasses.MISSING:
        locals["_return_type"] = return_type
        return_annotation = "->_return_type"
    joined = ",".join(args)
    lines = "\n".join(f"  {b}" for b in body)
    txt = f" def {name}({joined}){return_annotation}:\n{lines}"
    local_vars = ", ".join(locals.keys())
    txt = f"def __create_fn__({local_vars}):\n{txt}\n return {name}"
    code = _known.get(txt)
    if code is None:
        code = compile(txt, "<string>", "exec")  # what exec(txt, ...) compiles
    with _lock:
        if txt not in _known:
            _fresh = True
        _used[txt] = code
    ns: dict[str, Any] = {}
    exec(code, globals, ns)  # as dataclasses does
    return ns["__create_fn__"](**locals)


def _read(data: bytes) -> dict[str, CodeType]:
    try:
        table = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return {}
    if not isinstance(table, dict):
        return {}
    return {k: v for k, v in table.items() if isinstance(k, str) and isinstance(v, CodeType)}


def install() -> bool:
    """Read the table and compile only what it lacks from now on; False (nothing changed) on
    another interpreter or without a usable cache directory. Once per process."""
    global _path, _original
    if _original is not None:
        return True
    original = dataclasses._create_fn  # type: ignore[attr-defined]
    if not _supported(original):
        return False
    path = cache_path()
    if path is None:
        return False
    data = read_private(path, MAX_BYTES)
    if data:
        _known.update(_read(data))
    _path, _original = path, original
    dataclasses._create_fn = _cached_create_fn  # type: ignore[attr-defined]
    return True


def installed() -> bool:
    return _original is not None


def save() -> bool:
    """Write the table back when this process compiled a text it lacked (the texts it held and
    those it used; only those used when that would pass MAX_ENTRIES); True when written."""
    global _fresh
    with _lock:
        if not _fresh or _path is None:
            return False
        used = dict(_used)
        table = {**_known, **used}
        _fresh = False
    if len(table) > MAX_ENTRIES:
        table = used
    try:
        data = marshal.dumps(table)
    except ValueError:  # not expected of code objects; a cache is never worth a failure
        data = None
    if data is None or not write_atomic(_path, data):
        with _lock:
            _fresh = True  # another save may try again
        return False
    _known.update(used)
    return True


def uninstall() -> None:
    """Put `dataclasses`' own function back and forget the table (tests)."""
    global _path, _original, _fresh
    if _original is not None:
        dataclasses._create_fn = _original  # type: ignore[attr-defined]
    _path, _original, _fresh = None, None, False
    _known.clear()
    _used.clear()
