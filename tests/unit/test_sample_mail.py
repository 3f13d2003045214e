"""The demo's and bench's sample mail is in RFC 5322 form: every line ends in CRLF (Cyrus refuses
a bare LF in APPEND)."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from mailrules.demo.__main__ import EXAMPLES
from mailrules.demo.sample_mail import crlf, generate

NOW = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
KINDS = {"person", "list", "github", "ci", "invoice", "receipt", "newsletter", "marketing", "big"}
#: a CR not followed by LF, or an LF not preceded by CR
BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def bare_ends(raw: bytes) -> list[bytes]:
    return [raw[max(0, m.start() - 30) : m.end() + 10] for m in BARE.finditer(raw)]


@pytest.mark.parametrize("seed", [1, 3, 7])
def test_every_generated_message_ends_its_lines_in_crlf(seed: int) -> None:
    messages = list(generate(400, seed=seed, now=NOW, years=3))
    assert {m.kind for m in messages} == KINDS  # every kind of message was looked at
    for m in messages:
        assert bare_ends(m.raw) == [], m.kind
        assert m.raw.endswith(b"\r\n")


def test_non_ascii_names_and_subjects_stay_crlf_when_folded() -> None:
    # an encoded word too long for one line is folded by email.header: with CRLF, not LF
    from mailrules.demo import sample_mail

    folded = sample_mail._h("Zoë Δημητρίου " * 6)
    assert "\r\n " in folded and bare_ends(folded.encode()) == []


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (b"A: 1\nB: 2\n\nbody\n", b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
        (b"A: 1\r\nB: 2\r\n\r\nbody", b"A: 1\r\nB: 2\r\n\r\nbody"),  # already CRLF: unchanged
        (b"A: 1\rB: 2\r\n\n\r\r\n", b"A: 1\r\nB: 2\r\n\r\n\r\n\r\n"),
        (b"", b""),
    ],
)
def test_crlf(raw: bytes, want: bytes) -> None:
    assert crlf(raw) == want
    assert crlf(want) == want


def test_the_rules_samples_are_appended_in_crlf_form() -> None:
    samples = sorted((EXAMPLES / "samples").glob("*.eml"))
    assert samples
    for p in samples:
        raw = crlf(p.read_bytes())
        assert bare_ends(raw) == [], p.name
        assert raw.replace(b"\r\n", b"\n") == p.read_bytes().replace(b"\r\n", b"\n")  # only line ends changed
