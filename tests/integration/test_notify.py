"""One NOTIFY connection watches every mailbox (issue 15; docs/operations.md, "Watching"): on Dovecot
50 watched mailboxes use one connection (as Dovecot itself counts them, `doveadm who`) and mail
delivered to any of them is filed; a restart of the server is caught up from STATUS; on Cyrus
(no NOTIFY) and with `notify = "off"` each mailbox gets its IDLE connection. The refusal of NOTIFY
SET is tested on a scripted server (tests/unit/test_imap_notify.py)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from mailrules.imap.session import ImapSession
from tests.integration.cyrus import CyrusServer
from tests.integration.servers import (
    DovecotServer,
    make_message,
    spawn_dovecot,
    start_dovecot,
    stop_dovecot,
    wait_for_port,
)
from tests.integration.test_daemon import Running, counts, wait_until
from tests.integration.test_doctor import doctor, results

pytestmark = pytest.mark.integration

#: A give-up point for conditions that hold within a second or two (never a timed assert).
GENEROUS = 60.0


def sample(exposition: str, name: str, **labels: str) -> float:
    """The value of `name`'s sample whose labels include `labels` (0 when there is none)."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in exposition.splitlines():
        if line.startswith(name + "{") and all(w in line.split("}", 1)[0] for w in want):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def mode_of(d: Running, mode: str) -> float:
    """The daemon's watching connections of `mode` (notify, idle, poll) for its account."""
    return sample(d.get("/metrics")[1], "mailrules_watch_connections", account="t", mode=mode)


def connections(server: DovecotServer, user: str) -> int:
    """The IMAP connections `user` has open, as Dovecot counts them (`doveadm who`)."""
    out = subprocess.run(
        ["doveadm", "-c", str(server.directory / "dovecot.conf"), "who", "-1", user],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in out.splitlines() if line.split()[:2] == [user, "imap"])


def boxes_rule(boxes: list[str]) -> str:
    names = ", ".join(f'"{b}"' for b in boxes)
    return f'rule "boxes" in {names} {{ when subject contains "file me" then move to "Filed" }}\n'


def setup(server: DovecotServer | CyrusServer, user: str, pw: str, boxes: list[str], d: Running) -> None:
    with ImapSession.connect(server.params(user, pw)) as s:
        for b in boxes:
            if b != "INBOX":
                s.create(b)
    (d.rules / "10-main.rules").write_text(boxes_rule(boxes))


def deliver(server: DovecotServer | CyrusServer, user: str, pw: str, boxes: list[str], tag: str) -> None:
    with ImapSession.connect(server.params(user, pw)) as s:
        for b in boxes:
            s.append_many(b, [make_message(f"{tag} {b} file me")])


def test_fifty_watched_mailboxes_use_one_connection(dovecot: DovecotServer, tmp_path: Path) -> None:
    user, pw = dovecot.fresh_user()
    boxes = ["INBOX", *(f"Box {i:02d}" for i in range(49))]
    d = Running(tmp_path, dovecot, user, pw, None)
    setup(dovecot, user, pw, boxes, d)
    d.start()
    try:
        assert mode_of(d, "notify") == 1 and mode_of(d, "idle") == 0 and mode_of(d, "poll") == 0
        wait_until(lambda: connections(dovecot, user) == 1, GENEROUS, "one connection for 50 mailboxes", d)
        deliver(dovecot, user, pw, boxes, "one")
        wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 50, GENEROUS, "every arrival filed", d)
        c = counts(dovecot, user, pw)
        assert all(c[b] == 0 for b in boxes)
        wait_until(lambda: connections(dovecot, user) == 1, GENEROUS, "still one connection", d)
        assert d.metric("mailrules_notify_events_total") >= 1
        assert d.metric("mailrules_notify_fallbacks_total") == 0
        assert "NOTIFY watches 50 mailboxes on one connection" in d.text()
    finally:
        assert d.stop() == 0


def test_a_server_restart_is_caught_up_from_status(tmp_path: Path) -> None:
    server = start_dovecot()
    try:
        user, pw = server.fresh_user()
        boxes = ["INBOX", "Lists", "Work", "Quiet"]
        d = Running(tmp_path, server, user, pw, None)
        setup(server, user, pw, boxes, d)
        d.start()
        try:
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(10)
            wait_until(lambda: d.metric("mailrules_watcher_up") == 0, 20, "the watcher to notice", d)
            server.proc = spawn_dovecot(server.directory)
            wait_for_port(server.imap_port, server.proc, server.directory / "dovecot.log")
            deliver(server, user, pw, ["Lists", "Work"], "outage")  # while the daemon backs off
            wait_until(lambda: counts(server, user, pw).get("Filed") == 2, 90, "catch-up after the outage", d)
            # Only the two mailboxes whose STATUS changed were looked at (the first look of all
            # four, at start, found each unknown).
            assert "NOTIFY watches 4 mailboxes on one connection; 2 changed since the last look" in d.text()
            assert d.metric("mailrules_reconnects_total") >= 1
            deliver(server, user, pw, ["Quiet"], "after")  # and the new connection listens
            wait_until(lambda: counts(server, user, pw).get("Filed") == 3, GENEROUS, "an arrival after", d)
        finally:
            assert d.stop() == 0
    finally:
        stop_dovecot(server)


@pytest.mark.parametrize("where", ["dovecot-off", "cyrus"])
def test_idle_per_mailbox_without_notify(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Cyrus has no NOTIFY: the account falls back to IDLE per mailbox, says why, files all the
    same; `notify = "off"` does that on Dovecot without trying."""
    server: DovecotServer | CyrusServer = request.getfixturevalue(where.split("-")[0])
    user, pw = server.fresh_user()
    boxes = ["INBOX", "Lists", "Work"]
    d = Running(tmp_path, server, user, pw, None, "off" if where.endswith("-off") else "auto")
    setup(server, user, pw, boxes, d)
    d.start()
    try:
        wait_until(lambda: mode_of(d, "idle") == 3, GENEROUS, "an IDLE watcher per mailbox", d)
        assert mode_of(d, "notify") == 0
        deliver(server, user, pw, boxes, "idle")
        wait_until(lambda: counts(server, user, pw).get("Filed") == 3, GENEROUS, "every arrival filed", d)
        if isinstance(server, CyrusServer):
            assert "NOTIFY not used (the server does not advertise NOTIFY" in d.text()
            assert d.metric("mailrules_notify_fallbacks_total") == 1
        else:
            wait_until(lambda: connections(server, user) == 3, GENEROUS, "three IDLE connections", d)
            assert "NOTIFY" not in d.text()
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("where", ["dovecot", "dovecot-off", "cyrus"])
def test_doctor_says_how_the_account_is_watched(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server: DovecotServer | CyrusServer = request.getfixturevalue(where.split("-")[0])
    user, pw = server.fresh_user()
    port = server.port if isinstance(server, CyrusServer) else server.imap_port
    body = (
        f'port = {port}\ntls = "starttls"\nusername = "{user}"\npassword = "{pw}"\n'
        f'ca_file = "{server.ca_file}"\nwatch = ["Trash"]\n' + ('notify = "off"\n' if "off" in where else "")
    )
    _, data, text = doctor(tmp_path, body, rules=boxes_rule(["INBOX", "Lists"]))
    (watching,) = results(data, "watching")
    if where == "dovecot":
        assert watching == "NOTIFY: one connection watches 3 mailboxes"
    elif where == "dovecot-off":
        assert watching == 'IDLE per mailbox (notify = "off"): 3 IDLE connections'
    else:
        assert watching == (
            "IDLE per mailbox: 3 IDLE connections; NOTIFY not used: the server does not advertise "
            "NOTIFY (RFC 5465)"
        )
    assert "watching" in text


def test_a_flag_change_in_another_mailbox_runs_its_flag_rules(dovecot: DovecotServer, tmp_path: Path) -> None:
    """FlagChange of a mailbox that is not the selected one comes as a STATUS (RFC 5465 §5.3): the
    NOTIFY watcher looks at that mailbox, and its `on flag change` rules run (daemon/flagwatch.py)."""
    user, pw = dovecot.fresh_user()
    d = Running(tmp_path, dovecot, user, pw, None)
    setup(dovecot, user, pw, ["INBOX", "Lists"], d)
    (d.rules / "10-main.rules").write_text(
        'rule "arrivals" { when subject contains "file me" then move to "Filed" }\n'
        'rule "follow-up" on flag change in "Lists" { when flagged then copy to "Follow-up" }\n'
    )
    deliver(dovecot, user, pw, ["Lists"], "flag")
    d.start()
    try:
        wait_until(lambda: "Lists: flag changes from MODSEQ" in d.text(), GENEROUS, "the first look", d)
        deliver(dovecot, user, pw, ["INBOX"], "arrival")  # INBOX is the selected one from now on
        wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 1, GENEROUS, "the arrival", d)
        with ImapSession.connect(dovecot.params(user, pw)) as s:  # another client flags it
            s.select("Lists")
            s.store_flags(s.search([b"ALL"]), ["\\Flagged"], True)
        wait_until(lambda: counts(dovecot, user, pw).get("Follow-up") == 1, GENEROUS, "the copy", d)
        assert mode_of(d, "notify") == 1
        assert d.metric("mailrules_notify_events_total") >= 2
    finally:
        assert d.stop() == 0


def test_past_a_hundred_names_personal_is_asked(dovecot: DovecotServer, tmp_path: Path) -> None:
    """Dovecot 2.3 refuses more than 100 names in NOTIFY: all personal mailboxes are asked instead,
    and the events of those that are not watched are ignored."""
    user, pw = dovecot.fresh_user()
    boxes = ["INBOX", *(f"Many {i:03d}" for i in range(119))]
    d = Running(tmp_path, dovecot, user, pw, None)
    setup(dovecot, user, pw, [*boxes, "Unwatched"], d)
    (d.rules / "10-main.rules").write_text(boxes_rule(boxes))
    d.start()
    try:
        assert "NOTIFY watches 120 mailboxes on one connection (all personal mailboxes asked" in d.text()
        deliver(dovecot, user, pw, ["Unwatched", "Many 118", "Many 007"], "many")
        wait_until(lambda: counts(dovecot, user, pw).get("Filed") == 2, GENEROUS, "both arrivals filed", d)
        assert counts(dovecot, user, pw)["Unwatched"] == 1
        assert mode_of(d, "notify") == 1 and d.metric("mailrules_notify_fallbacks_total") == 0
    finally:
        assert d.stop() == 0
