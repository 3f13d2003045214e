"""BODYSTRUCTURE walker: attachments (type, disposition, RFC 2231/2047-decoded file name) without the body."""

from __future__ import annotations

import contextlib
import email.utils
from collections.abc import Sequence
from typing import Any

from mailrules.message.view import AttachmentInfo, decode_rfc2047


def bodystructure_attachments(bs: Any) -> list[AttachmentInfo]:
    """Leaf parts with disposition `attachment` or a file name, in MIME order (the MessageView rule).

    `bs` is imapclient's parsed BODYSTRUCTURE (nested tuples; a multipart's first element is a list).
    A message/rfc822 part is one leaf: an attached message, not descended into. Never raises.
    """
    out: list[AttachmentInfo] = []
    # A malformed structure yields what was understood so far.
    with contextlib.suppress(TypeError, ValueError, IndexError, AttributeError):
        _walk(bs, out, depth=0)
    return out


def _walk(part: Any, out: list[AttachmentInfo], depth: int) -> None:
    if depth > 50 or not isinstance(part, Sequence) or not part:
        return
    if isinstance(part[0], list):
        # RFC 9051 §7.5.2 body-type-mpart: (body)(body)... subtype [params disposition language location]
        for child in part[0]:
            _walk(child, out, depth + 1)
        return
    ctype = f"{_text(part[0]).lower()}/{_text(part[1]).lower()}"
    params = _pairs(part[2] if len(part) > 2 else None)
    disp_index = _disposition_index(ctype)
    disposition: str | None = None
    disp_params: list[tuple[str, str]] = []
    if len(part) > disp_index and isinstance(part[disp_index], Sequence) and part[disp_index]:
        disp = part[disp_index]
        disposition = _text(disp[0]).lower() or None
        disp_params = _pairs(disp[1] if len(disp) > 1 else None)
    name = _param(disp_params, "filename") or _param(params, "name")
    if disposition == "attachment" or name:
        out.append(AttachmentInfo(name, ctype, disposition))


def _disposition_index(ctype: str) -> int:
    # body-type-1part: 7 basic fields; text/* adds body-fld-lines, message/rfc822 adds envelope,
    # body and lines; then body-ext-1part starts with md5, followed by the disposition.
    if ctype.startswith("text/"):
        return 9
    if ctype in ("message/rfc822", "message/global"):
        return 11
    return 8


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        # Servers pass 8-bit header bytes through quoted strings; UTF-8 is what mailers send.
        return value.decode("utf-8", "replace")
    return str(value)


def _pairs(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, Sequence) or isinstance(value, bytes | str):
        return []
    items = list(value)
    return [(_text(items[i]).lower(), _text(items[i + 1])) for i in range(0, len(items) - 1, 2)]


def _param(params: list[tuple[str, str]], name: str) -> str | None:
    """One parameter value, joining RFC 2231 continuations and charsets, then RFC 2047 words."""
    relevant = [(k, v) for k, v in params if k == name or k.startswith(name + "*")]
    if not relevant:
        return None
    # decode_params treats its first pair as the main content value: give it a dummy one.
    decoded = email.utils.decode_params([("", ""), *relevant])
    for key, value in decoded[1:]:
        if key.lower() != name:
            continue
        text = str(email.utils.collapse_rfc2231_value(value, errors="replace"))
        if isinstance(value, tuple):
            text = email.utils.unquote(text)  # decode_params re-quotes RFC 2231 values
        # RFC 2231 is the standard for parameters, but many mailers put RFC 2047 words there.
        text = decode_rfc2047(text).strip()
        return text or None
    return None
