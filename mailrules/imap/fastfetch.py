"""A fast path for the FETCH answers the engine asks for most: UID, FLAGS, sizes, dates, one section.

imapclient's general parser tokenises every answer byte by byte in Python; on a 20,000-message run
it was the largest share of mailrules' own time. Answers made only of the simple items parse here
with one regex step per item; anything else (BODYSTRUCTURE, ENVELOPE, several literals, odd
spacing) returns None and goes to imapclient's parser, so the result is always the same.
"""

from __future__ import annotations

import re
from typing import Any

from imapclient.datetime_util import parse_to_datetime

# RFC 9051 §7.5.2 msg-att: `name value` pairs inside `* n FETCH ( ... )`.
_HEAD = re.compile(rb"(\d+) \(")
_NAME = re.compile(rb"([A-Z0-9.]+(?:\[[^\]\r\n]*\])?(?:<\d+>)?) ", re.IGNORECASE)
_NUMBER = re.compile(rb"(\d+)")
_FLAGS = re.compile(rb"\(([^()\"\r\n{}]*)\)")
_QUOTED = re.compile(rb'"([^"\\\r\n]*)"')
_LITERAL = re.compile(rb"\{(\d+)\}$")
_NIL = re.compile(rb"NIL", re.IGNORECASE)


def parse_simple_fetch(group: list[Any]) -> tuple[int, dict[bytes, Any]] | None:
    """(sequence number, {ITEM NAME: value}) for one FETCH response as imaplib stored it, or None.

    `group` is `[line]` or `[(line, literal), trailer]`; values are typed as imapclient types them
    (int, tuple of bytes flags, aware datetime, bytes or None for a section).
    """
    if len(group) == 1 and isinstance(group[0], bytes):
        text, literal, trailer = group[0], None, b""
    elif len(group) == 2 and isinstance(group[0], tuple) and isinstance(group[1], bytes):
        (text, literal), trailer = group[0], group[1]
        if not isinstance(text, bytes) or not isinstance(literal, bytes):
            return None
    else:
        return None
    m = _HEAD.match(text)
    if m is None:
        return None
    seq = int(m.group(1))
    out: dict[bytes, Any] = {}
    pos = m.end()
    source, used_literal = text, False
    while True:
        if pos < len(source) and source[pos : pos + 1] == b")":
            # the end of the response: nothing may follow but the line's end
            return (seq, out) if pos + 1 == len(source) and (used_literal or literal is None) else None
        n = _NAME.match(source, pos)
        if n is None:
            return None
        name = n.group(1).upper()
        pos = n.end()
        if name.startswith((b"BODY[", b"BINARY[", b"RFC822")) and name not in (b"RFC822.SIZE",):
            lit = _LITERAL.match(source, pos)
            if lit is not None and not used_literal and literal is not None and source is text:
                if int(lit.group(1)) != len(literal):
                    return None
                out[name] = literal
                used_literal = True
                source, pos = trailer, 1 if trailer[:1] == b" " else 0
                continue
            q = _QUOTED.match(source, pos)
            if q is not None:
                out[name] = q.group(1)
                pos = q.end()
            elif (nil := _NIL.match(source, pos)) is not None:
                out[name] = None
                pos = nil.end()
            else:
                return None
        elif name in (b"UID", b"RFC822.SIZE"):
            num = _NUMBER.match(source, pos)
            if num is None:
                return None
            out[name] = int(num.group(1))
            pos = num.end()
        elif name == b"MODSEQ":
            mod = re.compile(rb"\((\d+)\)").match(source, pos)
            if mod is None:
                return None
            out[name] = (int(mod.group(1)),)
            pos = mod.end()
        elif name == b"FLAGS":
            fl = _FLAGS.match(source, pos)
            if fl is None:
                return None
            out[name] = tuple(fl.group(1).split())
            pos = fl.end()
        elif name == b"INTERNALDATE":
            q = _QUOTED.match(source, pos)
            if q is None:
                return None
            try:
                out[name] = parse_to_datetime(q.group(1), normalise=False)
            except ValueError:
                return None
            pos = q.end()
        else:
            return None  # BODYSTRUCTURE, ENVELOPE, X-GM-*...: the general parser's job
        if pos < len(source) and source[pos : pos + 1] == b" ":
            pos += 1
