"""`promtool check metrics` on a live scrape of /metrics after some activity (no IMAP server needed)."""

from __future__ import annotations

import datetime as dt
import subprocess
import urllib.request

from mailrules.daemon.http import MetricsServer
from mailrules.daemon.metrics import Metrics
from mailrules.engine.ports import MailboxReport, RuleReport
from mailrules.state.models import JournalEntry
from tests.needs import require_tool


def _promtool() -> str:
    return require_tool("promtool", "prometheus")


def _activity(m: Metrics) -> None:
    now = dt.datetime.now(dt.UTC)
    for uid, (action, outcome) in enumerate(
        [("move", "ok"), ("mark read", "skipped"), ("delete permanently", "dry-run"), ("forward", "failed")],
        start=1,
    ):
        m.imap_command("work", "UID STORE", 0.01, True)
        m.entry(
            JournalEntry(
                "run",
                "gh",
                "t.rules:1",
                "work",
                "INBOX",
                7,
                uid,
                None,
                action,
                "",
                None,
                None,
                None,
                outcome,  # type: ignore[arg-type]
                None,
                now,
            )
        )
    m.rule_done(RuleReport("gh", "work", "INBOX", candidates=5, matched=4), 0.2)
    m.mailbox_done(MailboxReport("work", "INBOX", 7, examined=5, last_uid=5, skipped_messages=1), 0.3)
    m.imap_command("work", "UID FETCH", 0.03, True)
    m.imap_command("work", "IDLE", 540.0, True)
    m.imap_command("work", "UID MOVE", 0.05, False)
    m.connected("work", 0.4)
    m.reconnect("work")
    m.watcher_up("work", "INBOX", True)
    m.synced("work", "INBOX")
    m.arrival("work", 1.2)
    m.scheduled_run("cleanup", 3.0, "ok")
    m.reload(False)
    m.reload(True)


def test_promtool_accepts_a_live_scrape() -> None:
    promtool = _promtool()
    m = Metrics()
    m.init({"work": ["INBOX", "Lists"], "home": ["INBOX"]}, ["gh", "cleanup"])
    _activity(m)
    server = MetricsServer("127.0.0.1:0", m, lambda: (True, ""))
    server.start()
    try:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as r:
            body = r.read()
    finally:
        server.stop()
    assert b'mailrules_actions_total{action="move",outcome="ok"} 1.0' in body
    done = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )
    report = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert done.returncode == 0, report
