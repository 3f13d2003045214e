"""A fast path for the FETCH answers the engine asks for most: UID, FLAGS, sizes, dates, one section.

imapclient's general parser tokenises every answer byte by byte in Python; on a 20,000-message run
it was the largest share of mailrules' own time. Answers made only of the simple items parse here
with one regex step per item; anything else (BODYSTRUCTURE, ENVELOPE, several literals, odd
spacing) returns None and goes to imapclient's parser, so the result is always the same.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import re
from typing import Any

from imapclient.datetime_util import parse_to_datetime
from imapclient.fixed_offset import FixedOffset

#: The longest response line read (imaplib's own bound, `imaplib._MAXLINE`, kept).
MAX_LINE_BYTES = 1_000_000
#: The largest literal (a message, a header block) a FETCH answer may announce: above any
#: provider's message size (Exchange Online 150 MB, Gmail 50 MB received), far below what would
#: hurt. Over it the answer is not read: the connection is dropped as lost (docs/operations.md).
MAX_LITERAL_BYTES = 256 * 1024 * 1024
#: A literal is read in pieces of this size: memory grows with the bytes received, never with
#: the size a server announces.
_LITERAL_PIECE = 1024 * 1024

# RFC 9051 §7.5.2 msg-att: `name value` pairs inside `* n FETCH ( ... )`.
_HEAD = re.compile(rb"(\d+) \(")
_NAME = re.compile(rb"([A-Z0-9.]+(?:\[[^\]\r\n]*\])?(?:<\d+>)?) ", re.IGNORECASE)
_NUMBER = re.compile(rb"(\d+)")
_FLAGS = re.compile(rb"\(([^()\"\r\n{}]*)\)")
_QUOTED = re.compile(rb'"([^"\\\r\n]*)"')
_LITERAL = re.compile(rb"\{(\d+)\}$")
_NIL = re.compile(rb"NIL")  # imapclient reads only upper-case NIL as None
_MODSEQ_VALUE = re.compile(rb"\((\d+)\)")


def parse_simple_fetch(group: list[Any]) -> tuple[int, dict[bytes, Any]] | None:
    """(sequence number, {ITEM NAME: value}) for one FETCH response as imaplib stored it, or None.

    `group` is `[line]` or `[(line, literal), trailer]`; values are typed as imapclient types them
    (int, tuple of bytes flags, aware datetime, bytes or None for a section).

    The answers to one FETCH nearly all have one shape (the same items in the same order): the
    shapes of recent answers are kept as one regular expression each (`_Shape`), tried first, so
    that such an answer is one match instead of a step per item; any other goes item by item.
    """
    global _SHAPES
    if len(group) == 1 and isinstance(group[0], bytes):
        text, literal, trailer = group[0], None, b""
    elif len(group) == 2 and isinstance(group[0], tuple) and isinstance(group[1], bytes):
        (text, literal), trailer = group[0], group[1]
        if not isinstance(text, bytes) or not isinstance(literal, bytes):
            return None
    else:
        return None
    shapes = _SHAPES
    for shape in shapes:
        got = shape.parse(text, literal, trailer)
        if got is not None:
            if shape is not shapes[0]:
                _SHAPES = (shape, *(s for s in shapes if s is not shape))
            return got
    parsed = _parse_items(text, literal, trailer)
    if parsed is None:
        return None
    seq, out, fields = parsed
    shape = _Shape(fields, literal is not None)
    if shape.key not in {s.key for s in shapes}:
        _SHAPES = (shape, *shapes[: _SHAPES_KEPT - 1])
    return seq, out


#: Item kinds, as `_parse_items` reads them.
_NUM, _MODSEQ, _FLAGLIST, _DATE, _LIT, _QUOTE, _NONE = range(7)
_VALUE = {
    _NUM: rb"(\d+)",
    _MODSEQ: rb"\((\d+)\)",
    _FLAGLIST: rb"\(([^()\"\r\n{}]*)\)",
    _DATE: rb'"([^"\\\r\n]*)"',
    _QUOTE: rb'"([^"\\\r\n]*)"',
    _NONE: rb"NIL",
}
#: Shapes kept (a FETCH's answers have one or two: a NIL section for a message expunged meanwhile).
_SHAPES_KEPT = 4


# RFC 9051 §9 date-time, as every server writes it: "dd-Mon-yyyy hh:mm:ss +zzzz" (day maybe " d").
# Only fields in range (and years from 1000: email.utils moves 0..99 to 1968..2067); the rest,
# rare or broken, goes to imapclient.
_DATE_TIME = re.compile(
    rb"( ?[1-9]|[0-2][0-9]|3[01])-(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-([1-9][0-9]{3}) "
    rb"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9]) ([+-])([01][0-9]|2[0-3])([0-5][0-9])"
)
_MONTHS = {m: i for i, m in enumerate(b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
_ZONES: dict[bytes, FixedOffset] = {}


def internaldate(value: bytes) -> dt.datetime:
    """imapclient's `parse_to_datetime(value, normalise=False)` (an aware datetime with its
    FixedOffset), read by one regular expression for the usual form instead of `email.utils`;
    any other form goes to imapclient. Raises ValueError for an impossible date, as it does."""
    m = _DATE_TIME.fullmatch(value)
    if m is None or value.endswith(b"-0000"):  # -0000: "no zone known" to email.utils
        parsed: dt.datetime = parse_to_datetime(value, normalise=False)
        return parsed
    day, month, year, hour, minute, second, sign, zone_hours, zone_minutes = m.groups()
    zone = _ZONES.get(value[-5:])
    if zone is None:
        seconds = int(zone_hours) * 3600 + int(zone_minutes) * 60
        zone = FixedOffset((-seconds if sign == b"-" else seconds) / 60)
        if len(_ZONES) < 2000:  # a few zones in one mailbox; bounded whatever a server sends
            _ZONES[value[-5:]] = zone
    return dt.datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second), tzinfo=zone)


class _Shape:
    """The items of one answer, in order, as a regular expression for the line (and one for the
    trailer after a literal): exactly the answers `_parse_items` reads the same way, item by item.

    `fields`: (name as sent, kind, in the trailer) per item; names are matched as sent (a server
    that changes case or spacing gets `_parse_items`).
    """

    __slots__ = ("convert", "has_literal", "key", "line", "tail")

    def __init__(self, fields: list[tuple[bytes, int, bool]], has_literal: bool) -> None:
        self.key = (tuple(fields), has_literal)
        self.has_literal = has_literal
        line: list[bytes] = []
        tail: list[bytes] = []
        #: (ITEM NAME, kind, where its value is: its group in the line's match, or minus its group
        #: in the trailer's; None for NIL)
        self.convert: list[tuple[bytes, int, int | None]] = []
        in_line, in_trailer = 1, 0  # groups so far; the line's group 1 is the sequence number
        for name, kind, in_tail in fields:
            part = re.escape(name) + b" " + (rb"\{(\d+)\}" if kind == _LIT else _VALUE[kind])
            where = None
            if kind != _NONE and in_tail:
                in_trailer += 1
                where = -in_trailer
            elif kind != _NONE:
                in_line += 1
                where = in_line
            (tail if in_tail else line).append(part)
            self.convert.append((name.upper(), kind, where))
        # One space between items; after the last, a space may come before the ")".
        end = rb" ?\)" if line else rb"\)"
        self.line = re.compile(rb"(\d+) \(" + b" ".join(line) + (b"" if has_literal else end))
        self.tail = re.compile(rb" ?" + b" ".join(tail) + (rb" ?\)" if tail else rb"\)"))

    def parse(
        self, text: bytes, literal: bytes | None, trailer: bytes
    ) -> tuple[int, dict[bytes, Any]] | None:
        if (literal is not None) != self.has_literal:
            return None
        m = self.line.fullmatch(text)
        if m is None:
            return None
        t = None
        if literal is not None:
            t = self.tail.fullmatch(trailer)
            if t is None:
                return None
        out: dict[bytes, Any] = {}
        for key, kind, where in self.convert:
            if where is None:
                out[key] = None
                continue
            value = m.group(where) if where > 0 else t.group(-where)  # type: ignore[union-attr]
            if kind == _NUM:
                out[key] = int(value)
            elif kind == _FLAGLIST:
                out[key] = tuple(value.split())
            elif kind == _LIT:
                if int(value) != len(literal):  # type: ignore[arg-type]
                    return None
                out[key] = literal
            elif kind == _QUOTE:
                out[key] = value
            elif kind == _MODSEQ:
                out[key] = (int(value),)
            else:
                try:
                    out[key] = internaldate(value)
                except ValueError:
                    return None
        return int(m.group(1)), out


_SHAPES: tuple[_Shape, ...] = ()


def _parse_items(
    text: bytes, literal: bytes | None, trailer: bytes
) -> tuple[int, dict[bytes, Any], list[tuple[bytes, int, bool]]] | None:
    """Item by item: (sequence number, {ITEM NAME: value}, the shape read), or None."""
    m = _HEAD.match(text)
    if m is None:
        return None
    seq = int(m.group(1))
    out: dict[bytes, Any] = {}
    fields: list[tuple[bytes, int, bool]] = []
    pos = m.end()
    source, used_literal = text, False
    while True:
        if pos < len(source) and source[pos : pos + 1] == b")":
            # the end of the response: nothing may follow but the line's end
            done = pos + 1 == len(source) and (used_literal or literal is None)
            return (seq, out, fields) if done else None
        n = _NAME.match(source, pos)
        if n is None:
            return None
        raw = n.group(1)
        name = raw.upper()
        pos = n.end()
        in_tail = source is not text
        if name.startswith((b"BODY[", b"BINARY[", b"RFC822")) and name not in (b"RFC822.SIZE",):
            lit = _LITERAL.match(source, pos)
            if lit is not None and not used_literal and literal is not None and source is text:
                if int(lit.group(1)) != len(literal):
                    return None
                out[name] = literal
                fields.append((raw, _LIT, False))
                used_literal = True
                source, pos = trailer, 1 if trailer[:1] == b" " else 0
                continue
            q = _QUOTED.match(source, pos)
            if q is not None:
                out[name] = q.group(1)
                fields.append((raw, _QUOTE, in_tail))
                pos = q.end()
            elif (nil := _NIL.match(source, pos)) is not None:
                out[name] = None
                fields.append((raw, _NONE, in_tail))
                pos = nil.end()
            else:
                return None
        elif name in (b"UID", b"RFC822.SIZE"):
            num = _NUMBER.match(source, pos)
            if num is None:
                return None
            out[name] = int(num.group(1))
            fields.append((raw, _NUM, in_tail))
            pos = num.end()
        elif name == b"MODSEQ":
            mod = _MODSEQ_VALUE.match(source, pos)
            if mod is None:
                return None
            out[name] = (int(mod.group(1)),)
            fields.append((raw, _MODSEQ, in_tail))
            pos = mod.end()
        elif name == b"FLAGS":
            fl = _FLAGS.match(source, pos)
            if fl is None:
                return None
            out[name] = tuple(fl.group(1).split())
            fields.append((raw, _FLAGLIST, in_tail))
            pos = fl.end()
        elif name == b"INTERNALDATE":
            q = _QUOTED.match(source, pos)
            if q is None:
                return None
            try:
                out[name] = internaldate(q.group(1))
            except ValueError:
                return None
            fields.append((raw, _DATE, in_tail))
            pos = q.end()
        else:
            return None  # BODYSTRUCTURE, ENVELOPE, X-GM-*...: the general parser's job
        if source[pos : pos + 1] == b" ":
            pos += 1
        elif source[pos : pos + 1] != b")":
            return None  # items are separated by a space (imapclient refuses "UID 5FLAGS ()")


# -- reading a FETCH answer ---------------------------------------------------------------------------

# imaplib's patterns for the same lines (imaplib.Untagged_status, imaplib.Literal): `* n FETCH ...`
# and a line ending in a literal's `{size}`.
_FETCH_LINE = re.compile(rb"\* (\d+) FETCH (.*)\r\n", re.ASCII | re.DOTALL)
_LITERAL_END = re.compile(rb".*\{(\d+)\}$", re.ASCII)


def reads_fast(imap: Any) -> bool:
    """Whether `read_fetch_answer` can read from `imap`: an imaplib connection reading its socket
    file with imaplib's own `read`/`readline`, not tracing the wire (debug below 4)."""
    kind = type(imap)
    return (
        isinstance(imap, imaplib.IMAP4)
        and kind.readline is imaplib.IMAP4.readline
        and kind.read is imaplib.IMAP4.read
        and getattr(imap, "file", None) is not None
        and getattr(imap, "debug", 0) < 4
    )


class _Budget:
    """What is left of the responses and literals one answer may hold (`read_fetch_answer`)."""

    __slots__ = ("imap", "left", "most")

    def __init__(self, imap: Any, most: int) -> None:
        self.imap = imap
        self.left = self.most = most

    def spend(self) -> None:
        if self.left <= 0:
            raise self.imap.abort(f"a FETCH answer of more than {self.most} responses and literals")
        self.left -= 1


class _Pushback:
    """imaplib's socket file with one line already read put back in front of it; literals read
    within MAX_LITERAL_BYTES (imaplib itself would read any size a server announces) and counted."""

    def __init__(self, imap: Any, line: bytes, budget: _Budget) -> None:
        self.imap = imap
        self.file = imap.file
        self.line: bytes | None = line
        self.budget = budget

    def readline(self, limit: int = -1) -> bytes:
        line, self.line = self.line, None
        if line is not None:
            return line
        more: bytes = self.file.readline(limit)
        _check_line(self.imap, more)
        return more

    def read(self, size: int) -> bytes:
        self.budget.spend()
        return _read_literal(self.imap, self.file, size)


def read_fetch_answer(imap: Any, tag: bytes, max_parts: int) -> list[Any]:
    """Read the answer to the command `tag` (a UID FETCH) up to its tagged completion.

    Returns the FETCH responses in imaplib's shape (`line`, or `(line, literal)`... then the last
    line; what `untagged_responses["FETCH"]` would hold), read straight from the socket file: one
    `readline` per line and one `read` per literal, instead of imaplib's regular expressions,
    trace formatting and bookkeeping per line. Every other response (the tagged completion,
    EXISTS, EXPUNGE, a `* OK [...]`, BYE) goes through imaplib's own `_get_response`, so imaplib's
    state is what it would be.

    Bounds (docs/operations.md): a line of at most MAX_LINE_BYTES, a literal of at most
    MAX_LITERAL_BYTES, at most `max_parts` responses and literals before the completion. Past
    any of them, at the end of the data or on a line without CRLF: `imaplib.IMAP4.abort`, the
    connection is lost (it is out of step with the server).
    """
    file = imap.file
    readline = file.readline
    out: list[Any] = []
    append = out.append
    tagged = imap.tagged_commands
    budget = _Budget(imap, max_parts)
    spend = budget.spend
    while tagged.get(tag) is None:
        spend()
        line = readline(MAX_LINE_BYTES + 1)
        m = _FETCH_LINE.fullmatch(line)
        if m is None or len(line) > MAX_LINE_BYTES:
            # anything else, or a malformed line: imaplib's parser, with the line put back
            _check_line(imap, line)
            imap.file = _Pushback(imap, line, budget)
            try:
                imap._get_response()
            finally:
                imap.file = file
            imap._check_bye()
            continue
        dat = m.group(1) + b" " + m.group(2)
        while (lit := _LITERAL_END.match(dat)) is not None:
            spend()
            append((dat, _read_literal(imap, file, int(lit.group(1)))))
            line = readline(MAX_LINE_BYTES + 1)
            _check_line(imap, line)
            dat = line[:-2]
        append(dat)
    return out


def _check_line(imap: Any, line: bytes) -> None:
    """imaplib's checks of one line (`_get_line`, `readline`), all as a lost connection."""
    if not line:
        raise imap.abort("socket error: EOF")
    if len(line) > MAX_LINE_BYTES:
        raise imap.abort(f"a response line longer than {MAX_LINE_BYTES} bytes")
    if not line.endswith(b"\r\n"):
        raise imap.abort(f"socket error: unterminated line: {line[:200]!r}")


def _read_literal(imap: Any, file: Any, size: int) -> bytes:
    """`size` bytes, read in pieces (memory follows what arrives, not what is announced)."""
    if size > MAX_LITERAL_BYTES:
        raise imap.abort(f"a literal of {size} bytes (more than {MAX_LITERAL_BYTES})")
    if size <= _LITERAL_PIECE:
        data: bytes = file.read(size)
    else:
        pieces: list[bytes] = []
        left = size
        while left > 0:
            piece = file.read(min(left, _LITERAL_PIECE))
            if not piece:
                break
            pieces.append(piece)
            left -= len(piece)
        data = b"".join(pieces)
    if len(data) != size:
        raise imap.abort("socket error: EOF inside a literal")
    return data
