"""Source positions (Span) and the one user-facing diagnostic format: path:line:col + line + caret."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mailrules.logs import printable

Severity = Literal["error", "warning"]

#: The longest source line a diagnostic shows whole (a minified or hostile line is cut around
#: the caret).
SHOWN_WIDTH = 160


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
        """`path:line:col: error: message`, then the source line, then a caret.

        The source line is shown with its control characters escaped (`\\x1b`: a file must not
        drive the terminal), the caret under the same characters; a line longer than
        `SHOWN_WIDTH` is cut to that many characters around the caret, `...` marking the cuts.
        """
        out = f"{self.span}: {self.severity}: {self.message}"
        if source_line is not None:
            line = source_line.rstrip("\r\n")
            span = self.span
            end = span.end_column if span.end_line == span.line and span.end_column > span.column else 0
            end = min(end, len(line) + 1)
            shown = _shown(line)
            at = len(_shown(line[: span.column - 1])) + max(0, span.column - 1 - len(line))
            end = end if end > span.column else span.column + 1  # a point: its one character
            width = max(1, len(_shown(line[span.column - 1 : end - 1])))
            if len(shown) > SHOWN_WIDTH:
                left = max(0, min(at - SHOWN_WIDTH // 4, len(shown) - SHOWN_WIDTH))
                cut = ("..." if left else "") + shown[left : left + SHOWN_WIDTH]
                cut += "..." if left + SHOWN_WIDTH < len(shown) else ""
                at += len(cut) - len(cut.removeprefix("...")) - left
                width = max(1, min(width, len(cut) - at))
                shown = cut
            out += f"\n    {shown}\n    {' ' * at}{'^' * width}"
        if self.hint:
            out += f"\n    {self.hint}"
        return out


def _shown(text: str) -> str:
    """`text` as a source line is shown: a tab as one space (columns count it as one character),
    every other character that could end or rewrite a terminal line escaped (logs.printable)."""
    return printable(text.replace("\t", " "))


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
