"""Parsed rule files and the rule set's check results kept between processes, in the cache directory.

`mailrules check`, `run` and the daemon's start each parse every rule file again: 1.2 s of CPU for
10,000 rules, plus importing Lark (~50 ms). This keeps what a load found, for each rule-set root,
in one file of the cache directory (mailrules/cachedir.py): per rule file, the SHA-256 of its
bytes and its AST; and, for the whole set, its files' digests and the checks' diagnostics. A
file whose bytes are those recorded is not parsed; a set whose files are all as recorded (and has
no test blocks: their message files are outside the rule files) is not checked again.

Only files that parsed without any diagnostic are kept. Everything depends on the code that
built it, so the file is named by `codekey.code_digest()` (the grammar, every module of dsl/,
mailrules' and Python's versions): other code never reads it.

Format: `marshal` of plain data only (tuples, lists, strings, numbers, None, bytes, dicts), never
pickle: reading it runs no code. An AST node is a list `[class number, field values...]` where
the class numbers index a table of `module:name` entries, each resolved only among the AST's own
modules (mailrules.dsl.ast*, mailrules.source) and only to a frozen dataclass whose fields are the
ones recorded; anything else makes the whole file unusable (ignored, written again). The file is
read only when it is this user's, writable by nobody else, in a directory of the same kind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import importlib
import marshal
import os
from collections.abc import Callable
from typing import Any

from mailrules.cachedir import cache_directory, read_private, write_atomic
from mailrules.dsl import ast
from mailrules.dsl.codekey import code_digest
from mailrules.source import Diagnostic, Span

__all__ = ["DiskCache", "Unsupported"]

#: The layout of the file; bumped when it changes.
_FORMAT = 1
#: A larger file is neither read nor written (about 400 bytes per rule).
_MAX_BYTES = 256 << 20
_SCALARS = frozenset({str, int, float, bool, type(None)})
#: Class numbers of values that are not AST classes.
_SPAN_HERE, _DATE, _DATETIME, _TIME = -1, -2, -3, -4
_ALLOWED_MODULES = ("mailrules.source",)
_ALLOWED_PREFIX = "mailrules.dsl.ast"
_new = object.__new__

Signature = tuple[tuple[str, bytes], ...]


class Unsupported(Exception):
    """A value this format does not hold (the file is then simply not kept)."""


_makers: dict[type, tuple[Callable[..., Any], tuple[str, ...]]] = {}


def _maker(cls: type) -> tuple[Callable[..., Any], tuple[str, ...]]:
    """A constructor of `cls` from every field's value in order, without the dataclass `__init__`:
    a frozen dataclass sets each field through `object.__setattr__` (a name lookup per field);
    this calls each slot's descriptor directly (measured: 2.6 times faster for a Span)."""
    known = _makers.get(cls)
    if known is not None:
        return known
    if not dataclasses.is_dataclass(cls):
        raise Unsupported(f"{cls!r} is not a dataclass")
    names = tuple(f.name for f in dataclasses.fields(cls))
    setters = []
    for name in names:
        descriptor: Any = cls.__dict__.get(name)
        if type(descriptor).__name__ != "member_descriptor":  # not a slot: cannot be set this way
            raise Unsupported(f"{cls.__name__}.{name} is not a slot")
        setters.append(descriptor.__set__)
    # The generated code names only a0.., s0.., new and cls: nothing from the file reaches it.
    args = ", ".join(f"a{i}" for i in range(len(names)))
    body = "".join(f"    s{i}(o, a{i})\n" for i in range(len(names)))
    env: dict[str, Any] = {"new": _new, "cls": cls, **{f"s{i}": s for i, s in enumerate(setters)}}
    exec(f"def make({args}):\n    o = new(cls)\n{body}    return o\n", env)
    _makers[cls] = env["make"], names  # two threads may both make it: the same function
    return _makers[cls]


_encoders: dict[tuple[type, int], Callable[[Any, Callable[[Any], Any], str], list[Any]]] = {}


def _encoder(
    cls: type, number: int, names: tuple[str, ...]
) -> Callable[[Any, Callable[[Any], Any], str], list[Any]]:
    """`e(x, enc, file)`: `[number, field values...]` of a `cls`, each field as it is when it is a
    str, int, float, bool or None, as `[_SPAN_HERE, ...]` when it is a Span of `file`, else
    `enc(value)`; generated once per class and number, without the attrgetter tuple and the list
    comprehension of each node (the encoding of a cold load's 10,000 rules: measured in
    bench/README.md, "Session 19: cold parse")."""
    known = _encoders.get((cls, number))
    if known is not None:
        return known
    if not all(name.isidentifier() for name in names):  # pragma: no cover - dataclass fields are
        raise Unsupported(f"{cls.__name__} has a field that is no identifier")
    # The generated code names only the fields of a dataclass of the AST (identifiers), numbers,
    # and a0.., x, enc, file, S, Span, H: nothing from a file reaches it.
    lines = ["def e(x, enc, file):"]
    lines += [f"    a{i} = x.{name}" for i, name in enumerate(names)]
    values = "".join(
        f", a{i} if type(a{i}) in S else [H, a{i}.line, a{i}.column, a{i}.end_line, a{i}.end_column]"
        f" if type(a{i}) is Span and a{i}.file == file else enc(a{i})"
        for i in range(len(names))
    )
    lines.append(f"    return [{number}{values}]")
    env: dict[str, Any] = {"S": _SCALARS, "Span": Span, "H": _SPAN_HERE}
    exec("\n".join(lines) + "\n", env)
    _encoders[(cls, number)] = env["e"]  # two threads may both make it: the same function
    return _encoders[(cls, number)]


def _resolve(entry: Any) -> tuple[type, Callable[..., Any], tuple[str, ...]]:
    """A class table entry `("module:Name", (field, ...))` -> (class, maker, fields), only for the
    AST's own modules and only when the fields are those recorded."""
    if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)):
        raise Unsupported("bad class entry")
    module, _, name = entry[0].partition(":")
    if not (module in _ALLOWED_MODULES or module.startswith(_ALLOWED_PREFIX)) or not name.isidentifier():
        raise Unsupported(f"class {entry[0]!r} is not an AST class")
    cls = getattr(importlib.import_module(module), name, None)
    if not isinstance(cls, type):
        raise Unsupported(f"no class {entry[0]!r}")
    make, names = _maker(cls)
    if names != entry[1]:
        raise Unsupported(f"{entry[0]} has other fields now")
    return cls, make, names


class _Codec:
    """Encodes AST values to plain data and back, with one class table for the whole file."""

    def __init__(self, table: tuple[Any, ...] = ()) -> None:
        self.table: list[tuple[str, tuple[str, ...]]] = []
        self.number: dict[type, int] = {}
        self.makers: list[Callable[..., Any]] = []
        self.encoders: list[Callable[[Any, Callable[[Any], Any], str], list[Any]]] = []
        for entry in table:
            cls, make, names = _resolve(entry)
            self._add(cls, make, names)

    def _add(self, cls: type, make: Callable[..., Any], names: tuple[str, ...]) -> int:
        self.number[cls] = len(self.table)
        self.table.append((f"{cls.__module__}:{cls.__qualname__}", names))
        self.makers.append(make)
        self.encoders.append(_encoder(cls, len(self.table) - 1, names))
        return self.number[cls]

    def encode(self, value: Any, file: str) -> Any:
        """Plain data for `value` (Unsupported for what the format does not hold)."""
        scalars, number_of, encoders = _SCALARS, self.number, self.encoders

        def enc(x: Any) -> Any:
            t = type(x)
            if t is Span and x.file == file:  # the commonest node: its file is the entry's own
                return [_SPAN_HERE, x.line, x.column, x.end_line, x.end_column]
            number = number_of.get(t)
            if number is not None:
                return encoders[number](x, enc, file)
            if t is tuple:
                return tuple([v if type(v) in scalars else enc(v) for v in x])
            if t in scalars:
                return x
            if t is dt.date:
                return [_DATE, x.toordinal()]
            if t is dt.datetime or t is dt.time:
                if x.tzinfo is not None and type(x.tzinfo) is not dt.timezone:
                    raise Unsupported("a time zone other than a fixed offset")
                return [_DATETIME if t is dt.datetime else _TIME, x.isoformat()]
            allowed = t.__module__ in _ALLOWED_MODULES or t.__module__.startswith(_ALLOWED_PREFIX)
            if not allowed or not t.__qualname__.isidentifier():  # what _resolve can find again
                raise Unsupported(f"a {t.__module__}.{t.__qualname__}")
            make, names = _maker(t)
            self._add(t, make, names)
            return enc(x)

        return enc(value)

    def decode(self, value: Any, file: str) -> Any:
        """The value `encode` was given; ValueError/Unsupported/TypeError/IndexError on a bad one."""
        makers, scalars = self.makers, _SCALARS
        span = _SPAN_MAKER

        def dec(x: Any) -> Any:
            t = type(x)
            if t is list:
                number = x[0]
                if number >= 0:
                    return makers[number](*[v if type(v) in scalars else dec(v) for v in x[1:]])
                if number == _SPAN_HERE:
                    return span(file, x[1], x[2], x[3], x[4])
                if number == _DATE:
                    return dt.date.fromordinal(x[1])
                if number == _DATETIME:
                    return dt.datetime.fromisoformat(x[1])
                if number == _TIME:
                    return dt.time.fromisoformat(x[1])
                raise Unsupported(f"class number {number}")
            if t is tuple:
                return tuple([v if type(v) in scalars else dec(v) for v in x])
            if t in scalars:
                return x
            raise Unsupported(f"a {t.__name__} in the file")

        return dec(value)


_SPAN_MAKER = _maker(Span)[0]
_BAD = (Unsupported, ValueError, TypeError, IndexError, KeyError, OverflowError, RecursionError)


class DiskCache:
    """What earlier loads of one rule-set root found; `save()` writes it back when it changed."""

    def __init__(self, path: str, data: Any) -> None:
        self.path = path
        self.dirty = False
        self.codec = _Codec()
        #: name -> (digest, encoded RuleFile)
        self.files: dict[str, tuple[bytes, Any]] = {}
        self.check: tuple[Signature, Any] | None = None
        self.used: set[str] | None = None  # set by retain(): the files to keep
        try:
            if data is not None:
                form, table, files, check = data
                if form != _FORMAT or not isinstance(files, dict):
                    raise Unsupported("another format")
                if check is not None and not (isinstance(check, tuple) and len(check) == 2):
                    raise Unsupported("bad check entry")
                self.codec = _Codec(table)
                self.files = files
                self.check = check
        except (*_BAD, ImportError):
            self.codec, self.files, self.check, self.dirty = _Codec(), {}, None, True

    @classmethod
    def open(cls, root: str) -> DiskCache | None:
        """The cache of this root (empty when there is none yet), or None when nothing can be cached."""
        directory = cache_directory()
        code = code_digest()
        if directory is None or code is None:
            return None
        where = hashlib.sha256(os.path.abspath(root).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        path = os.path.join(directory, f"parsed-{where}-{code[:16]}.marshal")
        raw = read_private(path, _MAX_BYTES)
        data = None
        if raw is not None:
            try:
                data = marshal.loads(raw)
            except (EOFError, ValueError, TypeError):
                data = None
        return cls(path, data)

    def rule_file(self, name: str, digest: bytes) -> ast.RuleFile | None:
        """The file's AST as recorded for these bytes, or None."""
        found = self.files.get(name)
        if not (isinstance(found, tuple) and len(found) == 2 and found[0] == digest):
            return None
        try:
            value = self.codec.decode(found[1], name)
        except _BAD:
            value = None
        if not isinstance(value, ast.RuleFile) or value.path != name:
            del self.files[name]
            self.dirty = True
            return None
        return value

    def put_rule_file(self, name: str, digest: bytes, rule_file: ast.RuleFile) -> None:
        """Record a file that parsed without diagnostics (one the format cannot hold is left out)."""
        try:
            self.files[name] = (digest, self.codec.encode(rule_file, name))
        except (Unsupported, RecursionError):
            self.files.pop(name, None)
        self.dirty = True

    def retain(self, clean: dict[str, tuple[bytes, ast.RuleFile]]) -> None:
        """Keep exactly these files (those of the current load that parsed cleanly), adding the ones
        the process had parsed before the cache was opened; `save` drops the others."""
        self.used = set(clean)
        for name, (digest, rule_file) in clean.items():
            found = self.files.get(name)
            if not (isinstance(found, tuple) and len(found) == 2 and found[0] == digest):
                self.put_rule_file(name, digest, rule_file)

    def diagnostics(self, signature: Signature) -> list[Diagnostic] | None:
        """The checks' diagnostics recorded for exactly these files and digests, or None."""
        if self.check is None or self.check[0] != signature:
            return None
        try:
            value = self.codec.decode(self.check[1], "")
        except _BAD:
            value = None
        if not (isinstance(value, tuple) and all(isinstance(d, Diagnostic) for d in value)):
            self.check, self.dirty = None, True
            return None
        return list(value)

    def put_diagnostics(self, signature: Signature, diagnostics: list[Diagnostic]) -> None:
        try:
            self.check = (signature, self.codec.encode(tuple(diagnostics), ""))
        except (Unsupported, RecursionError):
            self.check = None
        self.dirty = True

    def save(self) -> None:
        """Write the file again when anything changed (files of this root no longer loaded are
        dropped); remove this root's files of other code versions. Failures are ignored."""
        if self.used is not None and set(self.files) - self.used:
            self.files = {k: v for k, v in self.files.items() if k in self.used}
            self.dirty = True
        if not self.dirty:
            return
        try:
            data = marshal.dumps((_FORMAT, tuple(self.codec.table), self.files, self.check))
        except ValueError:
            return
        if len(data) > _MAX_BYTES or not write_atomic(self.path, data):
            return
        self.dirty = False
        import glob  # only when writing

        prefix = os.path.basename(self.path).rsplit("-", 1)[0]
        for other in glob.glob(os.path.join(glob.escape(os.path.dirname(self.path)), f"{prefix}-*.marshal")):
            if other != self.path:
                with contextlib.suppress(OSError):
                    os.unlink(other)
