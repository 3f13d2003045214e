"""MessageView never raises: Python's email test corpus, hand-broken messages and random bytes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrules.message.view import MessageView
from tests.needs import unavailable

BROKEN = Path(__file__).resolve().parent.parent / "fixtures" / "eml" / "broken"
FIELDS = ("from", "sender", "to", "cc", "bcc", "recipient", "reply-to", "subject", "list", "body", "text")


def _corpus_dir() -> Path | None:
    candidates: list[Path] = []
    try:
        # the CPython test package (no stubs), absent from some distributions
        import test  # type: ignore[import-not-found]

        candidates.append(Path(os.path.dirname(test.__file__)))
    except ImportError:
        pass
    base = Path(sys.base_prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "test"
    candidates += [base, Path("/root/.pyenv/versions/3.11.7/lib/python3.11/test")]
    for c in candidates:
        data = c / "test_email" / "data"
        if any(data.glob("msg_*.txt")):
            return data
    return None


CORPUS = _corpus_dir()
CORPUS_FILES = sorted(CORPUS.glob("msg_*.txt")) if CORPUS else []


def exercise(v: MessageView) -> None:
    """Touch every public property and method."""
    for f in FIELDS:
        assert all(isinstance(s, str) for s in v.field_text(f))
        if f not in ("subject", "list", "body", "text"):
            assert all(isinstance(a, str) for a in v.addresses(f))
    for h in ("subject", "from", "date", "list-id", "content-type", "x-nothing"):
        v.header_values(h)
        v.has_header(h)
    _ = (v.list_id, v.message_id, v.sent_date, v.internaldate, v.size, v.flags)
    _ = (v.attachments, v.has_attachment, v.attachment_names, repr(v))
    assert all(isinstance(d, str) for d in v.defects)


def test_corpus_found_or_skipped() -> None:
    if CORPUS is None:
        unavailable(
            "Python's email test corpus (test/test_email/data) is not installed with this interpreter"
        )
    assert len(CORPUS_FILES) >= 40


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_python_email_corpus(path: Path) -> None:
    exercise(MessageView.from_file(path))


BROKEN_FILES = sorted(BROKEN.glob("*.eml"))


def test_enough_broken_fixtures() -> None:
    assert len(BROKEN_FILES) >= 10


@pytest.mark.parametrize("path", BROKEN_FILES, ids=lambda p: p.name)
def test_broken_messages(path: Path) -> None:
    exercise(MessageView.from_file(path))


def test_broken_specifics() -> None:
    nul = MessageView.from_file(BROKEN / "nul-bytes.eml")
    assert nul.header_values("subject") == ["nul\x00here"]
    trunc = MessageView.from_file(BROKEN / "truncated-mime.eml")
    assert trunc.attachment_names == ["cut.pdf"]
    assert "CloseBoundaryNotFoundDefect" in trunc.defects
    assert MessageView.from_file(BROKEN / "unknown-charset.eml").header_values("subject") == ["qApla!"]
    missing = MessageView.from_file(BROKEN / "missing-blank-line.eml")
    # RFC 5322 §2.1: without the empty line, everything is header section: no body to search
    # (the Sieve reading; Pigeonhole's tests hold it).
    assert missing.field_text("body") == []
    assert "MissingHeaderBodySeparatorDefect" in missing.defects
    huge = MessageView.from_file(BROKEN / "huge-header.eml")
    assert len(huge.header_values("subject")[0]) > 700_000
    assert MessageView.from_file(BROKEN / "headers-only.eml").header_values("subject") == ["only headers"]
    assert MessageView.from_file(BROKEN / "bad-base64.eml").header_values("subject") == [
        "=?utf-8?b?@@@not base64***?="
    ]


_header_line = st.builds(
    lambda n, v: n + b": " + v + b"\r\n",
    st.sampled_from([b"From", b"To", b"Subject", b"Date", b"List-Id", b"Content-Type", b"X-A"]),
    st.binary(max_size=60)
    | st.sampled_from(
        [
            b"=?utf-8?b?w6k=?=",
            b"=?bogus?q?=FF?=",
            b"multipart/mixed; boundary=b",
            b'text/plain; charset="x"',
            b"a@b, <c@d>",
            b"Mon, 99 Foo 2020",
        ]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(raw: bytes) -> None:
    exercise(MessageView.from_bytes(raw))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_header_line, max_size=8), st.binary(max_size=200))
def test_random_header_shaped_bytes_never_raise(headers: list[bytes], body: bytes) -> None:
    exercise(MessageView.from_bytes(b"".join(headers) + b"\r\n--b\r\n" + body))
