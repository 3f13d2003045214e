"""Configuration problems as the user reads them: the rule diagnostics' format, secrets kept out.

A problem in the file renders as `path:line:col: error: key: message`, the source line and a
caret (`mailrules.source.Diagnostic`, the renderer the rule errors use); one without a place in
the file (an environment variable, an unreadable file) as one line, `$VARIABLE: error: ...` or
`path: error: ...`. A source line that may hold a secret is never shown (see `may_hold_secret`).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from mailrules.config.locate import KeyPath, Place, statement_starts
from mailrules.config.names import escape
from mailrules.source import Diagnostic, Span

# A key whose value is a credential (`password`, `client_secret`, `refresh_token`...: the last
# word of its name; `password_file` and `password_env` name where one is, not the secret), and a
# URL with a user part (`postgresql://user:password@host/db`).
_SECRET_KEY = re.compile(r"(?:^|[\s{,.\"'_])(?:password|secret|token)[\"']?\s*=", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"://[^/\s\"'@]*@")


@dataclass(frozen=True, slots=True)
class Problem:
    """One configuration error: what (`message`, starting with the key), and where: a `span` in
    the file, else `where` (`$VARIABLE`, or the file when no line is known)."""

    message: str
    span: Span | None = None
    where: str = ""

    def order(self) -> tuple[int, int, int]:
        """The file's problems in line and column order, then the environment's."""
        if self.span is not None:
            return (0, self.span.line, self.span.column)
        return (1, 0, 0) if self.where.startswith("$") else (0, 0, 0)


def problem_at(
    path: KeyPath,
    message: str,
    origins: Mapping[KeyPath, str],
    places: Mapping[KeyPath, Place],
    file: str,
    *,
    key: bool = False,
) -> Problem:
    """A problem about the key at `path`, placed at its value (or at the key itself when `key`),
    else at the nearest enclosing table that has a place; `$VARIABLE` when the environment set it."""
    for n in range(len(path), 0, -1):
        origin = origins.get(path[:n])
        if origin is None:
            continue
        if origin.startswith("$"):
            return Problem(message, where=origin)
        place = places.get(path[:n])
        if place is None:
            break
        value = place.value if n == len(path) and not key else None
        return Problem(message, value or place.key)
    return Problem(message, where=file)


def render(problems: Iterable[Problem], text: str) -> str:
    """Every problem, in order, each with its source line and caret when it has a place.

    Control characters of messages and lines are escaped: values are echoed, and a file may hold
    anything before tomllib refuses it.
    """
    lines = _Lines(text)
    out = []
    for p in sorted(problems, key=Problem.order):
        if p.span is None:
            out.append(f"{escape(p.where)}: error: {escape(p.message)}")
            continue
        diagnostic = Diagnostic(replace(p.span, file=escape(p.span.file)), escape(p.message))
        out.append(diagnostic.render(None if lines.may_hold_secret(p.span.line) else lines.line(p.span.line)))
    return "\n".join(out)


def may_hold_secret(text: str, line: int) -> bool:
    """Whether `line` of `text` belongs to a statement that may hold a secret (see _Lines)."""
    return _Lines(text).may_hold_secret(line)


class _Lines:
    """The lines and statements of a file, indexed once for all its problems."""

    def __init__(self, text: str) -> None:
        self.text = text
        # Lines as TOML counts them: "\n" ends one (str.splitlines would also split at U+2028).
        self.starts = [0, *(m.end() for m in re.finditer("\n", text))]
        self.statements = statement_starts(text)

    def line(self, n: int) -> str | None:
        if not 1 <= n <= len(self.starts):
            return None
        start = self.starts[n - 1]
        end = self.text.find("\n", start)
        return self.text[start : len(self.text) if end < 0 else end]

    def may_hold_secret(self, n: int) -> bool:
        """Whether line `n` belongs to a statement that sets a password, a secret or a token, or
        holds a URL with a user part (a database URL and its password).

        The whole statement is looked at, from the line where it begins (a multi-line string or
        array begins on an earlier line) to the next statement, and to the end of line `n` at
        least: on invalid text, where a syntax error may sit anywhere, too.
        """
        if not 1 <= n <= len(self.starts):
            return False
        index = self.starts[n - 1]
        s = bisect.bisect_right(self.statements, index) - 1
        end = self.statements[s + 1] if s + 1 < len(self.statements) else len(self.text)
        line_end = self.text.find("\n", index)
        statement = self.text[self.statements[s] : max(end, len(self.text) if line_end < 0 else line_end)]
        return bool(_SECRET_KEY.search(statement) or _URL_CREDENTIALS.search(statement))


def file_error(file: str, text: str, line: int, column: int, message: str) -> str:
    """One problem with the file's text at (line, column): TOML syntax, nesting, encoding."""
    return render([Problem(message, Span(file, line, column))], text)
