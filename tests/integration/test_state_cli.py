"""Hostile mail and a fragile state through the command line on Dovecot: forged log lines, broken or
full state files, two processes on one state."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mailrules.imap.session import ConnectionParams
from mailrules.logs import UNSAFE
from tests.integration.helpers import append, snapshot, write_config

pytestmark = pytest.mark.integration

#: A record's first line in the text log.
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
FAKE_STAMP = "1999-01-01 00:00:00,000"
#: The Message-ID decodes (RFC 2047) to `<x@y>` CR LF and a record of our own making.
FORGED = (
    b"From: a@example.com\r\n"
    b"To: me@example.com\r\n"
    b"Subject: invoice\r\n"
    b"Message-ID: =?utf-8?q?=3Cx=40y=3E=0D=0A1999-01-01_00:00:00,000_ERROR_mailrules:_FAKE?=\r\n"
    b"Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n"
    b"\r\nbody\r\n"
)


def mailrules(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailrules", *args], capture_output=True, text=True, timeout=120
    )


def test_a_forged_message_id_cannot_add_a_log_line(account: ConnectionParams, tmp_path: Path) -> None:
    assert not any(append(account, "INBOX", [(FORGED, [], None)]))
    rules = 'rule "r" { when subject is "invoice" then flag, copy to "Copies" }'
    config = write_config(tmp_path, account, rules)
    for fmt in ("text", "json"):
        ran = mailrules("run", "--config", str(config), "--log-format", fmt)
        assert ran.returncode == 0, ran.stderr
        lines = ran.stderr.splitlines()
        forged = [ln for ln in lines if "FAKE" in ln]
        if fmt == "text":
            assert all(RECORD.match(ln) for ln in lines), ran.stderr
            assert not any(ln.startswith(FAKE_STAMP) for ln in lines)
            # the first run flags and copies; the second finds both done: two action lines each time
            assert len(forged) == 2, ran.stderr
            assert all(f"message-id=<x@y>\\r\\n{FAKE_STAMP} ERROR mailrules: FAKE" in ln for ln in forged)
        else:
            assert len(forged) == 2 and all(ln.startswith("{") and ln.endswith("}") for ln in lines)
    assert len(snapshot(account)["Copies"].messages) == 1

    db = sqlite3.connect(tmp_path / "state.db")
    rows = db.execute("SELECT message_id, detail, destination, error FROM journal").fetchall()
    assert len(rows) == 4  # flag ok, copy ok; flag skipped (already so), copy skipped (journal)
    for row in rows:
        assert all(v is None or not any(c in UNSAFE for c in v) for v in row), row
        assert row[0] == f"<x@y>\\r\\n{FAKE_STAMP} ERROR mailrules: FAKE"
    logged = mailrules("log", "--config", str(config))
    assert logged.returncode == 0 and len([ln for ln in logged.stdout.splitlines() if "FAKE" in ln]) == 4
