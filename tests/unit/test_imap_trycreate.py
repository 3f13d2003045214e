"""A missing destination (TRYCREATE, or a plain NO that LIST confirms): create, retry once, no error."""

from __future__ import annotations

import time

import pytest

from mailrules.errors import ImapError
from mailrules.imap import commands
from mailrules.imap.names import Namespaces, UnportableName
from mailrules.imap.session import ImapSession
from tests.unit.test_imap_writer import make

CYRUS = Namespaces.from_response([("INBOX.", ".")], ([("user.", ".")], [("", ".")]))


class Server:
    """A scripted Cyrus: MOVE/COPY into a mailbox that does not exist answers `missing`."""

    def __init__(self, missing: bytes = b"NO Mailbox does not exist", refused: bytes = b"") -> None:
        self.missing = missing
        self.boxes = {b"INBOX", refused}
        self.refused = refused  # exists, and every MOVE/COPY into it answers `missing`
        self.seen: list[bytes] = []

    def __call__(self, tag: bytes, cmd: bytes) -> list[bytes]:
        self.seen.append(cmd)
        word, _, rest = cmd.partition(b" ")
        if word == b"CREATE":
            self.boxes.add(rest.strip(b'"'))
        elif word == b"LIST":
            name = rest.split(b" ", 1)[1].strip(b'"')
            if name in self.boxes:
                return [b'* LIST (\\HasNoChildren) "." "' + name + b'"', tag + b" OK done"]
        elif word == b"UID" and rest.split(b" ")[0] in (b"MOVE", b"COPY"):
            dest = rest.rsplit(b" ", 1)[1].strip(b'"')
            if dest not in self.boxes or dest == self.refused:
                return [tag + b" " + self.missing]
        return [tag + b" OK done"]


def session(server: Server) -> tuple[ImapSession, list[tuple[str, bool]]]:
    s, _ = make(server, "IMAP4rev1 UIDPLUS MOVE")
    s.names = CYRUS
    calls: list[tuple[str, bool]] = []
    s.on_command = lambda name, seconds, ok: calls.append((name, ok))
    return s, calls


def test_plain_no_for_a_missing_mailbox_is_checked_created_and_retried() -> None:
    server = Server()
    s, calls = session(server)
    s.move([1], "Lists/python", create=True)
    assert server.seen == [
        b'UID MOVE 1 "INBOX.Lists.python"',
        b'LIST "" "INBOX.Lists.python"',
        b'CREATE "INBOX.Lists.python"',
        b'UID MOVE 1 "INBOX.Lists.python"',
    ]
    # The first NO was an answer acted on, not an error (mailrules_imap_command_errors_total).
    assert calls == [("LIST", True), ("UID MOVE", True), ("CREATE", True), ("UID MOVE", True)]


def test_engine_pattern_create_after_trycreate_asks_the_server_once() -> None:
    # The engine calls without `create`, takes a creation from its budget, then calls with it:
    # the second call creates first instead of being refused again.
    server = Server(missing=b"NO [TRYCREATE] Mailbox does not exist")
    s, calls = session(server)
    with pytest.raises(ImapError) as info:
        s.copy([1, 2], "Trash")
    assert info.value.code == "TRYCREATE"
    s.copy([1, 2], "Trash", create=True)
    copy = b'UID COPY 1:2 "INBOX.Trash"'
    assert server.seen == [copy, b'CREATE "INBOX.Trash"', copy]
    assert all(ok for _, ok in calls)


def test_plain_no_for_a_mailbox_that_exists_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    server = Server(missing=b"NO Permission denied", refused=b"INBOX.Shared")
    s, calls = session(server)
    with pytest.raises(ImapError, match="Permission denied") as info:
        s.move([1], "Shared", create=True)
    assert info.value.code is None
    # Asked once more after a pause (a mailbox being created can be listed first), then it stands.
    move = b'UID MOVE 1 "INBOX.Shared"'
    assert server.seen == [move, b'LIST "" "INBOX.Shared"', move]
    assert pauses == [commands.LISTED_PAUSE]
    assert calls == [("LIST", True), ("UID MOVE", False), ("UID MOVE", False)]


def test_a_no_with_another_code_is_not_looked_up() -> None:
    server = Server(missing=b"NO [OVERQUOTA] Over quota")
    s, calls = session(server)
    with pytest.raises(ImapError, match="OVERQUOTA"):
        s.move([1], "Archive", create=True)
    assert server.seen == [b'UID MOVE 1 "INBOX.Archive"']
    assert calls == [("UID MOVE", False)]


def test_names_are_mapped_once_and_refused_before_sending() -> None:
    server = Server()
    s, _ = session(server)
    with pytest.raises(UnportableName, match="separates levels"):
        s.move([1], "Projects/v1.2", create=True)
    with pytest.raises(UnportableName):
        s.append("a//b", b"x")
    assert server.seen == []
    s.append("INBOX.Drafts", b"Subject: x\r\n\r\n", create=True)  # the server's own form: as is
    assert server.seen[0].startswith(b'APPEND "INBOX.Drafts"')


class Racing(Server):
    """Another session is creating the mailbox at this moment: LIST shows it and CREATE says it
    exists, but it is reserved, not ready, for `busy` more transfers (what Cyrus answered)."""

    def __init__(self, busy: int) -> None:
        super().__init__()
        self.busy = busy

    def __call__(self, tag: bytes, cmd: bytes) -> list[bytes]:
        word, _, rest = cmd.partition(b" ")
        if word == b"CREATE":
            self.seen.append(cmd)
            self.boxes.add(rest.strip(b'"'))
            self.refused = rest.strip(b'"')  # every transfer into it is refused while busy
            return [tag + b" NO [ALREADYEXISTS] Mailbox already exists"]
        if word == b"UID" and self.refused and rest.rsplit(b" ", 1)[1].strip(b'"') == self.refused:
            if self.busy == 0:
                self.seen.append(cmd)
                return [tag + b" OK done"]
            self.busy -= 1
        return super().__call__(tag, cmd)


def test_a_mailbox_another_session_is_creating_is_asked_again_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)  # the pauses are recorded, not waited
    server = Racing(busy=2)  # two refusals after the CREATE, then ready
    s, calls = session(server)
    s.move([1], "Filed", create=True)
    move = b'UID MOVE 1 "INBOX.Filed"'
    assert [c for c in server.seen if not c.startswith(b"LIST")] == [
        move,
        b'CREATE "INBOX.Filed"',
        move,
        move,
        move,
    ]
    assert pauses == list(commands.CREATE_SETTLE_SECONDS[:2])
    assert [ok for name, ok in calls if name == "UID MOVE"] == [True, True, True, True]

    pauses.clear()
    server = Racing(busy=10)  # never ready: the NO stands after the bounded waits
    s, calls = session(server)
    with pytest.raises(ImapError, match="does not exist"):
        s.move([1], "Filed", create=True)
    assert pauses == list(commands.CREATE_SETTLE_SECONDS)
    assert [c for c in server.seen if c.startswith(b"UID MOVE")] == [move] * (
        len(commands.CREATE_SETTLE_SECONDS) + 2
    )
    assert calls[-1] == ("UID MOVE", False)  # the last refusal is an error
