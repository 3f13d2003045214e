"""Unit tests of MessageView: decoding, addresses, attachments, List-Id and dates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Unpack

import pytest

from mailrules.message.view import AttachmentInfo, MessageView, ViewOptions, decode_bytes, decode_rfc2047

EML = Path(__file__).resolve().parent.parent / "fixtures" / "eml"


def view(name: str, **kw: Unpack[ViewOptions]) -> MessageView:
    return MessageView.from_file(EML / name, **kw)


# -- RFC 2047 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("plain text", "plain text"),
        ("=?utf-8?q?caf=C3=A9_cr=C3=A8me?=", "café crème"),
        ("=?UTF-8?B?w6l0w6k=?=", "été"),
        ("=?iso-8859-1?q?Andr=E9?= Pirard", "André Pirard"),
        # whitespace between adjacent encoded words is dropped (RFC 2047 §6.2)
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),
        ("=?utf-8?q?a?=\t =?iso-8859-1?q?=E9?=", "aé"),
        # a multi-byte character split across two words is joined before decoding
        ("=?utf-8?q?J=C3?= =?utf-8?q?=B6rg?=", "Jörg"),
        ("=?utf-8*en?q?lang_suffix?=", "lang suffix"),  # RFC 2231 §5 language in a word
        ("=?utf-8?b?aGk?=", "hi"),  # missing padding tolerated
        ("x =?utf-8?b?@@@?= y", "x =?utf-8?b?@@@?= y"),  # broken word kept as written
        ("=?x-unknown-cs?q?abc?=", "abc"),
        ("=?koi8-r?b?7sXUIQ==?=", "Нет!"),
    ],
)
def test_decode_rfc2047(raw: str, decoded: str) -> None:
    assert decode_rfc2047(raw) == decoded


def test_decode_bytes_fallbacks() -> None:
    defects: list[str] = []
    assert decode_bytes("é".encode(), "no-such-charset", defects) == "é"
    assert decode_bytes(b"\xe9", "us-ascii") == "é"  # not UTF-8 either: windows-1252
    assert decode_bytes(b"\x81\x8d", "utf-8") == "\x81\x8d"  # undefined in cp1252: latin-1
    assert decode_bytes(b"x", "base64", defects) == "x"
    assert defects == ["unknown charset 'no-such-charset'", "unknown charset 'base64'"]


def test_headers_decoded_unfolded_per_occurrence() -> None:
    v = view("encoded.eml")
    assert v.header_values("Subject") == ["If you can read this you understand the example."]
    assert v.header_values("from") == ["André Pirard <PIRARD@vm1.ulg.ac.be>"]
    assert v.has_header("FROM") and not v.has_header("X-Missing")
    assert v.header_values("x-missing") == []
    dup = view("broken/duplicate-headers.eml")
    assert dup.header_values("subject") == ["one", "two"]
    lst = view("list-python.eml")
    assert lst.header_values("list-id") == [
        "General discussion list for the Python programming language <python-list.python.org>"
    ]


def test_8bit_headers_are_read_as_utf8() -> None:
    v = view("broken/8bit-headers.eml")
    assert v.header_values("subject") == ["Grüße aus Köln"]
    assert v.addresses("from") == ["jörg@exämple.de"]
    assert v.header_values("cc") == ["café <c@example.com>"]  # latin-1 bytes: cp1252 fallback
    assert "8-bit characters in a header" in v.defects


# -- addresses ---------------------------------------------------------------------------------


def test_addresses_lowercased_and_recipient_union() -> None:
    v = view("from-mum.eml")
    assert v.addresses("from") == ["mum@family.example"]
    assert v.addresses("cc") == ["jane@family.example", "dad@family.example"]
    assert v.addresses("recipient") == ["me@example.net", "jane@family.example", "dad@family.example"]
    assert v.addresses("bcc") == [] and v.addresses("reply-to") == []
    assert view("bob-big.eml").addresses("from") == ["bob@example.com"]
    # the whole decoded value (display names included) is what `contains` reads
    assert v.field_text("cc") == ['"Doe, Jane" <jane@family.example>, dad@family.example']
    assert v.field_text("recipient")[0] == "Me <me@example.net>"


def test_encoded_display_name_with_comma_does_not_split_address() -> None:
    v = MessageView.from_bytes(b"From: =?utf-8?q?Doe=2C_J=C3=B6rg?= <J@X.example>\n\n")
    assert v.addresses("from") == ["j@x.example"]
    assert v.header_values("from") == ["Doe, Jörg <J@X.example>"]


def test_garbage_addresses_tolerated() -> None:
    v = view("broken/garbage-addresses.eml")
    for f in ("from", "to", "cc", "reply-to", "recipient", "sender"):
        assert all(isinstance(a, str) and a for a in v.addresses(f))
    assert v.addresses("to") == []


# -- List-Id, Message-ID, dates ----------------------------------------------------------------


def test_list_id() -> None:
    assert view("list-python.eml").list_id == "python-list.python.org"
    assert view("github-pr.eml").list_id == "widgets.acme.github.com"
    assert view("bob-big.eml").list_id is None
    assert MessageView.from_bytes(b"List-Id:  bare.example.org \n\n").list_id == "bare.example.org"
    assert view("list-python.eml").field_text("list") == [
        "python-list.python.org",
        "General discussion list for the Python programming language <python-list.python.org>",
    ]


def test_message_id() -> None:
    assert view("github-pr.eml").message_id == "<acme/widgets/pull/42@github.com>"
    assert view("bob-big.eml").message_id is None


def test_sent_date() -> None:
    d = view("list-python.eml").sent_date
    assert d == dt.datetime(2023, 3, 15, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert d is not None and d.utcoffset() == dt.timedelta(hours=-5)  # as written
    minus0 = MessageView.from_bytes(b"Date: Mon, 20 Nov 1995 19:12:08 -0000\n\n").sent_date
    assert minus0 == dt.datetime(1995, 11, 20, 19, 12, 8, tzinfo=dt.UTC)
    assert view("broken/bad-date.eml").sent_date is None
    assert "invalid Date header" in view("broken/bad-date.eml").defects
    assert view("broken/headers-only.eml").sent_date is None


def test_internaldate_naive_is_utc_and_state() -> None:
    v = MessageView.from_bytes(
        b"Subject: x\n\n", internaldate=dt.datetime(2020, 1, 1), flags=["\\Seen"], uid=7, size=99
    )
    assert v.internaldate == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    assert v.flags == frozenset({"\\Seen"}) and v.uid == 7 and v.size == 99
    assert MessageView.from_bytes(b"abc").size == 3


# -- MIME --------------------------------------------------------------------------------------


def test_attachments_rfc2231_continuations_and_inline_named_image() -> None:
    v = view("invoice.eml")
    assert v.attachments == [
        AttachmentInfo("Rechnung März 2023.pdf", "application/pdf", "attachment"),
        AttachmentInfo("logo.png", "image/png", "inline"),
    ]
    assert v.has_attachment
    assert v.attachment_names == ["Rechnung März 2023.pdf", "logo.png"]


def test_no_attachments_and_override() -> None:
    v = view("from-mum.eml")
    assert not v.has_attachment and v.attachment_names == []
    given = [AttachmentInfo("a.pdf", "application/pdf", "attachment")]
    hv = MessageView.from_bytes(b"Subject: x\n\n", attachments=given)
    assert hv.attachment_names == ["a.pdf"]


def test_nested_message_attachment() -> None:
    v = view("broken/nested-rfc822.eml")
    assert [a.content_type for a in v.attachments] == ["message/rfc822", "application/octet-stream"]
    assert v.attachment_names == ["inner.bin"]


def test_body_transfer_and_charset_decoding() -> None:
    assert view("encoded.eml").field_text("body") == ["Café crème brûlée\n"]
    (html_body,) = view("invoice.eml").field_text("body")
    assert "Voici votre facture de décembre\xa0& merci." in html_body
    assert "<p>" not in html_body and "color" not in html_body
    assert view("broken/headers-only.eml").field_text("body") == [""]


def test_text_is_headers_and_body() -> None:
    (text,) = view("encoded.eml").field_text("text")
    assert "subject: If you can read this" in text
    assert text.endswith("Café crème brûlée\n")


def test_field_text_of_plain_fields() -> None:
    v = view("github-pr.eml")
    assert v.field_text("subject") == ["Re: [acme/widgets] Fix the frobnicator (PR #42)"]
    assert v.field_text("from") == ['"Octo Cat" <notifications@github.com>']
    assert v.field_text("sender") == []


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ("Content-Type: application/pdf; name*=utf-8''%C3%A9t%C3%A9.pdf", "été.pdf"),
        ("Content-Type: application/pdf; name*=x-bogus''a%20b.pdf", "a b.pdf"),
        (
            "Content-Type: application/pdf\nContent-Disposition: attachment;"
            ' filename="=?utf-8?q?r=C3=A9sum=C3=A9?=.pdf"',
            "résumé.pdf",
        ),
        (
            'Content-Type: application/pdf\nContent-Disposition: attachment; filename*0="long ";\n'
            ' filename*1="name.pdf"',
            "long name.pdf",
        ),
        ("Content-Type: application/octet-stream\nContent-Disposition: attachment", None),
    ],
)
def test_attachment_name_forms(params: str, name: str | None) -> None:
    raw = f"Content-Type: multipart/mixed; boundary=b\n\n--b\n{params}\n\nxx\n--b--\n".encode()
    (att,) = MessageView.from_bytes(raw).attachments
    assert att.filename == name


def test_message_id_fast_path_agrees_with_the_parser() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    samples = [
        b"Message-ID: <a@b>\r\nSubject: x\r\n\r\nbody",
        b"Subject: x\r\nmessage-id:\r\n  <folded@b>\r\n\r\nMessage-ID: <in-body@b>\r\n",
        b"Subject: no id\r\n\r\nMessage-ID: <in-body@b>\r\n",
        b"Message-ID: =?utf-8?q?=3Cenc=40b=3E?=\r\n\r\n",
        b"Message-ID: <caf\xc3\xa9@b>\r\n\r\n",
        b"Message-ID: <first@b>\nMessage-ID: <second@b>\n\n",
        b"",
        # Not a field to the parser (a blank before the colon): the body starts there, and the
        # Message-ID after it is the body's (the scanner before 2026-12-03 read it as a header).
        b"Subject : x\r\nMessage-ID: <a@b>\r\n\r\nbody",
    ]

    def parsed(raw: bytes) -> str | None:
        v = MessageView.from_bytes(raw)
        v.header_values("subject")  # forces the parser: the slow path
        return v.message_id

    for raw in samples:
        assert MessageView.from_bytes(raw).message_id == parsed(raw), raw

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                [
                    b"Message-ID:",
                    b" <x@y>",
                    b"\r\n",
                    b"\n",
                    b" ",
                    b"\t",
                    b"Subject: s",
                    b"=?",
                    b"\x00",
                    b"\xff",
                    b":",
                    b" :",
                    b"<",
                    b"a",
                ]
            ),
            max_size=20,
        )
    )
    def agree(parts: list[bytes]) -> None:
        raw = b"".join(parts)
        assert MessageView.from_bytes(raw).message_id == parsed(raw)

    agree()
