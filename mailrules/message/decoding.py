"""Decoding of message bytes: charsets, RFC 2047 encoded words, transfer encodings; never raises."""

from __future__ import annotations

import base64
import binascii
import codecs
import email.message
import quopri
import re

__all__ = [
    "KNOWN_ENCODINGS",
    "decode_bytes",
    "decode_prefix",
    "decode_rfc2047",
    "fix_8bit",
    "transfer_decoded",
    "transfer_encoding",
]

#: Labels seen in the wild that Python's codecs do not know, or know under a narrower charset
#: (WHATWG practice: latin-1 labels are decoded as windows-1252, gb2312 as its superset gb18030).
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "utf-8",  # 8-bit text labelled ascii is almost always UTF-8 (falls back below)
    "ascii": "utf-8",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "x-mac-roman": "mac_roman",
    "windows-874": "cp874",
    "unknown-8bit": "utf-8",
    "x-unknown": "utf-8",
    "utf8": "utf-8",
}

# RFC 2047 encoded word; the charset may carry an RFC 2231 language suffix (`utf-8*en`).
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([qQbB])\?([^?]*)\?=")
_SURROGATES = re.compile("[\udc80-\udcff]")
#: RFC 2045 §6.1: the transfer encodings there are; any other is unknown (§6.4), "" is 7bit.
KNOWN_ENCODINGS = frozenset({"", "7bit", "8bit", "binary", "quoted-printable", "base64"})
_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def decode_bytes(data: bytes, charset: str | None, defects: list[str] | None = None) -> str:
    """Decode `data` in `charset`, falling back to UTF-8 then latin-1; never raises."""
    label = (charset or "utf-8").strip().strip('"').lower()
    codec = _CHARSET_ALIASES.get(label, label)
    try:
        return data.decode(codec)
    except LookupError:
        if defects is not None:
            defects.append(f"unknown charset {label!r}")
    except UnicodeDecodeError:
        if codec not in ("utf-8", "cp1252") and defects is not None:
            defects.append(f"text not valid in charset {label!r}")
    except Exception:  # a codec that is not a text encoding, e.g. "base64" or "rot13"
        if defects is not None:
            defects.append(f"unusable charset {label!r}")
    for fallback in ("utf-8", "cp1252"):
        try:
            return data.decode(fallback)
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


def fix_8bit(value: str, defects: list[str] | None = None) -> str:
    """Undo the parser's surrogateescape of raw 8-bit header bytes (usually UTF-8, RFC 6532)."""
    if not _SURROGATES.search(value):
        return value
    if defects is not None:
        defects.append("8-bit characters in a header")
    return decode_bytes(value.encode("utf-8", "surrogateescape"), "utf-8")


def _decode_word(encoding: str, text: str) -> bytes:
    if encoding in "bB":
        text = text.strip()
        # Postel on padding only: text outside the alphabet means this is not an encoded word.
        if not re.fullmatch(r"[A-Za-z0-9+/]*=*", text) or len(text.rstrip("=")) % 4 == 1:
            raise binascii.Error("not base64")
        return base64.b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    raw = text.replace("_", " ").encode("latin-1", "replace")
    return binascii.a2b_qp(raw)


def decode_rfc2047(value: str, defects: list[str] | None = None) -> str:
    """Decode RFC 2047 encoded words; adjacent words in one charset are joined before decoding.

    Own decoder rather than `email.header.decode_header`: that one raises on bad base64, mangles
    non-latin-1 text next to encoded words, and `make_header` raises on unknown charsets.
    """
    value = fix_8bit(value, defects)
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: bytes = b""
    pending_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending_charset is not None:
            out.append(decode_bytes(pending, pending_charset, defects))
        pending, pending_charset = b"", None

    for m in _ENCODED_WORD.finditer(value):
        between = value[pos : m.start()]
        # RFC 2047 §6.2: whitespace between two encoded words is not displayed
        if between and not (between.isspace() and pending_charset is not None):
            flush()
            out.append(between)
        charset = m.group(1).split("*", 1)[0]
        try:
            data = _decode_word(m.group(2), m.group(3))
        except (binascii.Error, ValueError):
            if defects is not None:
                defects.append("undecodable RFC 2047 encoded word")
            flush()
            out.append(m.group(0))
            pos = m.end()
            continue
        if pending_charset is not None and charset.lower() != pending_charset.lower():
            flush()
        pending += data
        pending_charset = charset
        pos = m.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def decode_prefix(data: bytes, charset: str | None, defects: list[str]) -> str:
    """`decode_bytes` of data cut at a cap: a character the cut split in two is left out."""
    label = (charset or "utf-8").strip().strip('"').lower()
    try:
        text = codecs.getincrementaldecoder(_CHARSET_ALIASES.get(label, label))().decode(data, final=False)
    except Exception:  # unknown, invalid or non-text codec: the whole-text fallbacks decide
        return decode_bytes(data, charset, defects)
    return text if isinstance(text, str) else decode_bytes(data, charset, defects)


def transfer_encoding(part: email.message.Message) -> str:
    """The part's Content-Transfer-Encoding, lower-cased, without white space or a comment."""
    value = part.get("content-transfer-encoding")
    return "" if value is None else str(value).partition("(")[0].strip().lower()


def transfer_decoded(part: email.message.Message, encoding: str) -> bytes | None:
    """The part's content with its (known) transfer encoding undone."""
    raw = str(part.get("content-transfer-encoding", "")).lower()
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or raw == encoding or encoding not in ("base64", "quoted-printable"):
        return payload if isinstance(payload, bytes) else None
    # Spelled with a comment or trailing blanks: compat32 compares the raw value, so do it here.
    if encoding == "quoted-printable":
        return quopri.decodestring(payload)
    clean = _BASE64_JUNK.sub(b"", payload)
    clean = clean[: len(clean) - 1] if len(clean) % 4 == 1 else clean  # a lone sextet is no byte
    return base64.b64decode(clean + b"=" * (-len(clean) % 4))
