"""load_rule_set(): read a rules directory or file, parse and check it, collect every diagnostic.

Loading again parses only the files whose bytes changed: the process keeps what the last load
parsed (path and sha256 of the bytes -> parsed file and its diagnostics), so the daemon's
reload of an unchanged rule set parses nothing, and one edited file of many costs one parse.
Between processes the cache directory keeps the same (dsl/parse_cache.py): a `mailrules run` or
`check` of unchanged files neither parses them nor imports the parser (Lark).
"""

from __future__ import annotations

import atexit
import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from mailrules.dsl import ast
from mailrules.dsl.gcpause import gc_paused
from mailrules.dsl.parse_cache import DiskCache
from mailrules.source import Diagnostic, Span, render_all


@dataclass(slots=True)
class LoadResult:
    """A rule set with every diagnostic found while reading, parsing and checking it."""

    rule_set: ast.RuleSet
    diagnostics: list[Diagnostic]
    sources: dict[str, str] = field(default_factory=dict)
    #: The files this load parsed; the others were unchanged since the last load and reused.
    parsed: tuple[str, ...] = ()
    #: The files this load read from the cache directory instead of parsing them.
    from_disk: tuple[str, ...] = ()

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def render(self) -> str:
        """Every diagnostic, errors and warnings, in file and line order, each with its caret."""
        return render_all(self.diagnostics, self.sources)


def decode(data: bytes, path: str) -> tuple[str, list[Diagnostic]]:
    """UTF-8 text of a rule file (BOM dropped); an invalid byte is a diagnostic at its line/col."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as err:
        before = data[: err.start].decode("utf-8", errors="replace")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        bad = data[err.start : err.end].hex(" ")
        diag = Diagnostic(
            Span(path, line, col, line, col + 1), f"invalid UTF-8 (byte {bad}); rule files are UTF-8 text"
        )
        return data.decode("utf-8", errors="replace"), [diag]


def _files(root: Path) -> list[Path]:
    if root.is_dir():
        return sorted(
            (p for p in root.iterdir() if p.suffix == ".rules" and p.is_file()), key=lambda p: p.name
        )
    return [root]


@dataclass(frozen=True, slots=True)
class _Parsed:
    """One file as the last load read it: its bytes' digest, text, parse and its diagnostics."""

    digest: bytes
    text: str
    rule_file: ast.RuleFile
    diagnostics: tuple[Diagnostic, ...]


@dataclass(frozen=True, slots=True)
class _Memo:
    """What the last load found: each file parsed, and the whole result of that rule set."""

    files: dict[str, _Parsed]
    root: str
    signature: tuple[tuple[str, bytes], ...]
    result: LoadResult


_memo_lock = threading.Lock()
_memo: _Memo | None = None


def clear_cache() -> None:
    """Forget what earlier loads parsed (the next load parses every file)."""
    global _memo
    with _memo_lock:
        _memo = None


# At exit the rule set is let go before Python's final collections: held by this module until
# then, all of it was walked by them (measured: +0.4 s of CPU at the exit of `mailrules check`
# of 10,000 rules).
atexit.register(clear_cache)


def check_rule_set(rule_set: ast.RuleSet, sources: dict[str, str]) -> list[Diagnostic]:
    """dsl.check's check_rule_set, imported on first use (a load answered by the caches checks nothing)."""
    from mailrules.dsl import check

    return check.check_rule_set(rule_set, sources)


def parse_text(text: str, path: str) -> tuple[ast.RuleFile | None, list[Diagnostic]]:
    """The parser's parse_text, imported on first use: a load answered by the caches needs no Lark."""
    from mailrules.dsl import parser

    return parser.parse_text(text, path)


def _parse_file(name: str, data: bytes, digest: bytes, disk: DiskCache | None) -> tuple[_Parsed, bool]:
    """The file parsed, or read from the cache directory (then True)."""
    text, decode_diags = decode(data, name)
    if disk is not None and not decode_diags:
        cached = disk.rule_file(name, digest)
        if cached is not None:
            return _Parsed(digest, text, cached, ()), True
    rule_file, parse_diags = parse_text(text, name)
    if disk is not None and rule_file is not None and not decode_diags and not parse_diags:
        disk.put_rule_file(name, digest, rule_file)
    taken = {(d.span.line, d.span.column) for d in decode_diags}
    # the replacement character of a bad byte gives a second error at the same place: drop it
    diags = (*decode_diags, *(d for d in parse_diags if (d.span.line, d.span.column) not in taken))
    if rule_file is None:  # pragma: no cover - parse_text always returns a RuleFile
        rule_file = ast.RuleFile(name, (), ())
    return _Parsed(digest, text, rule_file, diags), False


def _copy(result: LoadResult, parsed: tuple[str, ...]) -> LoadResult:
    """A result the caller may change without changing the remembered one."""
    sources = dict(result.sources)
    rule_set = ast.RuleSet(result.rule_set.files, dict(sources))
    return LoadResult(rule_set, list(result.diagnostics), sources, parsed, ())


def load_rule_set(path: str | Path) -> LoadResult:
    """Parse and check every `*.rules` file of a directory (lexical order), or one rule file.

    A file whose bytes are those the last load read is not parsed again; when no file changed
    (same files, same bytes) the checks are not run again either, unless the rule set has test
    blocks (their message files are outside the rule files). Cross-file checks (duplicate rule
    names...) run whenever any file changed.
    """
    with gc_paused():
        return _load(Path(path))


def _load(root: Path) -> LoadResult:
    global _memo
    diagnostics: list[Diagnostic] = []
    if not root.exists():
        diagnostics.append(Diagnostic(Span(str(root), 1, 1), "no such rule file or directory"))
        return LoadResult(ast.RuleSet((), {}), diagnostics, {})
    paths = _files(root)
    if not paths:
        diagnostics.append(Diagnostic(Span(str(root), 1, 1), "no *.rules files in this directory", "warning"))
    with _memo_lock:
        memo = _memo
    known = memo.files if memo is not None else {}
    files: dict[str, _Parsed] = {}
    parsed: list[str] = []
    from_disk: list[str] = []
    disk: DiskCache | None = None
    unreadable = False
    for file in paths:
        name = str(file)
        try:
            data = file.read_bytes()
        except OSError as err:
            diagnostics.append(Diagnostic(Span(name, 1, 1), f"cannot read: {err.strerror or err}"))
            unreadable = True
            continue
        digest = hashlib.sha256(data).digest()
        entry = known.get(name)
        if entry is None or entry.digest != digest:
            if disk is None:
                disk = DiskCache.open(str(root))
            entry, hit = _parse_file(name, data, digest, disk)
            (from_disk if hit else parsed).append(name)
        files[name] = entry
    signature = tuple((name, entry.digest) for name, entry in files.items())
    if (
        memo is not None
        and not unreadable
        and memo.root == str(root)
        and memo.signature == signature
        and not memo.result.rule_set.tests
    ):
        return _copy(memo.result, ())
    sources = {name: entry.text for name, entry in files.items()}
    for entry in files.values():
        diagnostics.extend(entry.diagnostics)
    rule_set = ast.RuleSet(tuple(entry.rule_file for entry in files.values()), dict(sources))
    checked = None
    keep_checks = not unreadable and not rule_set.tests  # test blocks read message files: checked anew
    if keep_checks and disk is None:
        disk = DiskCache.open(str(root))
    if keep_checks and disk is not None:
        checked = disk.diagnostics(signature)
    if checked is None:
        checked = check_rule_set(rule_set, sources)
        if keep_checks and disk is not None:
            disk.put_diagnostics(signature, checked)
    diagnostics.extend(checked)
    diagnostics.sort(key=lambda d: (d.span.file, d.span.line, d.span.column))
    if disk is not None:
        disk.retain({name: (e.digest, e.rule_file) for name, e in files.items() if not e.diagnostics})
        disk.save()
    result = LoadResult(rule_set, diagnostics, sources, tuple(parsed), tuple(from_disk))
    with _memo_lock:
        _memo = _Memo(files, str(root), signature, _copy(result, ()))
    return result
