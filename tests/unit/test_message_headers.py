"""Plain header blocks read without the email parser (message/headers.py) give the parser's fields."""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrules.demo.sample_mail import generate
from mailrules.message.decoding import decode_rfc2047, fix_8bit
from mailrules.message.headers import PLAIN_BLOCK_LIMIT, scan_headers, scan_section
from mailrules.message.view import _CRLF, _FOLD, MessageView


def parser_items(raw: bytes) -> list[tuple[str, str]]:
    """What MessageView read before the scanner: compat32's raw_items(), names lower-cased."""
    parser = email.parser.BytesFeedParser(policy=email.policy.compat32)
    parser.feed(raw)
    message = parser.close()
    return [(fix_8bit(str(n)).strip().lower(), str(v)) for n, v in message.raw_items()]


#: Pieces that make up header-like text: names, colons, folding white space, every line break the
#: parser knows, an envelope line, encoded words, 8-bit and NUL.
PIECES = [
    b"A",
    b"x",
    b"-",
    b":",
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b"From ",
    b"=?",
    b"\x00",
    b"\xe9",
    b"Subject",
    b"\x0b",  # a line break to str.splitlines, not to the parser
    b"\x0c",
    b"\x1c",
    b"\x7f",
    b"B: ",
    b" :",
    b"\r\n\r\n",
    b"\r\r\n",
    b"\n\r\n",
]
LINE_BREAK = st.sampled_from([b"\r\n", b"\n", b"\r"])
NAME = st.text("abcXYZ-_0123456789!#$%&'*+./;<=>?@[]^`{|}~", min_size=1, max_size=12).map(str.encode)
VALUE = st.binary(max_size=30).map(lambda b: bytes(c for c in b if 0x20 <= c < 0x7F))


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    """Well-formed-looking blocks: fields, folded continuations, an empty line, maybe a body."""
    out = b""
    for _ in range(draw(st.integers(0, 6))):
        out += draw(NAME) + draw(st.sampled_from([b":", b": ", b":\t", b" :"])) + draw(VALUE)
        out += draw(LINE_BREAK)
        for _ in range(draw(st.integers(0, 2))):
            out += draw(st.sampled_from([b" ", b"\t"])) + draw(VALUE) + draw(LINE_BREAK)
    if draw(st.booleans()):
        out += draw(LINE_BREAK) + draw(st.binary(max_size=20))
    return out


#: Any ASCII but CR and LF (controls, DEL, NUL, "=?" pieces): what a hostile value may hold.
HOSTILE = st.text(st.characters(max_codepoint=0x7F, blacklist_characters="\r\n"), max_size=20).map(str.encode)


@st.composite
def crlf_blocks(draw: st.DrawFn) -> bytes:
    """Blocks shaped as a server's FETCH answer (every line ended by CRLF, then an empty line),
    with hostile names and values, folded lines, encoded words and 8-bit bytes among them."""
    odd = st.sampled_from([b"=?utf-8?q?caf=C3=A9?=", b"=?", b" =?x?q?", b"\t", b"\x0b"])
    name, value, colon = NAME, st.one_of(VALUE, HOSTILE, odd), st.sampled_from([b":", b": ", b":\t"])
    if draw(st.booleans()):  # half of them plain (the fast path's), half anything
        name = st.one_of(NAME, HOSTILE)
        value = st.one_of(value, st.sampled_from([b"caf\xc3\xa9", b"\x00", b"\xff"]))
        colon = st.sampled_from([b":", b": ", b" :"])
    out = b""
    for _ in range(draw(st.integers(0, 5))):
        out += draw(name) + draw(colon) + draw(value) + b"\r\n"
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
            out += draw(st.sampled_from([b" ", b"\t"])) + draw(value) + b"\r\n"
    return out + b"\r\n" + draw(st.sampled_from([b"", b"body\r\n", b"X: in the body\r\n"]))


BLOCKS = st.one_of(
    header_blocks(), crlf_blocks(), st.lists(st.sampled_from(PIECES), max_size=16).map(b"".join)
)


@settings(max_examples=500, deadline=None)
@given(BLOCKS)
def test_a_block_the_scanner_reads_is_read_as_the_parser_reads_it(raw: bytes) -> None:
    got = scan_headers(raw)
    assert got is None or got == parser_items(raw)


def reference_values(raw: bytes, name: str) -> list[str]:
    """header_values as the language defines it: the parser's raw values of the field, unfolded,
    8-bit repaired and RFC 2047 decoded (decode_rfc2047 does both), stripped."""
    return [
        decode_rfc2047(_CRLF.sub(" ", _FOLD.sub("", v))).strip() for n, v in parser_items(raw) if n == name
    ]


@settings(max_examples=500, deadline=None)
@given(BLOCKS)
def test_a_scanned_view_reads_every_field_as_the_parser_and_the_decoding_steps_do(raw: bytes) -> None:
    """The short cuts (a simple section's values decoded as they are scanned; a value without line
    breaks, 8-bit bytes or "=?" only stripped) give what every decoding step gives."""
    section = scan_section(raw)
    names = [
        *sorted({n for n, _ in parser_items(raw)}),
        "from",
        "to",
        "cc",
        "message-id",
        "list-id",
        "absent",
    ]
    scanned, parsed = MessageView.from_bytes(raw), MessageView.from_bytes(raw)
    _ = parsed.attachments  # runs the parser first: this view reads every field the slow way
    for name in names:
        expected = reference_values(raw, name)
        assert scanned.header_values(name) == parsed.header_values(name) == expected, name
        spelled = name.upper() if name.isascii() else f" {name}\t"  # "ß".upper().lower() is "ss"
        assert scanned.header_values(spelled) == expected  # the cache, under any spelling
        assert scanned.has_header(name) == parsed.has_header(name)
    if section is not None and section[1]:
        assert all("\r" not in v and "\n" not in v and "=?" not in v for _, v in section[0])
        assert all(
            reference_values(raw, n) == [v.strip() for m, v in section[0] if m == n] for n, _ in section[0]
        )
    for field in ("from", "recipient", "list", "subject"):
        assert scanned.field_text(field) == parsed.field_text(field)
        assert scanned.addresses(field) == parsed.addresses(field)
    assert scanned.message_id == parsed.message_id
    assert scanned.list_id == parsed.list_id


def test_sample_mail_headers_are_plain_and_read_as_the_parser_reads_them() -> None:
    mails = [m.raw for m in generate(300, seed=3, now=dt.datetime(2026, 12, 3, tzinfo=dt.UTC), years=3)]
    plain = 0
    for raw in mails:
        head = raw.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        for block in (raw, head):
            got = scan_headers(block)
            if got is not None:
                plain += 1
                assert got == parser_items(block)
    assert plain > len(mails)  # most of them: the parser is the exception, not the rule


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        (b"Subject: a\r\n b\r\n\r\nbody", True),  # folded: the value keeps its CRLF
        (b"A: 1\nB: 2\n", True),
        (b"A: 1\rB: 2\r\r", True),
        (b"", True),
        (b"\r\nA: 1\r\n", True),  # an empty section, then a body
        (b" cont\r\nA: 1\r\n\r\n", False),  # a continuation of nothing
        (b"From x\r\nA: 1\r\n\r\n", False),  # an envelope line
        (b"Subject : x\r\n\r\n", False),  # not a field to the parser: the body starts there
        (b":x\r\n", False),
        (b"A: caf\xc3\xa9\r\n\r\n", False),  # 8-bit: the parser decodes it
        (b"A: 1\r\nnot a field\r\nB: 2\r\n", False),
        (b"X: " + b"y" * PLAIN_BLOCK_LIMIT + b"\r\n\r\n", False),  # long: the parser, with its deadline
        (b"X: " + b"y" * (PLAIN_BLOCK_LIMIT - 3) + b"\r\n\r\nbody", True),  # as long as may be
        (b"X: " + b"y" * (PLAIN_BLOCK_LIMIT - 2) + b"\r\n\r\nbody", False),
        (b"X: " + b"y" * (PLAIN_BLOCK_LIMIT - 3) + b"\n\nbody", True),
        (b"X: " + b"y" * (PLAIN_BLOCK_LIMIT - 2) + b"\n\nbody", False),
        (b"X: " + b"y" * (PLAIN_BLOCK_LIMIT - 5) + b"\r\n", True),  # no empty line: its last break counts
        (b"X: " + b"y" * (PLAIN_BLOCK_LIMIT - 4) + b"\r\n", False),
        (b"A: 1\r\r\n\r\n", True),  # a lone CR, then an empty line: the value is "1"
        (b"A: 1\n\r\n\r\n", True),
        (b"A: 1\x0b\r\nB: 2\x0c\r\n\r\n", True),  # not line breaks to the parser
        (b"A: 1\r\nB\x00: 2\r\n\r\n", False),
        (b"A: 1\r\n\tB: 2\r\n C\r\n\r\n", True),
        (b"Subject : x\r\nMessage-ID: <a@b>\r\n\r\n", False),
    ],
)
def test_what_is_plain(raw: bytes, plain: bool) -> None:
    got = scan_headers(raw)
    assert (got is not None) == plain
    if got is not None:
        assert got == parser_items(raw)


def test_a_view_reads_the_same_fields_with_and_without_the_parser() -> None:
    raw = (
        b"From: =?utf-8?q?Caf=C3=A9?= <a@example.com>\r\nTo: b@example.com,\r\n c@example.com\r\n"
        b"Subject: hello\r\n\tworld\r\nMessage-ID: <m@x>\r\n"
        b"List-Id: Dev <dev.lists.example.com>\r\n\r\nbody\r\n"
    )
    scanned, parsed = MessageView.from_bytes(raw), MessageView.from_bytes(raw)
    assert parsed.has_attachment is False  # reads `_message`: this view's headers come from the parser
    for name in ("from", "to", "subject", "list-id", "message-id", "cc"):
        assert scanned.header_values(name) == parsed.header_values(name)
    assert (
        scanned.addresses("recipient") == parsed.addresses("recipient") == ["b@example.com", "c@example.com"]
    )
    assert scanned.message_id == parsed.message_id == "<m@x>"
    assert scanned.list_id == "dev.lists.example.com"
    assert "_message" not in scanned.__dict__  # nothing here needed the parser


@given(st.text(alphabet=st.sampled_from(["a", " ", "\t", "\r", "\n", "é", ":"]), max_size=24))
def test_unfolding_a_value_without_line_breaks_returns_it_as_it_is(value: str) -> None:
    """The short cut for one-line values gives what the two substitutions give."""
    from mailrules.message.view import _CRLF, _FOLD, _unfold

    assert _unfold(value) == _CRLF.sub(" ", _FOLD.sub("", value))
