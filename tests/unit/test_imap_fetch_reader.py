"""A UID FETCH's answer read straight from the socket (imap/fastfetch.py read_fetch_answer): the same
result and the same imaplib state as imaplib's reading, and bounded against a hostile server (no
hang, no loop, no unbounded read). A scripted server on loopback, a real imaplib underneath."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

import pytest

from mailrules.errors import ImapError
from mailrules.imap import commands, fastfetch
from mailrules.imap.seqset import count_uids
from mailrules.imap.session import ConnectionParams, ImapSession
from tests.scripted import ScriptedLoopback

CAPS = "IMAP4rev1 UIDPLUS"
HEADER = b"Message-ID: <a@b>\r\nSubject: hi\r\n\r\n"


def lit(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


class FetchServer(ScriptedLoopback):
    """Logs the client in; answers each UID FETCH with the next of `answers` (`TAG` replaced by the
    command's tag), then `after` it: "answer" the next command, "close" the connection, or stay
    "silent" (the client's read time-out ends it)."""

    def __init__(self, *answers: bytes, after: str = "answer") -> None:
        self.answers = list(answers)
        self.after = after
        self.commands: list[bytes] = []
        self._over = threading.Event()
        super().__init__(conn_timeout=None)

    def converse(self, conn: socket.socket, reader: BinaryIO) -> None:
        conn.sendall(f"* OK [CAPABILITY {CAPS}] ready\r\n".encode())
        while line := reader.readline():
            self.commands.append(line.strip())
            tag, _, rest = line.partition(b" ")
            word = rest.strip().split(b" ", 1)[0].upper()
            if word == b"LOGIN":
                conn.sendall(tag + b" OK [CAPABILITY " + CAPS.encode() + b"] logged in\r\n")
            elif word == b"LIST":
                conn.sendall(b'* LIST () "/" ""\r\n' + tag + b" OK done\r\n")
            elif word == b"UID" and self.answers:
                conn.sendall(self.answers.pop(0).replace(b"TAG", tag))
                if self.after == "close":
                    return
                if self.after == "silent":
                    break
            else:
                conn.sendall(tag + b" OK done\r\n")
        self._over.wait(10)

    def close(self) -> None:
        self._over.set()
        super().close()

    def session(self) -> ImapSession:
        params = ConnectionParams(
            "127.0.0.1", self.port, "none", "u", "p", allow_insecure=True, timeout=0.5, name="t"
        )
        return ImapSession.connect(params)


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """imaplib reads the answer (as before the reader existed)."""
    monkeypatch.setattr(commands, "reads_fast", lambda imap: False)
    yield


# Literals, an unsolicited FETCH without UID (never merged into UID 1), EXISTS and EXPUNGE between
# the answers, a response code, a message split over two responses, a continuation nobody asked for.
ANSWER = (
    b"* 1 FETCH (FLAGS (\\Seen))\r\n"
    b"* 1 FETCH (UID 1 FLAGS (\\Seen) BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT)] " + lit(HEADER) + b")\r\n"
    b"* 7 EXISTS\r\n"
    b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT)] " + lit(b"") + b" FLAGS ())\r\n"
    b"* 3 EXPUNGE\r\n"
    b"* OK [HIGHESTMODSEQ 42] still here\r\n"
    b"+ stray continuation\r\n"
    b'* 4 FETCH (UID 9 FLAGS (\\Flagged $Work) BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT)] "")\r\n'
    b"* 5 FETCH (UID 12 BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT)] NIL FLAGS (\\Deleted))\r\n"
    b"* 6 FETCH (UID 13 BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT)] " + lit(b"A: 1\r\n\r\n") + b")\r\n"
    b"* 6 FETCH (UID 13 FLAGS (\\Answered))\r\n"
    b'* 8 FETCH (UID 14 FLAGS () BODYSTRUCTURE ("text" "plain" ("charset" "utf-8") NIL NIL '
    b'"7bit" 10 1 NIL NIL NIL NIL) BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT)] ' + lit(HEADER) + b")\r\n"
    b"TAG OK Fetch completed.\r\n"
)
ITEMS = ["FLAGS", "BODY.PEEK[HEADER.FIELDS (Message-ID Subject)]", "BODYSTRUCTURE"]


def _fetch(slow_path: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[int, dict[str, Any]], Any]:
    if slow_path:
        monkeypatch.setattr(commands, "reads_fast", lambda imap: False)
    with FetchServer(ANSWER) as server:
        session = server.session()
        imap = session._client._imap
        assert fastfetch.reads_fast(imap)  # what a real connection gets
        got = session.fetch([1, 2, 9, 12, 13, 14], ITEMS)
        left = {k: list(v) for k, v in imap.untagged_responses.items()}
        session.noop()  # the connection is in step: the next command is answered
        session.logout()
    monkeypatch.undo()
    return got, left


def test_the_reader_gives_what_imaplib_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, fast_left = _fetch(False, monkeypatch)
    slow, slow_left = _fetch(True, monkeypatch)
    assert fast == slow
    assert fast_left == slow_left
    assert fast[1]["BODY.PEEK[HEADER.FIELDS (Message-ID Subject)]"] == HEADER
    assert fast[1]["FLAGS"] == ("\\Seen",)  # not the unsolicited response's, merged or not
    assert fast[13] == {
        "BODY.PEEK[HEADER.FIELDS (Message-ID Subject)]": b"A: 1\r\n\r\n",
        "FLAGS": ("\\Answered",),
    }
    assert fast[12]["BODY.PEEK[HEADER.FIELDS (Message-ID Subject)]"] is None
    assert fast_left["EXISTS"] == [b"7"] and fast_left["EXPUNGE"] == [b"3"]
    assert fast_left["HIGHESTMODSEQ"] == [b"42"]
    assert "FETCH" not in fast_left


def _refused(answer: bytes, *, after: str = "silent") -> tuple[ImapError, list[tuple[str, bool]]]:
    """The FETCH fails as a lost connection, the command hook is told, nothing more is sent."""
    with FetchServer(answer, after=after) as server:
        session = server.session()
        seen: list[tuple[str, bool]] = []
        session.on_command = lambda name, seconds, ok: seen.append((name, ok))
        with pytest.raises(ImapError) as info:
            session.fetch([1], ["FLAGS", "BODY.PEEK[]"])
        assert info.value.kind == "reconnect"
        sent = len(server.commands)
        session.logout()  # the session is dead: no LOGOUT that would wait again
        assert len(server.commands) == sent
    return info.value, seen


def test_a_literal_over_the_bound_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastfetch, "MAX_LITERAL_BYTES", 1000)
    # announced far beyond the bound; the server then sends little and waits
    err, seen = _refused(b"* 1 FETCH (UID 1 BODY[] {4294967295}\r\nabc")
    assert "more than 1000" in str(err)
    assert seen == [("UID FETCH", False)]  # mailrules_imap_command_errors_total{command="UID FETCH"}
    # the same bound for a literal in a response imaplib parses (a non-FETCH one)
    err, _ = _refused(b"* OK {4294967295}\r\nabc")
    assert "more than 1000" in str(err)


def test_a_big_literal_within_the_bound_is_read_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastfetch, "_LITERAL_PIECE", 1000)
    body = bytes(range(256)) * 40  # 10,240 bytes: eleven pieces
    with FetchServer(b"* 1 FETCH (UID 1 BODY[] " + lit(body) + b")\r\nTAG OK done\r\n") as server:
        session = server.session()
        assert session.fetch([1], ["BODY.PEEK[]"]) == {1: {"BODY.PEEK[]": body}}
        session.logout()


@pytest.mark.parametrize(
    ("answer", "after", "why"),
    [
        (b"* 1 FETCH (UID 1 BODY[] {100}\r\nonly this", "close", "EOF inside a literal"),
        (b"* 1 FETCH (UID 1 BODY[] {100}\r\nonly this", "silent", "timed out"),
        (b"* 1 FETCH (UID 1 FLAGS (\\Seen)", "close", "unterminated line"),
        (b"* 1 FETCH (UID 1 BODY[] {3}\r\nabc", "close", "EOF"),
        (b"* 1 FETCH (UID 1 FLAGS ())\r\n", "close", "EOF"),
        (b"* BYE going away\r\n", "close", "going away"),
        (b"hello there\r\n", "silent", "unexpected response"),
        (b"* 1 FETCH (UID 1 FLAGS ())\r\n", "silent", "timed out"),
    ],
)
def test_a_broken_answer_is_a_lost_connection(answer: bytes, after: str, why: str) -> None:
    err, _ = _refused(answer, after=after)
    assert why in str(err)


def test_a_line_over_the_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastfetch, "MAX_LINE_BYTES", 200)
    err, _ = _refused(b"* 1 FETCH (UID 1 FLAGS (" + b"x " * 200 + b"))\r\nTAG OK done\r\n")
    assert "longer than 200" in str(err)
    err, _ = _refused(b"* 1 EXISTS" + b" x" * 200 + b"\r\nTAG OK done\r\n")
    assert "longer than 200" in str(err)


def test_an_endless_answer_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "ANSWER_PARTS_EXTRA", 50)
    # one UID asked: 8 + 50 responses and literals at most; the server never completes
    endless = b"* 1 FETCH (UID 1 FLAGS ())\r\n" * 30 + b"* 9 EXISTS\r\n" * 30
    err, _ = _refused(endless)
    assert "more than 58 responses and literals" in str(err)
    # one response that never ends: literal after literal, each within the bounds
    chain = b"* 1 FETCH (UID 1 BODY[] {1}\r\nx BODY[1] {1}\r\n" + b"x BODY[2] {1}\r\n" * 100
    err, _ = _refused(chain)
    assert "more than 58 responses and literals" in str(err)
    # the same inside a response imaplib parses
    err, _ = _refused(b"* OK {1}\r\nx {1}\r\n" + b"x {1}\r\n" * 100)
    assert "more than 58 responses and literals" in str(err)


def test_a_refused_fetch_is_still_an_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    with FetchServer(b"* 1 FETCH (UID 1 FLAGS ())\r\nTAG NO [SERVERBUG] not today\r\n") as server:
        session = server.session()
        with pytest.raises(ImapError) as info:
            session.fetch([1], ["FLAGS"])
        assert "not today" in str(info.value)
        session.noop()  # in step with the server after a NO
        session.logout()


def test_the_bound_counts_the_uids_asked_without_expanding_them() -> None:
    assert count_uids("1:3,7,10:8") == 7
    assert count_uids("1:4294967295") == 4294967295  # counted, not made into a list
