"""examples/compose/seed/seed.py `fresh`: a sample .eml (an LF text file) is appended with a new
Message-ID and Date and every line ending in CRLF, as IMAP APPEND wants it (Cyrus refuses bare
newlines; tests/integration/test_demo_cyrus.py covers the demo's own seed)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
from pathlib import Path
from types import ModuleType

SEED = Path(__file__).resolve().parents[2] / "examples" / "compose" / "seed" / "seed.py"
SAMPLES = Path(__file__).resolve().parents[2] / "rules.d" / "samples"
NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def _seed() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_seed", SEED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fresh_samples_are_crlf_with_a_new_message_id() -> None:
    fresh = _seed().fresh
    samples = sorted(SAMPLES.glob("*.eml"))
    assert samples
    for sample in samples:
        raw = sample.read_bytes()
        out = fresh(raw, NOW)
        assert re.search(rb"(?<!\r)\n", out) is None, sample.name  # no bare LF
        assert re.search(rb"\r(?!\n)", out) is None, sample.name  # no bare CR
        ids = re.findall(rb"(?im)^message-id: *(\S+)", out.split(b"\r\n\r\n", 1)[0])
        assert len(ids) == 1 and ids[0].endswith(b"@seed.example>"), sample.name
        assert (
            out.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
            == raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]
        ), sample.name  # the body is the sample's


def test_a_crlf_sample_stays_as_it_was_but_for_its_new_fields() -> None:
    raw = b"From: a@x\r\nMessage-ID: <old@x>\r\nSubject: s\r\n\r\nbody\r\nline\r\n"
    out = _seed().fresh(raw, NOW)
    assert out.startswith(b"From: a@x\r\nSubject: s\r\nMessage-ID: <")
    assert out.endswith(b"\r\n\r\nbody\r\nline\r\n")
