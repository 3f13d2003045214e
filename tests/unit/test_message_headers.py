"""Plain header blocks read without the email parser (message/headers.py) give the parser's fields."""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrules.demo.sample_mail import generate
from mailrules.message.decoding import fix_8bit
from mailrules.message.headers import PLAIN_BLOCK_LIMIT, scan_headers
from mailrules.message.view import MessageView


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


@settings(max_examples=300, deadline=None)
@given(st.one_of(header_blocks(), st.lists(st.sampled_from(PIECES), max_size=16).map(b"".join)))
def test_a_block_the_scanner_reads_is_read_as_the_parser_reads_it(raw: bytes) -> None:
    got = scan_headers(raw)
    assert got is None or got == parser_items(raw)


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
