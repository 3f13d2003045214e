"""Composing the outgoing bytes of `forward` and `redirect` (pure: no I/O), and what a send fails with.

Addresses are checked before they reach a header or an SMTP command, header values lose their
control characters, line ends become CRLF, and mail that already carries our loop guard is refused.
smtp/sender.py submits what is built here.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from email.message import MIMEPart
from email.policy import SMTP
from email.utils import format_datetime
from typing import TypeAlias

from mailrules.engine.ports import SendError, SendErrorKind
from mailrules.message.view import MessageView

#: Marks mail we sent, with the sending address; a message that already carries ours is never
#: forwarded or redirected again by the same sender (two rule sets forwarding to each other).
LOOP_HEADER = "X-Mailrules-Loop"

#: a message that went through this many mailrules forwards/redirects is refused as a loop
MAX_HOPS = 10

#: Why a send failed (the Sender port's kinds, engine/ports.py).
ErrorKind: TypeAlias = SendErrorKind

# A plain addr-spec: dot-atom local part (RFC 5322 §3.2.3) @ a DNS name. No quoted local parts,
# no domain literals, no display names, no comments: nothing that needs quoting in a header and
# nothing a header or SMTP command could be smuggled through.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDR_SPEC = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_EOL = re.compile(rb"\r\n|\r|\n")
# Our loop header at the start of any line: in the header, or in the header of a message or of
# the headers a bounce or a forward carries inside (message/rfc822, text/rfc822-headers).
_LOOP_LINE = re.compile(rb"^" + LOOP_HEADER.encode() + rb":[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
# CRLF, folded at 78 columns, non-ASCII as RFC 2047 encoded words (we never assume SMTPUTF8)
SMTP_POLICY = SMTP.clone(cte_type="7bit", refold_source="all")


class SmtpActionError(SendError):
    """A forward or redirect failed; `kind` classifies why.

    `maybe_sent` is True only when the connection broke while the message was being submitted,
    so the mail may have left: the caller must then keep its intent unconfirmed (in doubt), not
    release it for a retry (the Sender port's SendError, engine/ports.py).
    """

    def __init__(self, message: str, kind: ErrorKind, *, maybe_sent: bool = False) -> None:
        super().__init__(message, kind, maybe_sent=maybe_sent)


def validate_address(address: str) -> str:
    """Return `address` if it is a plain ASCII addr-spec (`local@domain`), else raise."""
    if not isinstance(address, str) or len(address) > 254 or not _ADDR_SPEC.fullmatch(address):
        shown = _CONTROL.sub("?", str(address))[:80]
        raise SmtpActionError(f"not a plain e-mail address: {shown!r}", "invalid")
    return address


def header_text(value: str) -> str:
    """`value` made safe for a header: control characters (CR, LF, NUL...) become one space."""
    return _CONTROL.sub(" ", value).strip()


def derive_message_id(from_addr: str, idempotency_key: str) -> str:
    """The Message-ID (or Resent-Message-ID) of the mail sent under `idempotency_key`.

    The same key always gives the same id, so a re-sent copy is a recognisable duplicate; the
    sender address is hashed in so that two installations with equal keys do not collide.
    """
    digest = hashlib.sha256(f"{from_addr.lower()}\0{idempotency_key}".encode()).hexdigest()[:32]
    return f"<{digest}@mailrules>"


def _fold(name: str, value: str) -> bytes:
    return SMTP_POLICY.fold_binary(name, header_text(value))


def _prepare(original: bytes, from_addr: str) -> tuple[bytes, MessageView, list[str]]:
    """The original with CRLF line ends and the loop guards it carries; refuses our own mail.

    Bare CR or LF are not allowed in SMTP (RFC 5321 §2.3.8) and are how "SMTP smuggling" ends
    DATA early on lenient servers, so every line end becomes CRLF; a CRLF original is unchanged.
    Our own guard anywhere in the message (the bounce of a forward carries it inside) is a loop.
    """
    data = _EOL.sub(b"\r\n", original)
    view = MessageView.from_bytes(data)
    guards = [header_text(v).lower() for v in view.header_values(LOOP_HEADER)]
    ours = from_addr.lower().encode()
    if from_addr.lower() in guards or any(
        m.group(1).strip().lower() == ours for m in _LOOP_LINE.finditer(data)
    ):
        raise SmtpActionError(
            f"mail loop: the message already carries {LOOP_HEADER}: {from_addr}; not sending it again",
            "loop",
        )
    if len(guards) >= MAX_HOPS:
        raise SmtpActionError(f"mail loop: the message has passed {len(guards)} mailrules already", "loop")
    return data, view, guards


def build_forward(
    original: bytes,
    to: str,
    *,
    from_addr: str,
    rule: str,
    idempotency_key: str,
    now: datetime | None = None,
) -> tuple[bytes, str]:
    """The forward of `original` to `to`, and its Message-ID.

    multipart/mixed: a short text part naming the rule, then the original as message/rfc822,
    byte for byte (RFC 2046 §5.2.1: never base64 for message/rfc822, so 7bit or 8bit).
    """
    validate_address(to)
    validate_address(from_addr)
    data, view, guards = _prepare(original, from_addr)
    subject = " ".join(header_text(s) for s in view.header_values("subject")[:1])
    message_id = derive_message_id(from_addr, idempotency_key)
    seed = hashlib.sha256(idempotency_key.encode()).hexdigest()
    boundary, n = f"=_mailrules_{seed[:24]}", 0
    while f"--{boundary}".encode() in data:  # a boundary must not occur in the content
        n += 1
        boundary = f"=_mailrules_{seed[:24]}_{n}"
    headers = [
        ("From", from_addr),
        ("To", to),
        ("Subject", f"Fwd: {subject}" if subject else "Fwd:"),
        ("Date", format_datetime(now or datetime.now(UTC))),
        ("Message-ID", message_id),
        ("MIME-Version", "1.0"),
        ("Content-Type", f'multipart/mixed; boundary="{boundary}"'),
        # the guards of earlier hops travel on, or A -> B -> A would loop (theirs are inside the
        # attachment, where nobody looks); only plain addresses, since they come from the mail
        *((LOOP_HEADER, g) for g in guards if _ADDR_SPEC.fullmatch(g)),
        (LOOP_HEADER, from_addr),
        ("Auto-Submitted", "auto-generated"),  # RFC 3834: vacation responders stay quiet
    ]
    text = MIMEPart(policy=SMTP_POLICY)
    note = f'Forwarded by mailrules rule "{header_text(rule)}".\n'
    text.set_content(note, cte="7bit" if note.isascii() else "quoted-printable")
    eight_bit = not data.isascii()
    attached = (
        b"Content-Type: message/rfc822\r\n"
        b"Content-Disposition: inline\r\n"
        b"Content-Transfer-Encoding: " + (b"8bit" if eight_bit else b"7bit") + b"\r\n\r\n"
    )
    delimiter = f"--{boundary}".encode()
    message = b"".join(
        [
            *(_fold(n, v) for n, v in headers),
            b"\r\n",
            delimiter + b"\r\n",
            text.as_bytes(),
            b"\r\n" + delimiter + b"\r\n",
            attached,
            data,
            b"\r\n" + delimiter + b"--\r\n",
        ]
    )
    return message, message_id


def build_redirect(
    original: bytes,
    to: str,
    *,
    from_addr: str,
    idempotency_key: str,
    now: datetime | None = None,
) -> tuple[bytes, str]:
    """The redirect of `original` to `to` and its Resent-Message-ID: the original unchanged,
    with a block of Resent-* fields (RFC 5322 §3.6.6) and our loop guard prepended."""
    validate_address(to)
    validate_address(from_addr)
    data, _, _ = _prepare(original, from_addr)
    resent_id = derive_message_id(from_addr, idempotency_key)
    headers = [
        ("Resent-From", from_addr),
        ("Resent-To", to),
        ("Resent-Date", format_datetime(now or datetime.now(UTC))),
        ("Resent-Message-ID", resent_id),
        (LOOP_HEADER, from_addr),
    ]
    return b"".join(_fold(n, v) for n, v in headers) + data, resent_id
