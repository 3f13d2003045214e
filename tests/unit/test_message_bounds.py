"""MessageView within bounds: text caps, one header index, a decode stopped by the deadline."""

from __future__ import annotations

import base64

import pytest

from mailrules.bounds import Bounds, Deadline, EvaluationTimeout, deadline_scope
from mailrules.message.view import MessageView

SMALL = Bounds(part_text_bytes=1024, message_text_bytes=2048, evaluation_seconds=1.0)


def multipart(*parts: bytes) -> bytes:
    body = b"".join(b"--b\r\n" + p + b"\r\n" for p in parts)
    return b"Content-Type: multipart/alternative; boundary=b\r\n\r\n" + body + b"--b--\r\n"


def test_a_part_is_searched_up_to_its_cap() -> None:
    raw = b"Content-Type: text/plain\r\n\r\n" + b"a" * 1000 + b"NEEDLE" + b"b" * 5000
    v = MessageView(raw, bounds=SMALL)
    (body,) = v.field_text("body")
    assert body == "a" * 1000 + "NEEDLE" + "b" * 18  # 1024 bytes
    assert v.text_cut
    whole = MessageView(raw)  # the default caps (1 MiB) keep all of it
    assert whole.field_text("body")[0].endswith("b" * 5000) and not whole.text_cut


def test_a_cut_in_a_multibyte_character_keeps_the_charset() -> None:
    text = ("é" * 600).encode("utf-8")  # 1200 bytes: byte 1024 is in the middle of a character
    raw = b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text
    (body,) = MessageView(raw, bounds=SMALL).field_text("body")
    assert body == "é" * 512  # not mojibake from a fallback to cp1252


def test_the_message_cap_spans_the_parts() -> None:
    parts = [b"Content-Type: text/plain\r\n\r\n" + bytes([ord("a") + i]) * 1000 for i in range(4)]
    v = MessageView(multipart(*parts), bounds=SMALL)
    bodies = v.field_text("body")
    assert [len(b.rstrip("\r\n")) for b in bodies] == [1000, 1000, 48]  # 2048 bytes in all; d not read
    assert v.text_cut


def test_the_header_section_of_text_is_capped_too() -> None:
    raw = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(200)) + b"\r\nbody\r\n"
    v = MessageView(raw, bounds=SMALL)
    text = v.field_text("text")[0]
    head, _, body = text.partition("\n\n")
    assert len(head) <= SMALL.message_text_bytes and body == "body\r\n"
    assert v.text_cut
    assert v.header_values("x-h199") == ["v" * 40]  # header tests still read every header


def test_headers_are_indexed_once_with_the_old_order() -> None:
    raw = b"B: 1\r\nA: 2\r\nb: 3\r\nC:\r\n\r\n"
    v = MessageView(raw)
    assert v.field_text("text") == ["b: 1\nb: 3\na: 2\nc: \n\n"]
    assert v.header_values("B") == ["1", "3"]
    assert v.has_header("c") and not v.has_header("d")
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(20_000)) + b"\r\n"
    big = MessageView(many)
    assert big.field_text("text")[0].count("\n") == 20_001
    assert big.has_header("x-h19999")


def test_unknown_transfer_encoding_is_not_text() -> None:
    # RFC 2045 §6.4: an unrecognized encoding makes the part application/octet-stream.
    raw = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-rot13\r\n\r\nsecret\r\n"
    v = MessageView(raw)
    assert v.field_text("body") == []
    assert "secret" not in v.field_text("text")[0]
    assert any("unknown transfer encoding" in d for d in v.defects)
    known = [
        b"7bit",
        b"8BIT",
        b"binary",
        b"Quoted-Printable",
        b" base64 ",
        b"base64 (a comment)",
    ]
    for cte in known:
        payload = base64.b64encode(b"secret") if b"base64" in cte else b"secret"
        raw = b"Content-Type: text/plain\r\nContent-Transfer-Encoding: " + cte + b"\r\n\r\n" + payload
        assert MessageView(raw).field_text("body") == ["secret"], cte


def test_no_empty_line_after_the_header_no_body() -> None:
    assert MessageView(b"Subject: x\r\nhello world\r\n").field_text("body") == []
    assert MessageView(b"hello world").field_text("body") == []
    # a stray line followed by the empty line: the parser's reading stays (a superset)
    assert MessageView(b"Subject: x\r\nstray\r\n\r\nworld").field_text("body") == ["stray\r\n\r\nworld"]
    assert MessageView(b"Subject: x\r\n\r\nworld").field_text("body") == ["world"]


def test_a_decode_past_the_deadline_raises_and_caches_nothing() -> None:
    raw = b"Content-Type: text/html\r\n\r\n" + b"<p>x</p>" * 100
    v = MessageView(raw)
    with pytest.raises(EvaluationTimeout), deadline_scope(Deadline(0.0)):
        v.field_text("body")
    assert v.field_text("body")[0].split() == ["x"] * 100  # outside a deadline: decoded in full


def test_outside_a_deadline_nothing_raises() -> None:
    v = MessageView(b"Subject: s\r\n\r\nb")
    with deadline_scope(None):
        assert v.field_text("text") == ["subject: s\n\nb"]


def test_deadline_scopes_nest_and_restore_the_outer_one_even_after_an_error() -> None:
    from mailrules.bounds import current_deadline

    outer, inner = Deadline(60.0), Deadline(0.0)
    assert current_deadline() is None
    with deadline_scope(outer) as got:
        assert got is outer and current_deadline() is outer
        with pytest.raises(EvaluationTimeout), deadline_scope(inner):
            assert current_deadline() is inner
            MessageView(b"Subject: s\r\n\r\nb").field_text("body")
        assert current_deadline() is outer
    assert current_deadline() is None
