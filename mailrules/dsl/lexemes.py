"""Decoding of string, regex and template lexemes, each problem reported with its column offset."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

#: Regex flags of the language: i (default), c (case-sensitive), and Python's m, s, x.
REGEX_FLAGS = frozenset("icmsx")

#: Placeholders a mailbox template may use, besides `match.N`.
PLACEHOLDERS = ("year", "month", "day", "from.domain", "list")
#: Filters after a placeholder's name (`{match.1|lower}`), applied left to right.
FILTERS = ("lower", "upper", "capitalize")

_MATCH_RE = re.compile(r"match\.([0-9]+)\Z")


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem inside one token: `offset` and `length` are in characters of the token text."""

    offset: int
    length: int
    message: str


def unescape_string(token: str) -> tuple[str, Sequence[int], list[Problem]]:
    """The value of a `"..."` token, the token offset of each value character, and bad escapes."""
    inner = token[1:-1]
    if "\\" not in inner:  # most strings: the value is the text between the quotes
        return inner, range(1, len(inner) + 1), []
    out: list[str] = []
    where: list[int] = []
    problems: list[Problem] = []
    i = 0
    while i < len(inner):
        ch = inner[i]
        if ch == "\\" and i + 1 < len(inner):
            nxt = inner[i + 1]
            if nxt in '"\\':
                out.append(nxt)
                where.append(i + 1)
            else:
                problems.append(
                    Problem(i + 1, 2, f'unknown escape "\\{nxt}" in string; only \\" and \\\\ are allowed')
                )
                out.append(nxt)
                where.append(i + 1)
            i += 2
            continue
        out.append(ch)
        where.append(i + 1)
        i += 1
    return "".join(out), where, problems


def split_regex(token: str) -> tuple[str, str, list[Problem]]:
    """`/pattern/flags` -> (pattern with `\\/` unescaped, flags, problems with the flags)."""
    end = token.rfind("/")
    body, flags = token[1:end], token[end + 1 :]
    pattern = re.sub(r"\\(.)", lambda m: "/" if m.group(1) == "/" else m.group(0), body)
    problems: list[Problem] = []
    for k, f in enumerate(flags):
        if f not in REGEX_FLAGS:
            problems.append(
                Problem(
                    end + 1 + k, 1, f"unknown regex flag '{f}'; expected i, c (case-sensitive), m, s or x"
                )
            )
    if "i" in flags.lower() and "c" in flags.lower():
        problems.append(Problem(end + 1, len(flags), "regex flags 'i' and 'c' contradict each other"))
    return pattern, flags.lower(), problems


@dataclass(frozen=True, slots=True)
class TemplatePiece:
    """A literal piece (`name` None) or a placeholder, with its offset in the decoded text."""

    text: str
    name: str | None
    index: int
    offset: int
    length: int
    filters: tuple[str, ...] = ()


def split_template(text: str, what: str = "mailbox name") -> tuple[list[TemplatePiece], list[Problem]]:
    """Split a template into literal text and `{placeholder|filter...}` pieces (offsets in `text`).

    `what` names the template in messages: "mailbox name" or "tag name".
    """
    if "{" not in text and "}" not in text:  # most names: one literal piece
        return ([TemplatePiece(text, None, 0, 0, len(text))] if text else []), []
    pieces: list[TemplatePiece] = []
    problems: list[Problem] = []
    buf: list[str] = []
    start = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "{":
            close = text.find("}", i + 1)
            if close < 0:
                problems.append(Problem(i, 1, f"unclosed '{{' in {what}; placeholders look like {{year}}"))
                break
            if buf:
                pieces.append(TemplatePiece("".join(buf), None, 0, start, i - start))
                buf = []
            piece = _placeholder(text, i, close, problems)
            if piece is not None:
                pieces.append(piece)
            i = close + 1
            start = i
            continue
        if ch == "}":
            problems.append(Problem(i, 1, f"unmatched '}}' in {what}"))
        buf.append(ch)
        i += 1
    if buf:
        pieces.append(TemplatePiece("".join(buf), None, 0, start, len(text) - start))
    return pieces, problems


def _placeholder(text: str, i: int, close: int, problems: list[Problem]) -> TemplatePiece | None:
    """The placeholder `text[i:close + 1]` (`{name}` or `{name|filter|...}`), or None after a problem."""
    written = text[i : close + 1]
    name_part, *filter_parts = text[i + 1 : close].split("|")
    name = name_part.strip().lower()
    filters: list[str] = []
    at = i + 1 + len(name_part) + 1
    for f in filter_parts:
        word = f.strip().lower()
        if word not in FILTERS:
            hint = difflib.get_close_matches(word, FILTERS, n=1, cutoff=0.6)
            problems.append(
                Problem(
                    at,
                    max(1, len(f)),
                    f"unknown filter '{f.strip()}'"
                    + (f"; did you mean '{hint[0]}'?" if hint else f"; expected {', '.join(FILTERS)}"),
                )
            )
            return None
        filters.append(word)
        at += len(f) + 1
    m = _MATCH_RE.match(name)
    if m:
        index = int(m.group(1))  # {match.0} is the whole match, as in re
        return TemplatePiece(written, "match", index, i, close - i + 1, tuple(filters))
    if name in PLACEHOLDERS:
        return TemplatePiece(written, name, 0, i, close - i + 1, tuple(filters))
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    message = f"unknown placeholder '{written}'; expected one of: {known}, {{match.N}}"
    problems.append(Problem(i, close - i + 1, message))
    return None


def header_name_problem(name: str) -> str | None:
    """Why `name` is not a valid header field name (RFC 5322 section 3.6.8), or None."""
    if not name:
        return "header name is empty"
    bad = [c for c in name if not (33 <= ord(c) <= 126) or c == ":"]
    if bad:
        return f"header name {name!r} contains {bad[0]!r}; header names are printable ASCII without ':'"
    return None


_ATOM_SPECIALS = set('(){ %*"\\]')
#: A Gmail system label (`\\Important`, `\\Starred`, `\\Inbox`): a backslash and a word.
_SYSTEM_LABEL = re.compile(r"\\[A-Za-z]+")
#: IMAP's system flags (RFC 9051 §2.3.2), lower case: the language names them by words.
SYSTEM_FLAGS = frozenset({"\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft", "\\recent"})


def keyword_problem(keyword: str) -> str | None:
    """Why `keyword` cannot be an IMAP keyword (RFC 3501 flag-keyword = atom), or None."""
    if not keyword:
        return "keyword is empty"
    if keyword.startswith("\\"):
        return f"{keyword!r} is a system flag; use seen, flagged, answered, draft or deleted"
    bad = [c for c in keyword if c in _ATOM_SPECIALS or ord(c) < 33 or ord(c) > 126]
    if bad:
        return f"keyword {keyword!r} contains {bad[0]!r}, which an IMAP keyword cannot contain"
    return None


def label_problem(name: str) -> str | None:
    """Why `name` cannot be what `tag` sets even on Gmail, where a tag is a label, or None.

    A Gmail label is a mailbox-like name (X-GM-LABELS, sent quoted in modified UTF-7), so spaces,
    brackets and non-ASCII are fine, and so are Gmail's system labels (`\\Important`, `\\Starred`);
    empty names, IMAP system flags and control characters are not.
    """
    if not name.strip():
        return "keyword is empty"
    if name.lower() in SYSTEM_FLAGS:
        return f"{name!r} is a system flag; use seen, flagged, answered, draft or deleted"
    if name.startswith("\\") and not _SYSTEM_LABEL.fullmatch(name):
        return f"{name!r} is no Gmail system label: those are a backslash and a word, like \\Important"
    for c in name:
        if ord(c) < 32 or ord(c) == 127:
            return f"keyword {name!r} contains a control character (U+{ord(c):04X})"
    return None


def mailbox_problem(name: str) -> str | None:
    """Why `name` cannot be a mailbox name we create or select (empty, wildcards, controls), or None."""
    if not name.strip():
        return "mailbox name is empty"
    for c in name:
        if c in "*%":
            return f"mailbox name {name!r} contains the IMAP wildcard '{c}'"
        if ord(c) < 32 or ord(c) == 127:
            return f"mailbox name {name!r} contains a control character (U+{ord(c):04X})"
    return None


def address_problem(address: str) -> str | None:
    """Why `address` is not one plain addr-spec (local@domain, no display name), or None."""
    if any(c in address for c in "\r\n"):
        return "address contains a line break"
    if address.count("@") != 1:
        return f'invalid address {address!r}: expected one plain address like "name@example.org"'
    local, domain = address.split("@")
    if not local or not domain or any(c.isspace() or c in '<>(),;:"[]\\' or ord(c) < 32 for c in address):
        return f'invalid address {address!r}: expected one plain address like "name@example.org"'
    return None
