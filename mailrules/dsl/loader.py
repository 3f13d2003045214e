"""load_rule_set(): read a rules directory or file, parse and check it, collect every diagnostic."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mailrules.dsl import ast
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.parser import parse_text
from mailrules.source import Diagnostic, Span, render_all


@dataclass(slots=True)
class LoadResult:
    """A rule set with every diagnostic found while reading, parsing and checking it."""

    rule_set: ast.RuleSet
    diagnostics: list[Diagnostic]
    sources: dict[str, str] = field(default_factory=dict)

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


def load_rule_set(path: str | Path) -> LoadResult:
    """Parse and check every `*.rules` file of a directory (lexical order), or one rule file."""
    root = Path(path)
    diagnostics: list[Diagnostic] = []
    sources: dict[str, str] = {}
    files: list[ast.RuleFile] = []
    if not root.exists():
        diagnostics.append(Diagnostic(Span(str(root), 1, 1), "no such rule file or directory"))
        return LoadResult(ast.RuleSet((), {}), diagnostics, sources)
    paths = _files(root)
    if not paths:
        diagnostics.append(Diagnostic(Span(str(root), 1, 1), "no *.rules files in this directory", "warning"))
    for file in paths:
        name = str(file)
        try:
            data = file.read_bytes()
        except OSError as err:
            diagnostics.append(Diagnostic(Span(name, 1, 1), f"cannot read: {err.strerror or err}"))
            continue
        text, decode_diags = decode(data, name)
        sources[name] = text
        rule_file, parse_diags = parse_text(text, name)
        taken = {(d.span.line, d.span.column) for d in decode_diags}
        diagnostics.extend(decode_diags)
        # the replacement character of a bad byte gives a second error at the same place: drop it
        diagnostics.extend(d for d in parse_diags if (d.span.line, d.span.column) not in taken)
        if rule_file is not None:
            files.append(rule_file)
    rule_set = ast.RuleSet(tuple(files), dict(sources))
    diagnostics.extend(check_rule_set(rule_set, sources))
    diagnostics.sort(key=lambda d: (d.span.file, d.span.line, d.span.column))
    return LoadResult(rule_set, diagnostics, sources)
