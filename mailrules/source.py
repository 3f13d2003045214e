"""Source positions (Span) and the one user-facing diagnostic format: path:line:col + line + caret."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Span:
    """Where a node came from: 1-based line and column of its first character."""

    file: str
    line: int
    column: int
    end_line: int = 0
    end_column: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    @property
    def short(self) -> str:
        """`file:line`, the form runtime errors use."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One message for the user, pointing at a place in a rule file."""

    span: Span
    message: str
    severity: Severity = "error"
    hint: str = ""

    def render(self, source_line: str | None = None) -> str:
        """`path:line:col: error: message`, then the source line, then a caret."""
        out = f"{self.span}: {self.severity}: {self.message}"
        if source_line is not None:
            line = source_line.rstrip("\r\n").expandtabs(1)
            width = max(1, min(self.span.end_column, len(line) + 1) - self.span.column) if (
                self.span.end_line == self.span.line and self.span.end_column > self.span.column
            ) else 1
            out += f"\n    {line}\n    {' ' * (self.span.column - 1)}{'^' * width}"
        if self.hint:
            out += f"\n    {self.hint}"
        return out


def source_line(text: str, line: int) -> str | None:
    """The 1-based `line` of `text`, or None when out of range."""
    lines = text.splitlines()
    if 1 <= line <= len(lines):
        return lines[line - 1]
    if line == len(lines) + 1:
        return ""
    return None


def render_all(diagnostics: list[Diagnostic], sources: dict[str, str]) -> str:
    """Render diagnostics in order, each with its source line when the file text is known."""
    parts = []
    for d in diagnostics:
        text = sources.get(d.span.file)
        parts.append(d.render(source_line(text, d.span.line) if text is not None else None))
    return "\n".join(parts)
