"""A decoded, bounded, never-raising view of one message: headers, addresses, text parts, attachments."""

from __future__ import annotations

import datetime as dt
import email
import email.message
import email.parser
import email.policy
import email.utils
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypedDict, TypeVar, Unpack, overload

from mailrules.bounds import DEFAULT_BOUNDS, Bounds, check_deadline
from mailrules.message.decoding import (
    KNOWN_ENCODINGS,
    decode_bytes,
    decode_prefix,
    decode_rfc2047,
    fix_8bit,
    transfer_decoded,
    transfer_encoding,
)
from mailrules.message.headers import scan_section
from mailrules.message.htmltext import html_to_text

__all__ = ["AttachmentInfo", "MessageView", "decode_bytes", "decode_rfc2047"]

#: The language's address fields and the headers they read; `recipient` is to ∪ cc ∪ bcc.
_ADDRESS_HEADERS: dict[str, tuple[str, ...]] = {
    "from": ("from",),
    "sender": ("sender",),
    "to": ("to",),
    "cc": ("cc",),
    "bcc": ("bcc",),
    "reply-to": ("reply-to",),
    "recipient": ("to", "cc", "bcc"),
}

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_CRLF = re.compile(r"[\r\n]+")
#: The raw message is given to the parser in pieces of this size, the deadline looked at between.
_PARSE_CHUNK = 256 * 1024


def _unfold(value: str) -> str:
    """RFC 5322 §2.2.3 unfolding; stray line breaks (from broken input) become spaces."""
    if "\n" not in value and "\r" not in value:
        return value  # most values are one line: two re.sub each were 2.7% of a 20,000-message run
    return _CRLF.sub(" ", _FOLD.sub("", value))


_T = TypeVar("_T")


class cached_property(Generic[_T]):  # named as functools' that it replaces
    """functools.cached_property without the lock Python 3.11 takes on every first read (a tenth
    of a view's cost when a run reads a few headers of 20,000 messages; 3.12 dropped the lock).
    A view belongs to one thread. Like functools', it caches nothing when the function raises
    (an evaluation's deadline passing: EvaluationTimeout)."""

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, cls: type | None = None) -> cached_property[_T]: ...
    @overload
    def __get__(self, obj: object, cls: type | None = None) -> _T: ...
    def __get__(self, obj: object | None, cls: type | None = None) -> _T | cached_property[_T]:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """One attachment: decoded file name (None when it has none), MIME type, disposition."""

    filename: str | None
    content_type: str
    disposition: str | None


class ViewOptions(TypedDict, total=False):
    """The keyword options of the MessageView constructor (defaults there), for from_bytes and from_file."""

    size: int | None
    internaldate: dt.datetime | None
    flags: Iterable[str]
    uid: int | None
    attachments: list[AttachmentInfo] | None
    bounds: Bounds


class MessageView:
    """A decoded view of one message. Every property is computed lazily, cached, and never raises.

    `bounds` caps the decoded text that `body` and `text` give (text beyond a cap is not
    searched; `text_cut` then says so). Inside `bounds.deadline_scope` a decode that outlives the
    deadline raises `EvaluationTimeout` (a BaseException) and caches nothing.
    """

    def __init__(
        self,
        raw: bytes,
        *,
        size: int | None = None,
        internaldate: dt.datetime | None = None,
        flags: Iterable[str] = (),
        uid: int | None = None,
        attachments: list[AttachmentInfo] | None = None,
        bounds: Bounds = DEFAULT_BOUNDS,
    ) -> None:
        self.raw = bytes(raw)
        self.size: int = len(self.raw) if size is None else size
        if internaldate is not None and internaldate.tzinfo is None:
            internaldate = internaldate.replace(tzinfo=dt.UTC)
        self.internaldate: dt.datetime | None = internaldate
        self.flags: frozenset[str] = frozenset(flags)
        self.uid = uid
        self._given_attachments = list(attachments) if attachments is not None else None
        self._defects: list[str] = []
        self._header_cache: dict[str, list[str]] = {}
        self._address_cache: dict[str, list[str]] = {}
        #: The caps on decoded text; set it before the first read of `body` or `text`.
        self.bounds = bounds
        #: A text part, the text parts together or the header section went past a cap.
        self.text_cut = False

    @classmethod
    def from_bytes(cls, raw: bytes, **options: Unpack[ViewOptions]) -> MessageView:
        """A view of `raw` (the whole message or only its header block); the constructor's options."""
        return cls(raw, **options)

    @classmethod
    def from_file(cls, path: str | Path, **options: Unpack[ViewOptions]) -> MessageView:
        """A view of an .eml file (raises OSError when it cannot be read); the constructor's options."""
        return cls(Path(path).read_bytes(), **options)

    def __repr__(self) -> str:
        return f"<MessageView uid={self.uid} size={self.size} message_id={self.message_id!r}>"

    # -- parsing -----------------------------------------------------------------------------

    @cached_property
    def _message(self) -> email.message.Message:
        # compat32 parses anything and records defects instead of raising; the default policy
        # raises on some malformed headers when they are read, so headers are decoded by hand.
        # Fed in pieces, so that an evaluation's deadline can stop the parse of a huge message.
        try:
            parser = email.parser.BytesFeedParser(policy=email.policy.compat32)
            for start in range(0, len(self.raw), _PARSE_CHUNK):
                check_deadline()
                parser.feed(self.raw[start : start + _PARSE_CHUNK])
            message = parser.close()
            assert isinstance(message, email.message.Message)
            return message
        except Exception as exc:  # never seen, but random bytes must not crash the engine
            self._defects.append(f"unparseable message: {type(exc).__name__}")
            return email.message.Message()

    def _parsed_headers(self) -> list[tuple[str, str]]:
        """(lower-cased name, raw value) of every header field, in order, from the email parser."""
        try:
            return [(fix_8bit(str(n)).strip().lower(), str(v)) for n, v in self._message.raw_items()]
        except Exception as exc:
            self._defects.append(f"unreadable headers: {type(exc).__name__}")
            return []

    @cached_property
    def _header_index(self) -> dict[str, list[str]]:
        """Lower-cased name -> raw values, names in order of first appearance: built once, so
        every header read is linear in the number of header fields, not quadratic."""
        index: dict[str, list[str]] = {}
        # Views fetched for a residual or the journal hold a few plain header fields: reading them
        # without the email parser gives the same fields (message/headers.py) for a small part of
        # the cost; when they are simple, their decoded values too (header_values' cache).
        section = scan_section(self.raw) if "_message" not in self.__dict__ else None
        if section is not None and section[1]:
            decoded = self._header_cache
            for n, v in section[0]:
                if n in index:
                    index[n].append(v)
                    decoded[n].append(v.strip())
                else:
                    index[n] = [v]
                    decoded[n] = [v.strip()]
            return index
        for n, v in self._parsed_headers() if section is None else section[0]:
            if n in index:
                index[n].append(v)
            else:
                index[n] = [v]
        return index

    def _raw_values(self, name: str) -> list[str]:
        return [_unfold(v) for v in self._header_index.get(name.strip().lower(), ())]

    # -- headers -----------------------------------------------------------------------------

    def has_header(self, name: str) -> bool:
        """The header is present (even if empty)."""
        return name.strip().lower() in self._header_index

    def header_values(self, name: str) -> list[str]:
        """Decoded (RFC 2047), unfolded and stripped values, one per occurrence."""
        cached = self._header_cache.get(name)  # as spelled (the engine reads a few names often)
        return list(self._read_header(name) if cached is None else cached)

    def _read_header(self, name: str) -> list[str]:
        index = self._header_index  # first: building it may fill the cache (simple sections)
        cached = self._header_cache.get(name)
        if cached is None:
            key = name.strip().lower()
            cached = self._header_cache.get(key)
            if cached is None:
                cached = self._header_cache[key] = [
                    # Most values read: nothing to unfold (no line break), no 8-bit byte and no
                    # encoded word (no "=?"), so each step of `_decoded` would return them as they are.
                    v.strip()
                    if v.isascii() and "=?" not in v and "\n" not in v and "\r" not in v
                    else self._decoded(v, name)
                    for v in index.get(key, ())
                ]
            self._header_cache[name] = cached
        return cached

    def _decoded(self, raw: str, name: str) -> str:
        """One raw value unfolded, decoded (8-bit bytes, RFC 2047 words) and stripped."""
        value = _unfold(raw)
        try:
            return decode_rfc2047(value, self._defects).strip()
        except Exception:
            self._defects.append(f"undecodable {name} header")
            return value.strip()

    def addresses(self, field: str) -> list[str]:
        """Lower-cased addr-specs of a language address field (or of any header by name)."""
        key = field.strip().lower()
        cached = self._address_cache.get(key)
        if cached is None:
            cached = self._address_cache[key] = self._parse_addresses(key)
        return list(cached)

    def _parse_addresses(self, key: str) -> list[str]:
        out: list[str] = []
        for header in _ADDRESS_HEADERS.get(key, (key,)):
            # Parse the raw value, decode after: an encoded display name may hide a comma.
            raws = [fix_8bit(v) for v in self._raw_values(header)]
            try:
                pairs = email.utils.getaddresses(raws)
            except Exception:
                self._defects.append(f"unparseable {header} addresses")
                continue
            for _name, addr in pairs:
                addr = decode_rfc2047(addr).strip().strip("<>").strip().lower()
                if addr:
                    out.append(addr)
        return out

    def field_text(self, field: str) -> list[str]:
        """The decoded values a language field is compared with.

        Address fields give whole header values (display names included); `list` gives, for each
        List-Id, its identifier and then the whole value when that differs; `body` one value per
        text part; `text` one value: decoded headers, a blank line, the body.
        """
        f = field.lower()
        headers = _ADDRESS_HEADERS.get(f)
        if headers is not None:
            if len(headers) == 1:
                return self.header_values(headers[0])
            return [v for h in headers for v in self.header_values(h)]
        if f == "list":
            out: list[str] = []
            for v in self.header_values("list-id"):
                ident = _list_identifier(v)
                out.append(ident)
                if ident != v:
                    out.append(v)
            return out
        if f == "body":
            return list(self._body_parts)
        if f == "text":
            return [self._text]
        return self.header_values(f)

    @cached_property
    def list_id(self) -> str | None:
        """The identifier inside <...> of List-Id (the whole stripped value without brackets)."""
        values = self._read_header("list-id")  # read, not kept: no copy of the cached list
        return (_list_identifier(values[0]) or None) if values else None

    @cached_property
    def message_id(self) -> str | None:
        values = self._read_header("message-id")  # read, not kept: no copy of the cached list
        return (values[0] or None) if values else None

    @cached_property
    def sent_date(self) -> dt.datetime | None:
        """The Date header, tz-aware in its own offset (-0000 means UTC); None when invalid."""
        for v in self._raw_values("date"):
            try:
                d = email.utils.parsedate_to_datetime(fix_8bit(v).strip())
            except Exception:
                d = None
            if d is None:
                self._defects.append("invalid Date header")
                return None
            return d if d.tzinfo is not None else d.replace(tzinfo=dt.UTC)
        return None

    # -- MIME --------------------------------------------------------------------------------

    def _parts(self) -> Iterator[email.message.Message]:
        try:
            yield from self._message.walk()
        except Exception as exc:
            self._defects.append(f"broken MIME structure: {type(exc).__name__}")

    def _filename(self, part: email.message.Message) -> str | None:
        try:
            name = part.get_filename() or part.get_param("name")
        except Exception:
            self._defects.append("unparseable attachment parameters")
            return None
        if isinstance(name, tuple):  # RFC 2231 on `name`, which get_filename does not collapse
            name = email.utils.collapse_rfc2231_value(name)
        if not name:
            return None
        # RFC 2231 is the standard; RFC 2047 words in filenames are what many mailers send.
        return decode_rfc2047(str(name), self._defects).strip() or None

    @staticmethod
    def _disposition(part: email.message.Message) -> str | None:
        try:
            d = part.get_content_disposition()
        except Exception:
            return None
        return d.lower() if d else None

    @cached_property
    def attachments(self) -> list[AttachmentInfo]:
        """Parts with Content-Disposition attachment or with a file name (inline images too)."""
        if self._given_attachments is not None:
            return list(self._given_attachments)
        out: list[AttachmentInfo] = []
        for part in self._parts():
            try:
                if part.is_multipart() and part.get_content_maintype() == "multipart":
                    continue
                name = self._filename(part)
                disp = self._disposition(part)
                if disp == "attachment" or name:
                    out.append(AttachmentInfo(name, part.get_content_type(), disp))
            except Exception:
                self._defects.append("unreadable MIME part")
        return out

    @property
    def has_attachment(self) -> bool:
        return bool(self.attachments)

    @property
    def attachment_names(self) -> list[str]:
        return [a.filename for a in self.attachments if a.filename]

    @cached_property
    def _has_body(self) -> bool:
        # A message whose header section never ends (no empty line, RFC 5322 §2.1) has no body;
        # the parser would read the first line that is not a field as the start of one.
        if any(type(d).__name__ == "MissingHeaderBodySeparatorDefect" for d in self._message.defects):
            return b"\n\n" in self.raw or b"\n\r\n" in self.raw
        return True

    @cached_property
    def _body_parts(self) -> list[str]:
        """The decoded text parts, each cut at `part_text_bytes`, all at `message_text_bytes`."""
        out: list[str] = []
        if not self._has_body:
            return out
        room = self.bounds.message_text_bytes
        for part in self._parts():
            check_deadline()
            try:
                ctype = part.get_content_type()
                if ctype not in ("text/plain", "text/html") or part.is_multipart():
                    continue
                if self._disposition(part) == "attachment":
                    continue
                encoding = transfer_encoding(part)
                if encoding not in KNOWN_ENCODINGS:
                    # RFC 2045 §6.4: treated as application/octet-stream, so not text.
                    self._defects.append(f"unknown transfer encoding {encoding[:40]!r}")
                    continue
                cap = min(self.bounds.part_text_bytes, room)
                if cap <= 0:
                    self.text_cut = True  # the message's text is full: this part is not read
                    continue
                payload = transfer_decoded(part, encoding)
                if payload is None:
                    continue
                if len(payload) > cap:
                    self.text_cut = True
                    text = decode_prefix(payload[:cap], part.get_content_charset(), self._defects)
                else:
                    text = decode_bytes(payload, part.get_content_charset(), self._defects)
                room -= min(len(payload), cap)
                out.append(html_to_text(text) if ctype == "text/html" else text)
            except Exception:
                self._defects.append("undecodable text part")
        return out

    @cached_property
    def _text(self) -> str:
        """Decoded headers as `name: value` lines (cut at `message_text_bytes`), a blank line,
        the text parts."""
        lines: list[str] = []
        room = self.bounds.message_text_bytes
        for name in self._header_index:
            check_deadline()
            for v in self.header_values(name):
                line = f"{name}: {v}"
                if len(line) >= room:
                    self.text_cut = True
                    if room > 0:
                        lines.append(line[:room])
                    room = 0
                    break
                lines.append(line)
                room -= len(line) + 1
            if room <= 0:
                break
        return "\n".join(lines) + "\n\n" + "\n".join(self._body_parts)

    @property
    def defects(self) -> list[str]:
        """What was malformed (for logs); decodes everything once to find out."""
        _ = (self._text, self.attachments, self.sent_date, self.addresses("recipient"))
        _ = self.addresses("from")
        found = list(self._defects)
        try:
            for part in self._parts():
                found.extend(type(d).__name__ for d in getattr(part, "defects", ()))
        except Exception:
            found.append("broken MIME structure")
        return list(dict.fromkeys(found))


def _list_identifier(value: str) -> str:
    m = re.search(r"<([^<>]*)>", value)
    return (m.group(1) if m else value).strip()
