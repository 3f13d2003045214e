"""The BODYSTRUCTURE walker matches MessageView's attachment rule, and decodes RFC 2231/2047 names."""

from __future__ import annotations

from imapclient.response_types import BodyData

from mailrules.imap.bodystructure import bodystructure_attachments
from mailrules.message.view import AttachmentInfo

TEXT = (b"text", b"plain", (b"charset", b"utf-8"), None, None, b"7bit", 10, 1, None, None, None, None)


def _part(ctype: bytes, sub: bytes, params: object, disp: object) -> tuple[object, ...]:
    return (ctype, sub, params, None, None, b"base64", 100, None, disp, None, None)


def test_multipart_with_rfc2231_and_rfc2047_names() -> None:
    bs = BodyData.create(
        (
            [
                TEXT,
                _part(
                    b"application",
                    b"pdf",
                    (b"name", b"a.pdf"),
                    (b"attachment", (b"filename*0*", b"utf-8''caf%C3%A9", b"filename*1", b".pdf")),
                ),
                _part(b"image", b"png", (b"name", b"=?UTF-8?Q?Caf=C3=A9?=.png"), (b"inline", None)),
            ],
            b"mixed",
            (b"boundary", b"XX"),
            None,
            None,
            None,
        )
    )
    assert bodystructure_attachments(bs) == [
        AttachmentInfo("café.pdf", "application/pdf", "attachment"),
        AttachmentInfo("Café.png", "image/png", "inline"),
    ]


def test_plain_text_message_has_none() -> None:
    assert bodystructure_attachments(BodyData.create(TEXT)) == []


def test_attachment_without_name_and_text_attachment() -> None:
    text_att = (
        b"text",
        b"csv",
        (b"charset", b"us-ascii"),
        None,
        None,
        b"7bit",
        5,
        1,
        None,
        (b"attachment", (b"filename", b"data.csv")),
        None,
        None,
    )
    bs = BodyData.create(
        (
            [TEXT, _part(b"application", b"octet-stream", None, (b"ATTACHMENT", None)), text_att],
            b"mixed",
            None,
            None,
            None,
            None,
        )
    )
    assert bodystructure_attachments(bs) == [
        AttachmentInfo(None, "application/octet-stream", "attachment"),
        AttachmentInfo("data.csv", "text/csv", "attachment"),
    ]


def test_nested_alternative_inside_mixed() -> None:
    html = (b"text", b"html", (b"charset", b"utf-8"), None, None, b"7bit", 10, 1, None, None, None, None)
    alt = ([TEXT, html], b"alternative", (b"boundary", b"A"), None, None, None)
    pdf = _part(b"application", b"pdf", None, (b"attachment", (b"filename", b"r.pdf")))
    bs = BodyData.create(([alt, pdf], b"mixed", (b"boundary", b"M"), None, None, None))
    assert [a.filename for a in bodystructure_attachments(bs)] == ["r.pdf"]


def test_malformed_structure_never_raises() -> None:
    assert bodystructure_attachments(None) == []
    assert bodystructure_attachments((b"text",)) == []
    assert bodystructure_attachments(([(b"application",)], b"mixed")) == []
