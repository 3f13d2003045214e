"""Reading a TOML file safely; where each key sits in it (tomllib gives none); errors as path:line:col."""

from __future__ import annotations

import bisect
import contextlib
import re
import tomllib
from pathlib import Path
from typing import Any

from mailrules.errors import ConfigError

KeyPath = tuple[str, ...]

#: A configuration file is a few KB; anything past this is not one (or is /dev/zero).
MAX_CONFIG_BYTES = 1024 * 1024
#: Arrays and inline tables nested deeper are refused before tomllib, which recurses once per
#: level and would die of RecursionError (a traceback, exit 1) somewhere near 400, depending on
#: how deep the caller's stack already is. A real configuration nests 2 or 3 levels.
MAX_NESTING = 100
# Python refuses to convert integers of more than 4300 digits (sys.int_info.default_max_str_digits).
_HUGE_NUMBER = re.compile(r"(?:0[xXoObB])?[0-9A-Fa-f][0-9A-Fa-f_]{4299,}")

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
    with contextlib.suppress(IndexError, ValueError, RecursionError, tomllib.TOMLDecodeError):
        scanner.document()
    return scanner.found


def read_toml(path: Path, shown: str) -> tuple[str, dict[str, Any]]:
    """The text of the configuration file at `path` and its parsed tables; raise ConfigError.

    Whatever the file is (missing, a directory, not UTF-8, huge, nested 2,000 levels deep, a
    number of 5,000 digits), the error is one line, `shown:line:col: invalid TOML: ...` where a
    position is known, never a traceback. A UTF-8 byte order mark is skipped.
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read the configuration: {exc.strerror or exc}") from None
    except ValueError:  # a NUL in the path
        raise ConfigError(f"{shown}: cannot read the configuration: the path contains a NUL") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{shown}: the configuration is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{shown}:{line}: the configuration is not valid UTF-8 text") from None
    return text, parse_toml(text, shown)


def parse_toml(text: str, shown: str) -> dict[str, Any]:
    """tomllib.loads, with every way it can fail (not only TOMLDecodeError) as a ConfigError."""
    deep = too_deep(text, MAX_NESTING)
    if deep is not None:
        line, col = deep
        raise ConfigError(
            f"{shown}:{line}:{col}: invalid TOML: arrays and inline tables nested more than "
            f"{MAX_NESTING} levels deep"
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(format_toml_error(shown, text, exc)) from None
    except RecursionError:  # not past MAX_NESTING, yet the caller's stack was already deep
        raise ConfigError(f"{shown}: invalid TOML: nested too deeply to read") from None
    except ValueError as exc:  # int() past Python's digit limit
        where = shown
        m = _HUGE_NUMBER.search(text)
        if m:
            line, col = position(text, m.start())
            where = f"{shown}:{line}:{col}"
        what = "a number with more than 4300 digits" if "digits" in str(exc) else str(exc)
        raise ConfigError(f"{where}: invalid TOML: {what}") from None


def position(text: str, index: int) -> tuple[int, int]:
    """The 1-based (line, column) of `text[index]`."""
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def too_deep(text: str, limit: int) -> tuple[int, int] | None:
    """(line, column) of the first `[` or `{` that opens level `limit + 1`, else None.

    Linear, never raises, skips strings and comments: a pre-check on text tomllib has not read
    yet (on invalid text it may see too little nesting, never too much).
    """
    depth = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in "\"'":
            i = _string_end(text, i)
        elif c in "[{":
            depth += 1
            if depth > limit:
                return position(text, i)
            i += 1
        elif c in "]}":
            depth = max(depth - 1, 0)
            i += 1
        else:
            i += 1
    return None


def _string_end(text: str, i: int) -> int:
    """The index just past the string that starts at `text[i]` (a quote); len(text) if unclosed."""
    quote = text[i]
    if text.startswith(quote * 3, i):
        j = i + 3
        while j < len(text):
            if quote == '"' and text[j] == "\\":
                j += 2
            elif text.startswith(quote * 3, j):
                j += 3
                while j < len(text) and text[j] == quote:  # up to two quotes may end the content
                    j += 1
                return j
            else:
                j += 1
        return len(text)
    j = i + 1
    while j < len(text) and text[j] != "\n":
        if quote == '"' and text[j] == "\\":
            j += 2
        elif text[j] == quote:
            return j + 1
        else:
            j += 1
    return j


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
