"""Where each key and value sits in a TOML file (tomllib gives no positions); the file's statements."""

from __future__ import annotations

import bisect
import contextlib
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass

from mailrules.source import Span

KeyPath = tuple[str, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class Place:
    """Where a key sits in the file, and its value when the key is written `key = value`."""

    key: Span
    value: Span | None = None


def key_places(text: str, file: str) -> dict[KeyPath, Place]:
    """The place of every key and table header in `text`, by key path (spans name `file`).

    Best effort, for error messages only: it runs after tomllib accepted the text, handles
    `[table]` headers, dotted and quoted keys and inline tables, skips arrays and strings, and
    never raises (what it could not place falls back to the enclosing table's place). A dotted
    key's prefixes span the parts up to theirs: `options` in `options.debug = true`.
    """
    scanner = _Scanner(text, file)
    with contextlib.suppress(IndexError, ValueError, RecursionError, tomllib.TOMLDecodeError):
        scanner.document()
    return scanner.found


def key_lines(text: str) -> dict[KeyPath, int]:
    """The 1-based line of every key and table header in `text`, by key path (see key_places)."""
    return {path: place.key.line for path, place in key_places(text, "").items()}


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
    for i, c in _code(text):
        if c in "[{":
            depth += 1
            if depth > limit:
                return position(text, i)
        elif c in "]}":
            depth = max(depth - 1, 0)
    return None


def _code(text: str) -> Iterator[tuple[int, str]]:
    """The index and character of each character of `text` outside comments and strings (the end
    of line that ends a comment included). Linear, never raises: an unclosed string runs to the
    end of its line, or of the file when it is a multi-line one."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in "\"'":
            i = _string_end(text, i)
        else:
            yield i, c
            i += 1


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


def statement_starts(text: str) -> list[int]:
    """The index where each statement of `text` starts: a line that begins outside any string,
    array or inline table. Linear, never raises; on invalid text a best effort (an unclosed
    string runs to the end of its line, or of the file when it is a multi-line one)."""
    starts = [0]
    depth = 0
    for i, c in _code(text):
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(depth - 1, 0)
        elif c == "\n" and depth == 0:
            starts.append(i + 1)
    return starts


class _Scanner:
    """A recursive-descent walk over valid TOML that records where keys and values are."""

    def __init__(self, text: str, file: str) -> None:
        self.s = text
        self.file = file
        self.i = 0
        self.found: dict[KeyPath, Place] = {}
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self._key_start = 0  # where the last key read starts, and where each of its parts ends
        self._key_ends: list[int] = []

    # -- positions -----------------------------------------------------------------------------
    def _span(self, start: int, end: int) -> Span:
        line = bisect.bisect_right(self._starts, start)
        end_line = bisect.bisect_right(self._starts, end)
        return Span(
            self.file,
            line,
            start - self._starts[line - 1] + 1,
            end_line,
            end - self._starts[end_line - 1] + 1,
        )

    def _record(self, base: KeyPath, key: KeyPath) -> None:
        """The key just read (`key`, inside table `base`) and each of its dotted prefixes."""
        for n, end in enumerate(self._key_ends[: len(key)], start=1):
            if base + key[:n] not in self.found:
                self.found[base + key[:n]] = Place(self._span(self._key_start, end))

    def _record_value(self, path: KeyPath, start: int) -> None:
        place = self.found.get(path)
        if place is not None and place.value is None:
            self.found[path] = Place(place.key, self._span(start, self.i))

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
            if self._peek() == "[":
                double = self._peek(2) == "[["
                self.i += 2 if double else 1
                self._skip_space(newlines=False)
                table = self._key()
                self._record((), table)
                self._skip_line()
                continue
            key = self._key()
            self._record(table, key)
            self._skip_space(newlines=False)
            if self._peek() == "=":
                self.i += 1
                self._skip_space(newlines=False)
                start = self.i
                self._value(table + key)
                self._record_value(table + key, start)
            self._skip_line()

    def _key(self) -> KeyPath:
        parts: list[str] = []
        self._skip_space(newlines=False)
        self._key_start = self.i
        self._key_ends = []
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
            self._key_ends.append(self.i)
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
                    self._record(path, key)
                self._skip_space(newlines=False)
                if self._peek() == "=":
                    self.i += 1
                    self._skip_space(newlines=False)
                    value_start = self.i
                    self._value(None if path is None else path + key)
                    if path is not None:
                        self._record_value(path + key, value_start)
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
