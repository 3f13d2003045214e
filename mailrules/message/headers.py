"""Plain header blocks read without the email parser: the fields of a block that is ASCII and well
formed, exactly as `email.parser` (compat32) reads them; None leaves the block to the parser
(message/view.py).

Nearly every rule reads a few header fields of the messages it fetched (no server's substring
SEARCH is exact for the language's `contains`), and the journal the Message-ID of every message a
rule acts on: the parser costs more than everything else done with them (bench/README.md, issue
13). A property test holds `scan_headers` to the parser.
"""

from __future__ import annotations

import re

#: A header section longer than this goes to the parser, which looks at the evaluation's deadline
#: as it reads (a fetched block of residual fields is a few hundred bytes).
PLAIN_BLOCK_LIMIT = 64 * 1024

# A line ends at CRLF, CR or LF, as the parser splits lines (atomic: the LF of a CRLF is never a
# line of its own). A field's line starts with a name and a colon (email.feedparser's headerRE, less
# the "From " envelope line and the empty name it drops with a defect), a continuation with a blank.
_EOL = rb"(?>\r\n|\r|\n)"
_NAME = rb"[\x21-\x39\x3b-\x7e]"
_TEXT = rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*+"  # the rest of a line: ASCII, no NUL, no line break
#: The plain fields at the start of the data, each up to (not including) the line break that ends
#: it; every quantifier possessive, so the match is linear in the length read. It stops before the
#: first line that is neither a field nor a continuation: the empty line, or one for the parser.
_PLAIN_FIELDS = re.compile(
    rb"(?:" + _NAME + rb"++:" + _TEXT + rb"(?:" + _EOL + rb"[ \t]" + _TEXT + rb")*+"
    rb"(?:" + _EOL + rb"(?=" + _NAME + rb")|(?=" + _EOL + rb"|\Z)))*+"
)
#: What may follow the plain fields of a plain block: the empty line that ends the header section,
#: or a line break at the very end of the data (group 1; the end of the data itself is checked apart).
_SECTION_END = re.compile(_EOL + rb"(?:" + _EOL + rb"|(\Z))")
#: One field of a block _PLAIN_FIELDS has read: the name, and the value without the blanks after
#: the colon, keeping the line breaks inside it (folded), as compat32 does.
_FIELD = re.compile(r"(" + _NAME.decode() + r"++):[ \t]*+([^\r\n]*+(?:(?>\r\n|\r|\n)[ \t][^\r\n]*+)*+)")


#: The fields of a plain header section, (lower-cased name, raw value) in order, and whether they
#: are simple: no value holds a line break or "=?", so unfolding, RFC 2047 and the 8-bit repair
#: (ASCII throughout) each leave every value as it is, and its decoded form is the value stripped.
#: A plain tuple: a NamedTuple's constructor costs more than the scan of a one-field block.
Section = tuple[list[tuple[str, str]], bool]


def scan_headers(raw: bytes) -> list[tuple[str, str]] | None:
    """(lower-cased name, raw value) of each field of a plain header section, as the parser's
    `raw_items()` gives them, or None when the section is not plain and only the parser may read it.

    Plain: at most PLAIN_BLOCK_LIMIT bytes, ASCII without NUL, every line a field (`name:`, the
    parser's own test) or the continuation of one, up to an empty line or the end of `raw`. A
    value keeps the line breaks inside it (folded), as compat32 does.
    """
    section = scan_section(raw)
    return None if section is None else section[0]


def scan_section(raw: bytes) -> Section | None:
    """`scan_headers`, and whether every value is simple (Section)."""
    section = _crlf_section(raw)
    if section is not None:
        return section
    if raw[:1] in (b"\r", b"\n"):
        return [], True  # the section ends before it starts: the parser finds no field either
    fields = _any_fields(raw)
    return None if fields is None else (fields, False)


def _crlf_section(raw: bytes) -> Section | None:
    """`scan_section` of a section whose lines all end in CRLF, ended by an empty line (a server's
    FETCH answer), with string methods: a regular expression costs several times as much. None
    when the section has another shape or a line the parser would not read as a field: the
    regular expressions decide then."""
    end = raw.find(b"\r\n\r\n", 0, PLAIN_BLOCK_LIMIT + 4)  # a huge message is not read to its end
    if end < 0:
        return None
    try:
        text = raw[:end].decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    breaks = len(lines) - 1
    if text.count("\r") != breaks or text.count("\n") != breaks or "\x00" in text:
        return None
    # Every line break a CRLF: no lone CR or LF makes an empty line before `end`.
    out: list[tuple[str, str]] = []
    simple = "=?" not in text
    for line in lines:
        name, colon, value = line.partition(":")
        # A field's name: one or more of "!" to "~" but the colon (printable ASCII is " " to "~").
        if colon and name and name.isprintable() and " " not in name:
            out.append((name.lower(), value.lstrip(" \t")))
        elif line[:1] in (" ", "\t") and out:  # a continuation (its blank is no name's)
            name, value = out[-1]
            out[-1] = (name, value + "\r\n" + line)
            simple = False
        else:
            return None  # a line the parser does not read as a field, or a continuation of nothing
    return out, simple


def _any_fields(raw: bytes) -> list[tuple[str, str]] | None:
    """`scan_headers` of any section but one that starts with a line break, with regular
    expressions (lone CR or LF line breaks)."""
    # Read no further than one byte past the limit: a longer section is the parser's.
    fields = _PLAIN_FIELDS.match(raw, 0, PLAIN_BLOCK_LIMIT + 1)  # never None: it matches ""
    end = fields.end() if fields is not None else 0
    if end > PLAIN_BLOCK_LIMIT:
        return None
    if end < len(raw):
        after = _SECTION_END.match(raw, end)
        # No empty line: the section is all of the data, its last line break included.
        if after is None or (after.group(1) is not None and len(raw) > PLAIN_BLOCK_LIMIT):
            return None
    return [(name.lower(), value) for name, value in _FIELD.findall(raw[:end].decode("ascii"))]
