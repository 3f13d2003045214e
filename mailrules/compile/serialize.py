"""SEARCH key serializer (RFC 9051 §4.3, §6.4.4, §9): atoms, quoted strings, literals; UID sets."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from mailrules.compile import keys as K
from mailrules.errors import MailrulesError

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# RFC 9051 §9: ATOM-CHAR = any CHAR except atom-specials ( ) { SP CTL % * " \ ]
_ATOM = re.compile(r"[\x21-\x7e]+")
_ATOM_SPECIALS = frozenset('(){%*"\\]')
# Never on the wire: CR and LF end a command line (command injection); NUL is not a CHAR8.
_FORBIDDEN = frozenset("\r\n\x00")


class SearchKeyError(MailrulesError):
    """A SEARCH key that cannot be sent safely (CR, LF or NUL in a value)."""


@dataclass(frozen=True, slots=True)
class Lit:
    """An IMAP literal: must go out as `{n}` CRLF data (or `{n+}` with LITERAL+)."""

    data: bytes


Piece = bytes | Lit


def is_atom(s: str) -> bool:
    """True when every character is an ATOM-CHAR, so `s` may go out bare."""
    return bool(_ATOM.fullmatch(s)) and not any(c in _ATOM_SPECIALS for c in s)


def string_pieces(s: str) -> list[Piece]:
    """`s` as an astring: atom, quoted string, or a UTF-8 literal when it has 8-bit characters."""
    if any(c in _FORBIDDEN for c in s):
        raise SearchKeyError(f"CR, LF or NUL in a SEARCH value: {s!r}")
    if s and is_atom(s):
        return [s.encode("ascii")]
    if s.isascii():
        # QUOTED-CHAR: any TEXT-CHAR except quoted-specials, which are escaped with "\".
        return [b'"' + s.replace("\\", "\\\\").replace('"', '\\"').encode("ascii") + b'"']
    return [Lit(s.encode("utf-8"))]


def mutf7_encode(s: str) -> str:
    """`s` in modified UTF-7 (RFC 3501 §5.1.3), as mailbox names and Gmail labels go on the wire.

    Printable ASCII stands for itself ("&" is "&-"); every other run is "&", the modified base64
    ("," for "/", no padding) of its UTF-16BE bytes, and "-".
    """
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            b64 = base64.b64encode("".join(run).encode("utf-16-be")).decode("ascii")
            out.append("&" + b64.rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in s:
        if " " <= ch <= "~":
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def label_arg(label: str) -> bytes:
    """A Gmail label as X-GM-LABELS takes it in SEARCH and STORE (Google's IMAP Extensions page).

    A system label (`\\Inbox`, `\\Important`, `\\Starred`) goes bare, in the flag form Gmail itself
    answers with; a user label is an astring "encoded in UTF-7 as appropriate": modified UTF-7, bare
    when that is an atom (`foo`, as in Google's transcripts), else quoted (`"Muy Importante"`).
    """
    if any(c in _FORBIDDEN for c in label) or not label:
        raise SearchKeyError(f"not a Gmail label: {label!r}")
    if label.startswith("\\") and is_atom(label[1:]):
        return label.encode("ascii")
    wire = mutf7_encode(label)
    if is_atom(wire) and wire.upper() != "NIL":
        return wire.encode("ascii")
    return b'"' + wire.replace("\\", "\\\\").replace('"', '\\"').encode("ascii") + b'"'


def format_date(d: dt.date) -> str:
    """RFC 9051 `date-text`: `D-Mon-YYYY`."""
    return f"{d.day}-{_MONTHS[d.month - 1]}-{d.year:04d}"


def serialize(key: K.SearchKey, *, describe: bool = False) -> list[Piece]:
    """The pieces that concatenate exactly into the arguments of `UID SEARCH` (no CHARSET).

    Negations are pushed down first (`keys.normalize`): no NOT reaches a range key. A thread test
    (`K.ThreadKeyword`) is resolved by the store first; `describe` writes it for `explain`.
    """
    key = K.normalize(key)
    out: list[Piece] = []
    if isinstance(key, K.And):
        for i, item in enumerate(key.items):
            if i:
                out.append(b" ")
            _emit(item, out, describe)
    else:
        _emit(key, out, describe)
    return _merge(out)


def _merge(pieces: list[Piece]) -> list[Piece]:
    merged: list[Piece] = []
    for p in pieces:
        if isinstance(p, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] = merged[-1] + p
        elif not (isinstance(p, bytes) and not p):
            merged.append(p)
    return merged


def _emit(key: K.SearchKey, out: list[Piece], describe: bool = False) -> None:
    """Append one RFC 9051 `search-key`; an And of several keys is a parenthesised group."""
    if isinstance(key, K.All):
        out.append(b"ALL")
    elif isinstance(key, K.And):
        out.append(b"(")
        for i, item in enumerate(key.items):
            if i:
                out.append(b" ")
            _emit(item, out, describe)
        out.append(b")")
    elif isinstance(key, K.Or):
        out.append(b"OR ")
        _emit(key.a, out, describe)
        out.append(b" ")
        _emit(key.b, out, describe)
    elif isinstance(key, K.Not):
        out.append(b"NOT ")
        _emit(key.key, out, describe)
    elif isinstance(key, K.Text):
        out.append(key.kind.encode("ascii") + b" ")
        out.extend(string_pieces(key.value))
    elif isinstance(key, K.Header):
        out.append(b"HEADER ")
        out.extend(string_pieces(key.name))
        out.append(b" ")
        out.extend(string_pieces(key.value))
    elif isinstance(key, K.Flag):
        out.append(key.name.encode("ascii"))
    elif isinstance(key, K.Keyword | K.Unkeyword):
        if not is_atom(key.keyword):
            # flag-keyword is an atom (RFC 9051 §9); anything else is a BAD on the server.
            raise SearchKeyError(f"not a valid IMAP keyword: {key.keyword!r}")
        word = b"KEYWORD " if isinstance(key, K.Keyword) else b"UNKEYWORD "
        out.append(word + key.keyword.encode("ascii"))
    elif isinstance(key, K.Larger):
        out.append(b"LARGER %d" % key.n)
    elif isinstance(key, K.Smaller):
        out.append(b"SMALLER %d" % key.n)
    elif isinstance(key, K.Date):
        out.append(f"{key.kind} {format_date(key.date)}".encode("ascii"))
    elif isinstance(key, K.Older):
        out.append(b"OLDER %d" % key.seconds)
    elif isinstance(key, K.Younger):
        out.append(b"YOUNGER %d" % key.seconds)
    elif isinstance(key, K.Uid):
        if not key.uids:
            raise SearchKeyError("an empty UID set cannot be sent")
        out.append(b"UID " + ",".join(compress_uids(key.uids)).encode("ascii"))
    elif isinstance(key, K.UidFrom):
        out.append(b"UID %d:*" % max(key.first, 1))
    elif isinstance(key, K.GmRaw):
        out.append(b"X-GM-RAW ")
        out.extend(string_pieces(key.query))
    elif isinstance(key, K.GmLabels):
        out.append(b"X-GM-LABELS " + label_arg(key.label))
    elif isinstance(key, K.GmThread):
        out.append(b"X-GM-THRID %d" % key.thrid)
    elif isinstance(key, K.ThreadKeyword):
        # resolved into a UID set by the store first (compile/threads.py); `explain` shows it so
        if not describe:
            raise SearchKeyError("a thread test is resolved into UIDs before it is sent")
        out.append(b"UID <the threads of ")
        out.extend(string_pieces(key.keyword))
        out.append(b">")
    else:  # pragma: no cover - exhaustive over SearchKey
        raise TypeError(f"not a search key: {key!r}")


def needs_charset(key: K.SearchKey) -> bool:
    """True when some value goes out as an 8-bit literal, so `CHARSET UTF-8` must be sent."""
    return any(isinstance(p, Lit) for p in serialize(key, describe=True))


def render(pieces: Sequence[Piece]) -> str:
    """The pieces as text for `explain`: a literal shows as `{n}` followed by its text."""
    parts: list[str] = []
    for p in pieces:
        if isinstance(p, Lit):
            parts.append(f"{{{len(p.data)}}}" + p.data.decode("utf-8", "replace"))
        else:
            parts.append(p.decode("ascii", "replace"))
    return "".join(parts)


def search_arguments(
    key: K.SearchKey, *, charset: bool | None = None, esearch: bool = False, describe: bool = False
) -> list[Piece]:
    """`[RETURN (ALL)] [CHARSET UTF-8] keys` as pieces (RFC 4731 §3.1 puts RETURN first)."""
    body = serialize(key, describe=describe)
    use_charset = needs_charset(key) if charset is None else charset
    head = (b"RETURN (ALL) " if esearch else b"") + (b"CHARSET UTF-8 " if use_charset else b"")
    return _merge([head, *body])


# ---------------------------------------------------------------------------
# UID sets (RFC 9051 §9 sequence-set; RFC 7162 §4: keep command lines under ~8 KB)
# ---------------------------------------------------------------------------


def compress_uids(uids: Iterable[int]) -> list[str]:
    """Sorted, de-duplicated UIDs as ranges: [1, 2, 3, 5, 7, 8] -> ["1:3", "5", "7:8"]."""
    ordered = sorted(set(uids))
    if not ordered:
        return []
    if ordered[0] < 1:
        raise ValueError("UIDs are positive integers")
    # Where a run ends: one comprehension over neighbours instead of a Python step per UID.
    ends = [i for i, (a, b) in enumerate(pairwise(ordered)) if b != a + 1]
    ends.append(len(ordered) - 1)
    out: list[str] = []
    start = 0
    for end in ends:
        out.append(str(ordered[start]) if start == end else f"{ordered[start]}:{ordered[end]}")
        start = end + 1
    return out


def chunk_uid_sets(uids: Iterable[int], max_bytes: int = 7000) -> list[str]:
    """Comma-joined sequence sets, each at most `max_bytes` long, covering every UID once, ascending."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for part in compress_uids(uids):
        if len(part) > max_bytes:
            raise ValueError(f"max_bytes={max_bytes} is too small for {part!r}")
        extra = len(part) + (1 if current else 0)
        if current and size + extra > max_bytes:
            chunks.append(",".join(current))
            current, size = [], 0
            extra = len(part)
        current.append(part)
        size += extra
    if current:
        chunks.append(",".join(current))
    return chunks


def parse_uid_set(text: str) -> list[int]:
    """The UIDs of a sequence set without `*` (e.g. an ESEARCH ALL answer): "1:3,7" -> [1, 2, 3, 7]."""
    out: list[int] = []
    for part in text.split(","):
        if not part:
            continue
        lo, _, hi = part.partition(":")
        a, b = int(lo), int(hi or lo)
        out.extend(range(min(a, b), max(a, b) + 1))
    return out
