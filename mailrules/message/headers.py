"""Plain header blocks read without the email parser: the fields, or the Message-ID, of a block that
is ASCII and well formed, exactly as `email.parser` (compat32) reads them; None leaves the block to
the parser (message/view.py).

Nearly every rule reads a few header fields of the messages it fetched (no server's substring
SEARCH is exact for the language's `contains`), and the parser costs more than everything else done
with them (bench/README.md, issue 13). A property test holds `scan_headers` to the parser.
"""

from __future__ import annotations

import re

#: A header line as email.feedparser takes it (its headerRE, less the "From " envelope line and
#: the empty name the parser drops with a defect).
_HEADER_LINE = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")
#: The end of the header section: a line break, then an empty line. Lines end at CRLF, CR or LF,
#: as the parser splits them; atomic, so that the LF of a CRLF is never read as a line of its own.
_HEADER_END = re.compile(rb"(?>\r\n|\r|\n)(?>\r\n|\r|\n)")
#: A header section longer than this goes to the parser, which looks at the evaluation's deadline
#: as it reads (a fetched block of residual fields is a few hundred bytes).
PLAIN_BLOCK_LIMIT = 64 * 1024
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def scan_headers(raw: bytes) -> list[tuple[str, str]] | None:
    """(lower-cased name, raw value) of each field of a plain header section, as the parser's
    `raw_items()` gives them, or None when the section is not plain and only the parser may read it.

    Plain: at most PLAIN_BLOCK_LIMIT bytes, ASCII without NUL, every line a field (`name:`, the
    parser's own test) or the continuation of one, up to an empty line or the end of `raw`. A
    value keeps the line breaks inside it (folded), as compat32 does.
    """
    if raw[:1] in (b"\r", b"\n"):
        return []  # the section ends before it starts: the parser finds no field either
    end = _HEADER_END.search(raw, 0, PLAIN_BLOCK_LIMIT + 4)
    if end is None and len(raw) > PLAIN_BLOCK_LIMIT:
        return None
    block = raw if end is None else raw[: end.start()]
    if len(block) > PLAIN_BLOCK_LIMIT or not block.isascii() or b"\x00" in block:
        return None
    out: list[tuple[str, str]] = []
    name = b""
    value: list[bytes] = []
    for line in block.splitlines(keepends=True):  # bytes split at CRLF, CR and LF only
        if line[:1] in (b" ", b"\t"):
            if not name:
                return None  # a continuation of nothing: the parser records a defect
            value.append(line)
            continue
        m = _HEADER_LINE.match(line)
        if m is None or line.startswith(b"From "):
            return None  # the body's first line, or an envelope line: the parser's call
        if name:
            out.append(_field(name, value))
        name = m.group(1)
        value = [line[m.end() :].lstrip(b" \t")]
    if name:
        out.append(_field(name, value))
    return out


def _field(name: bytes, value: list[bytes]) -> tuple[str, str]:
    return name.decode("ascii").lower(), b"".join(value).rstrip(b"\r\n").decode("ascii")


def scan_message_id(raw: bytes) -> str | None:
    """The first Message-ID of a plain header block ("" when absent), or None to ask the parser.

    Only a block the parser would read the same way qualifies: ASCII, every line a field or a
    continuation, ended by an empty line or the end of the data.
    """
    found: list[bytes] | None = None
    in_id = seen_field = False
    for line in raw.split(b"\n"):
        line = line.removesuffix(b"\r")
        if not line:
            break
        if not line.isascii() or b"\x00" in line or b"\r" in line:
            return None
        if line[:1] in (b" ", b"\t"):
            if not seen_field:
                return None  # a continuation of nothing: the parser's call
            if in_id and found is not None:
                found.append(line)
            continue
        m = _FIELD.match(line)
        if m is None:
            return None
        in_id, seen_field = False, True
        if found is None and m.group(1).lower() == b"message-id":
            found, in_id = [line[m.end() :]], True
    if found is None:
        return ""
    value = b"".join(found)  # unfolding (RFC 5322 §2.2.3) keeps the continuation's whitespace
    if b"=?" in value:
        return None
    return value.decode("ascii").strip()
