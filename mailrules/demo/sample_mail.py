"""A realistic generated mailbox (lists, notifications, invoices, newsletters, people) for demo and bench."""

from __future__ import annotations

import base64
import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime

_PEOPLE = [
    ("Mum", "mum@family.example"),
    ("Bob Martin", "bob@example.com"),
    ("Zoë Δημητρίου", "zoe@example.gr"),
    ("René Dupont", "rene@example.fr"),
    ("Chen Wei", "chen@example.cn"),
    ("Alice", "alice@work.example"),
]
_LISTS = [
    ("python-dev", "python-dev.python.org", "Python core development"),
    ("dovecot", "dovecot.dovecot.org", "Dovecot users"),
    ("debian-devel", "debian-devel.lists.debian.org", "Debian development"),
    ("rust-users", "rust-users.rust-lang.org", "Rust users"),
]
_SUBJECTS = [
    "Sunday lunch?",
    "Re: holiday photos",
    "Café on Friday?",
    "Quarterly numbers",
    "Fwd: the contract",
    "Réunion de lundi",
    "Meeting notes",
]
_LIST_SUBJECTS = [
    "PEP draft",
    "Re: release schedule",
    "Proposal: faster imports",
    "Bug in IDLE handling",
    "Q&A",
]
# Every line ends in CRLF, the base64 lines too (encodebytes ends them in LF): an APPENDed message
# is in RFC 5322 form (RFC 9051 §6.3.12), where CR and LF come only together (§2.3); Cyrus refuses
# a bare LF ("NO Message contains bare newlines"), Dovecot and pymap take it.
_PDF = base64.encodebytes(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n").decode().replace("\n", "\r\n")


@dataclass(frozen=True, slots=True)
class SampleMessage:
    raw: bytes
    flags: tuple[str, ...]
    internaldate: dt.datetime
    kind: str  # person, list, github, ci, invoice, receipt, newsletter, marketing, big


def _h(text: str) -> str:
    return text if text.isascii() else Header(text, "utf-8").encode(linesep="\r\n")


def _addr(name: str, addr: str) -> str:
    return f"{_h(name)} <{addr}>" if name else addr


def _message(
    rng: random.Random,
    n: int,
    when: dt.datetime,
    frm: str,
    subject: str,
    body: str,
    extra: str = "",
    attachment: str | None = None,
    to: str = "me@example.com",
) -> bytes:
    head = (
        f"Date: {format_datetime(when)}\r\nFrom: {frm}\r\nTo: {to}\r\nSubject: {_h(subject)}\r\n"
        f"Message-ID: <{n}.{rng.getrandbits(40):x}@sample.example>\r\nMIME-Version: 1.0\r\n{extra}"
    )
    if attachment is None:
        return (
            head
            + f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
        ).encode()
    return (
        head + 'Content-Type: multipart/mixed; boundary="=sample="\r\n\r\n--=sample=\r\n'
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f'{body}\r\n--=sample=\r\nContent-Type: application/pdf; name="{attachment}"\r\n'
        f'Content-Disposition: attachment; filename="{attachment}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{_PDF}--=sample=--\r\n"
    ).encode()


def crlf(raw: bytes) -> bytes:
    """`raw` with every line ending in CRLF: a lone LF or CR becomes CRLF (a text file's .eml
    samples end their lines in LF; APPEND wants the message as sent, RFC 5322 §2.3)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def generate(
    count: int, *, seed: int = 1, now: dt.datetime | None = None, years: int = 3
) -> Iterator[SampleMessage]:
    """`count` messages spread over `years` years before `now`, in date order, deterministic per
    seed; every line ends in CRLF."""
    rng = random.Random(seed)
    now = now or dt.datetime.now(dt.UTC).replace(microsecond=0)
    span = years * 365 * 86400
    stamps = sorted(now - dt.timedelta(seconds=rng.randrange(60, span)) for _ in range(count))
    kinds = ["person"] * 20 + ["list"] * 30 + ["github"] * 15 + ["ci"] * 5 + ["invoice"] * 5 + ["receipt"] * 3
    kinds += ["newsletter"] * 12 + ["marketing"] * 6 + ["big"] * 1
    for n, when in enumerate(stamps):
        kind = rng.choice(kinds)
        old = (now - when).days > 30
        flags: tuple[str, ...] = ("\\Seen",) if old or rng.random() < 0.3 else ()
        if rng.random() < 0.05:
            flags += ("\\Flagged",)
        yield SampleMessage(_make(rng, n, kind, when), flags, when, kind)


def _make(rng: random.Random, n: int, kind: str, when: dt.datetime) -> bytes:
    if kind == "person":
        name, addr = rng.choice(_PEOPLE)
        return _message(rng, n, when, _addr(name, addr), rng.choice(_SUBJECTS), "Hello,\r\nsee you soon.")
    if kind == "list":
        short, ident, desc = rng.choice(_LISTS)
        name, addr = rng.choice(_PEOPLE)
        extra = (
            f"List-Id: {desc} <{ident}>\r\nList-Post: <mailto:{short}@lists.example>\r\nPrecedence: list\r\n"
        )
        return _message(
            rng,
            n,
            when,
            _addr(name, addr),
            f"[{short}] {rng.choice(_LIST_SUBJECTS)}",
            "A long discussion follows.\r\n" * rng.randint(1, 40),
            extra,
        )
    if kind == "github":
        extra = "List-ID: example/engine <engine.example.github.com>\r\nX-GitHub-Reason: subscribed\r\n"
        return _message(
            rng,
            n,
            when,
            _addr("Ada Lovelace", "notifications@github.com"),
            f"Re: [example/engine] PR #{rng.randint(1, 999)}",
            "@ada approved these changes.",
            extra,
        )
    if kind == "ci":
        status = rng.choice(["failed", "passed", "passed"])
        return _message(
            rng,
            n,
            when,
            _addr("CI", "builds@ci.example.com"),
            f"Build #{n} {status} on main",
            f"Job {status}.",
        )
    if kind == "invoice":
        word = rng.choice(["invoice", "facture", "Invoice"])
        return _message(
            rng,
            n,
            when,
            _addr("Billing", "billing@hosting.example.net"),
            f"Your {word} {n}",
            "Please find it attached.",
            attachment=f"{word}-{n}.pdf",
        )
    if kind == "receipt":
        return _message(
            rng,
            n,
            when,
            _addr("Example Store", "store@shop.example.com"),
            "Your receipt from Example Store",
            "Thank you.",
            attachment=f"receipt-{n}.pdf",
        )
    if kind == "newsletter":
        extra = "List-Unsubscribe: <mailto:unsub@news.example.com>\r\n"
        return _message(
            rng,
            n,
            when,
            _addr("Weekly Digest", "digest@news.example.com"),
            "This week in IMAP",
            "<p>Ten things.</p>",
            extra,
        )
    if kind == "marketing":
        extra = "Precedence: bulk\r\n"
        return _message(
            rng,
            n,
            when,
            _addr("Deals", "deals@marketing.example.com"),
            "50% off everything",
            "Buy now.",
            extra,
        )
    # big: one attachment of ~1.2 MB from bob
    body = "x" * 76 + "\r\n"
    return _message(
        rng,
        n,
        when,
        _addr("Bob Martin", "bob@example.com"),
        "The raw footage",
        body * 16000,
        attachment="footage.pdf",
    )
