"""Log lines and journal rows cannot be forged by a message: escaping, formatters, the engine's rows."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from mailrules.accounts import format_entry, log_entry
from mailrules.compile.dialect import Dialect
from mailrules.dsl.parser import parse_text
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, RunOptions
from mailrules.logs import UNSAFE, JsonFormatter, TextFormatter, one_record, printable
from mailrules.state.store import StateStore
from tests.fakes import FakeServer, FakeStore

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
#: A record's first line: `2025-06-01 12:00:00,123 INFO mailrules.run: ...`
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")

#: RFC 2047 encoded-words decode to anything: here CR LF and a fake record after them.
FORGED = (
    b"From: a@example.com\r\n"
    b"To: me@example.com\r\n"
    b"Subject: =?utf-8?q?invoice=0D=0A2025-06-01_12:00:00,000_INFO_mailrules.run:_fake?=\r\n"
    b"Message-ID: =?utf-8?q?=3Cx=40y=3E=0D=0A2025-06-01_12:00:00,000_ERROR_mailrules:_FAKE?=\r\n"
    b"Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n"
    b"\r\nbody\r\n"
)


def test_printable_escapes_every_unsafe_character_and_nothing_else() -> None:
    assert printable("<x@y>\r\nFAKE") == "<x@y>\\r\\nFAKE"
    assert printable("a\tb\x00c\x1b[31m\x7f\x85") == "a\\tb\\x00c\\x1b[31m\\x7f\\x85"
    assert printable("line\u2028sep\u2029para") == "line\\u2028sep\\u2029para"
    assert printable("evil\u202egnp.exe\u2066") == "evil\\u202egnp.exe\\u2066"
    for text in ("<CAF+abc@mail.gmail.com>", "Ünïcödé ✓ 日本", "back\\slash", "non\u00a0breaking", ""):
        assert printable(text) == text
    assert printable(None) is None
    every = "".join(sorted(UNSAFE))
    once = printable(every)
    assert once.isascii() and once.isprintable()
    assert printable(once) == once  # idempotent: rows escaped when written are shown unchanged


def test_one_record_indents_continuation_lines_and_escapes_the_rest() -> None:
    assert one_record("plain") == "plain"
    assert one_record("first\r\nsecond\x1b[2K") == "first\\r\n    second\\x1b[2K"
    assert one_record("a\u2028b") == "a\\u2028b"


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom\r\n2025-06-01 12:00:00,000 INFO x: forged")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("mailrules.t", logging.ERROR, __file__, 1, msg, args, info)


def test_text_formatter_keeps_one_record_one_line_start() -> None:
    text = TextFormatter().format(_record("failed: %s", "x\r\n2025-06-01 12:00:00,000 INFO y: z", exc=True))
    lines = text.split("\n")
    assert RECORD.match(lines[0])
    assert len(lines) > 3  # the traceback is kept, readable
    assert all(line.startswith("    ") for line in lines[1:]), lines
    assert "\r" not in text


def test_json_formatter_escapes_what_json_leaves_raw() -> None:
    record = _record("m %s", "a\u2028b\x85c\u202ed\x7f")
    record.message_id = "<x@y>\u2029z"
    out = JsonFormatter().format(record)
    assert not any(c in UNSAFE for c in out)
    back = json.loads(out)
    assert back["message"] == "m a\u2028b\x85c\u202ed\x7f"  # the same characters, read back
    assert back["message_id"] == "<x@y>\u2029z"


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """The `mailrules.run` lines (per action at DEBUG, per rule at INFO), as text and as JSON."""
    text, js = io.StringIO(), io.StringIO()
    handlers = [logging.StreamHandler(text), logging.StreamHandler(js)]
    handlers[0].setFormatter(TextFormatter())
    handlers[1].setFormatter(JsonFormatter())
    logger = logging.getLogger("mailrules.run")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    for h in handlers:
        logger.addHandler(h)
    try:
        yield text, js
    finally:
        for h in handlers:
            logger.removeHandler(h)
        logger.setLevel(level)


def test_a_forged_message_id_gives_one_line_per_action_and_clean_journal_rows(
    captured: tuple[io.StringIO, io.StringIO],
) -> None:
    server = FakeServer()
    server.append("INBOX", FORGED)
    rule = 'rule "r" { when subject contains "invoice" then flag, copy to "Copies" }'
    rf, diags = parse_text(rule, "t.rules")
    assert rf is not None and not diags
    state = StateStore.open(":memory:")
    run_id = state.begin_run("run", False)
    store = FakeStore(server, Dialect.named("dovecot"), NOW)
    report = Engine(RunOptions(NOW, dt.UTC, run_id), journal=state, on_entry=log_entry).process(
        store, AccountContext("a"), "INBOX", rf.rules
    )
    assert report.rules[0].outcomes == {"flag ok": 1, "copy ok": 1}

    text_log = captured[0].getvalue()
    lines = text_log.splitlines()
    assert len(lines) == 3, text_log  # one per action (DEBUG), one for the rule (INFO): nothing forged
    assert all(RECORD.match(line) for line in lines)
    actions = [ln for ln in lines if " DEBUG mailrules.run: " in ln]
    assert len(actions) == 2, text_log
    assert all("message-id=<x@y>\\r\\n2025-06-01 12:00:00,000 ERROR mailrules: FAKE:" in ln for ln in actions)
    assert lines[-1].endswith(
        ' INFO mailrules.run: rule "r" account=a mailbox="INBOX": matched 1: flag ok 1, copy ok 1'
    )
    json_lines = [json.loads(ln) for ln in captured[1].getvalue().splitlines()]
    assert len(json_lines) == 3
    assert {j["message_id"] for j in json_lines if j["level"] == "debug"} == {
        "<x@y>\\r\\n2025-06-01 12:00:00,000 ERROR mailrules: FAKE"
    }
    assert json_lines[-1]["matched"] == 1 and json_lines[-1]["level"] == "info"

    rows = state.run_entries(run_id)
    assert len(rows) == 2
    for row in rows:
        for value in (row.message_id, row.detail, row.destination, row.error, row.rule, row.mailbox):
            assert value is None or not any(c in UNSAFE for c in value), row
    # what `mailrules log` prints of them is one line each too
    assert all("\n" not in format_entry(r) and "\r" not in format_entry(r) for r in rows)
    # and `--message-id` finds the row by its escaped form
    assert len(state.find(message_id=rows[0].message_id)) == 2
    state.close()


def test_rows_written_before_the_fix_are_escaped_when_shown() -> None:
    from tests.unit.test_state_store import entry

    old = entry("r1", message_id="<a@b>\r\nFAKE", error="x\ny", destination="D\u2028E")
    shown = format_entry(old)
    assert "\n" not in shown and "\r" not in shown and "\u2028" not in shown
    assert "message-id=<a@b>\\r\\nFAKE" in shown and '"D\\u2028E"' in shown and "(x\\ny)" in shown


@pytest.mark.parametrize(
    ("outcome", "why", "level"),
    [
        ("ok", None, logging.DEBUG),
        ("skipped", "already so", logging.DEBUG),
        ("skipped", "already copied (journal)", logging.DEBUG),
        ("failed", "NO [TRYCREATE] no such mailbox", logging.WARNING),
        ("dry-run", None, logging.INFO),
        ("skipped", "destination is the source mailbox", logging.INFO),
        ("skipped", "already sent (journal)", logging.INFO),
        ("skipped", "automatic mail (Auto-Submitted)", logging.INFO),
    ],
)
def test_action_lines_are_debug_unless_a_reader_must_see_them(
    captured: tuple[io.StringIO, io.StringIO], outcome: str, why: str | None, level: int
) -> None:
    """House style 10: done (or already so) per message at DEBUG, beside the engine's INFO line per
    rule; a dry run, a held-back send and a move into the mailbox read at INFO; a failure at WARNING."""
    from tests.unit.test_state_store import entry

    log_entry(entry("r1", outcome=outcome, error=why))
    (line,) = captured[0].getvalue().splitlines()
    assert f" {logging.getLevelName(level)} mailrules.run: " in line
    assert 'rule "lists" account=work mailbox="INBOX" uid=100' in line


def test_action_lines_are_not_built_when_debug_is_off(captured: tuple[io.StringIO, io.StringIO]) -> None:
    logging.getLogger("mailrules.run").setLevel(logging.INFO)  # the fixture puts it back
    from tests.unit.test_state_store import entry

    log_entry(entry("r1"))
    log_entry(entry("r1", outcome="dry-run"))
    (line,) = captured[0].getvalue().splitlines()
    assert line.endswith('move to "Lists": dry-run')
