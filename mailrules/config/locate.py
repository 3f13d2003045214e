"""Where each key sits in a TOML text (tomllib gives no positions); TOML syntax errors as path:line:col."""

from __future__ import annotations

import bisect
import contextlib
import re
import tomllib

KeyPath = tuple[str, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


def key_lines(text: str) -> dict[KeyPath, int]:
    """The 1-based line of every key and table header in `text`, by key path.

    Best effort, for error messages only: it runs after tomllib accepted the text, handles
    `[table]` headers, dotted and quoted keys and inline tables, skips arrays and strings, and
    never raises (what it could not place falls back to the enclosing table's line).
    """
    scanner = _Scanner(text)
    with contextlib.suppress(IndexError, ValueError, tomllib.TOMLDecodeError):
        scanner.document()
    return scanner.found


def format_toml_error(path: str, text: str, exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's "Invalid value (at line 3, column 7)" as `path:3:7: invalid TOML: invalid value`."""
    message = str(exc)
    m = _TOML_POS.search(message)
    if m:
        line, col = int(m.group(1)), int(m.group(2))
        message = message[: m.start()]
    else:
        line = text.count("\n") + 1
        col = len(text) - (text.rfind("\n") + 1) + 1
        message = _TOML_END.sub("", message)
    message = message[:1].lower() + message[1:]
    return f"{path}:{line}:{col}: invalid TOML: {message}"


class _Scanner:
    """A recursive-descent walk over valid TOML that records where keys start."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.found: dict[KeyPath, int] = {}
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    # -- positions -----------------------------------------------------------------------------
    def _line(self, pos: int) -> int:
        return bisect.bisect_right(self._starts, pos)

    def _record(self, path: KeyPath, pos: int) -> None:
        line = self._line(pos)
        for n in range(1, len(path) + 1):
            self.found.setdefault(path[:n], line)

    def _peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def _skip_space(self, newlines: bool) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            elif c == "#":
                end = self.s.find("\n", self.i)
                self.i = len(self.s) if end < 0 else end
            else:
                return

    def _skip_line(self) -> None:
        end = self.s.find("\n", self.i)
        self.i = len(self.s) if end < 0 else end + 1

    # -- grammar -------------------------------------------------------------------------------
    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self._skip_space(newlines=True)
            if self.i >= len(self.s):
                return
            start = self.i
            if self._peek() == "[":
                double = self._peek(2) == "[["
                self.i += 2 if double else 1
                self._skip_space(newlines=False)
                table = self._key()
                self._record(table, start)
                self._skip_line()
                continue
            key = self._key()
            self._record(table + key, start)
            self._skip_space(newlines=False)
            if self._peek() == "=":
                self.i += 1
                self._skip_space(newlines=False)
                self._value(table + key)
            self._skip_line()

    def _key(self) -> KeyPath:
        parts: list[str] = []
        while True:
            self._skip_space(newlines=False)
            c = self._peek()
            if c == '"':
                end = self.i + 1
                while self.s[end] != '"':
                    end += 2 if self.s[end] == "\\" else 1
                raw = self.s[self.i : end + 1]
                parts.append(str(tomllib.loads(f"k = {raw}")["k"]))
                self.i = end + 1
            elif c == "'":
                end = self.s.index("'", self.i + 1)
                parts.append(self.s[self.i + 1 : end])
                self.i = end + 1
            else:
                m = _BARE.match(self.s, self.i)
                if not m:
                    break
                parts.append(m.group())
                self.i = m.end()
            self._skip_space(newlines=False)
            if self._peek() != ".":
                break
            self.i += 1
        return tuple(parts)

    def _value(self, path: KeyPath | None) -> None:
        c = self._peek()
        if c in ('"', "'"):
            self._string(c)
        elif c == "[":
            self.i += 1
            while self.i < len(self.s):
                self._skip_space(newlines=True)
                c = self._peek()
                if c == "]":
                    self.i += 1
                    return
                if c == ",":
                    self.i += 1
                    continue
                before = self.i
                self._value(None)  # positions inside arrays are not tracked
                if self.i == before:
                    self.i += 1
        elif c == "{":
            self.i += 1
            while self.i < len(self.s):
                self._skip_space(newlines=True)
                c = self._peek()
                if c == "}":
                    self.i += 1
                    return
                if c == ",":
                    self.i += 1
                    continue
                start = self.i
                key = self._key()
                if path is not None and key:
                    self._record(path + key, start)
                self._skip_space(newlines=False)
                if self._peek() == "=":
                    self.i += 1
                    self._skip_space(newlines=False)
                    self._value(None if path is None else path + key)
                elif self.i == start:
                    self.i += 1
        else:
            while self.i < len(self.s) and self.s[self.i] not in " \t\r\n,]}#":
                self.i += 1

    def _string(self, quote: str) -> None:
        if self._peek(3) == quote * 3:
            self.i += 3
            while not self.s.startswith(quote * 3, self.i):
                self.i += 2 if (quote == '"' and self.s[self.i] == "\\") else 1
                if self.i >= len(self.s):
                    return
            self.i += 3
            while self._peek() == quote:  # up to two quotes may end the content
                self.i += 1
            return
        self.i += 1
        while self.i < len(self.s) and self.s[self.i] != quote:
            self.i += 2 if (quote == '"' and self.s[self.i] == "\\") else 1
        self.i += 1
