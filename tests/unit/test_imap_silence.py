"""A server that goes silent (issue 15; docs/operations.md, "Silent connections"): every wait of a
session and of IDLE is bounded by the read time-out, and what it raises is a stall, after which the
session is dead (no LOGOUT is sent that would wait again). A scripted server on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import BinaryIO

import pytest

from mailrules.errors import ImapError
from mailrules.imap.idle import Idler, Stalled, is_stall
from mailrules.imap.session import ConnectionParams, ImapSession
from tests.scripted import ScriptedLoopback

CAPS = "IMAP4rev1 IDLE"


class SilentServer(ScriptedLoopback):
    """Logs the client in, then answers according to `idle`: "silent" (no continuation), "done"
    (a continuation, then no answer to DONE), "half-line" (a continuation and the start of a line
    that never ends). NOOP is never answered. Records the commands it received."""

    def __init__(self, idle: str = "done") -> None:
        self.idle = idle
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
            elif word == b"CAPABILITY":
                conn.sendall(f"* CAPABILITY {CAPS}\r\n".encode() + tag + b" OK done\r\n")
            elif word == b"LIST":
                conn.sendall(b'* LIST () "/" ""\r\n' + tag + b" OK done\r\n")
            elif word == b"IDLE" and self.idle != "silent":
                conn.sendall(b"+ idling\r\n")
                if self.idle == "half-line":
                    conn.sendall(b"* 3 EXI")
            elif word in (b"NOOP", b"IDLE", b"DONE"):
                pass  # silence: the socket stays open, nothing comes back
            else:
                conn.sendall(tag + b" OK done\r\n")
        self._over.wait(10)

    def close(self) -> None:
        self._over.set()
        super().close()

    def params(self) -> ConnectionParams:
        return ConnectionParams(
            "127.0.0.1", self.port, "none", "u", "p", allow_insecure=True, timeout=0.5, name="quiet"
        )


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[SilentServer]:
    s = SilentServer(getattr(request, "param", "done"))
    yield s
    s.close()


def _logged_out_quietly(session: ImapSession, server: SilentServer) -> None:
    session.logout()  # returns at once: the session is dead, so no LOGOUT waits for an answer
    assert not any(c.endswith(b"LOGOUT") for c in server.commands), server.commands


def test_an_unanswered_noop_is_a_stall(server: SilentServer) -> None:
    session = ImapSession.connect(server.params())
    with pytest.raises(ImapError) as info:
        session.noop()
    assert info.value.kind == "reconnect"
    assert is_stall(info.value)
    _logged_out_quietly(session, server)


def test_an_unanswered_done_is_a_stall(server: SilentServer) -> None:
    session = ImapSession.connect(server.params())
    idler = Idler(session, timeout=0.5)
    assert idler.start() == []
    assert idler.wait(0.2) == []  # silence within IDLE is no error by itself
    with pytest.raises(Stalled) as info:
        idler.done()
    assert "no answer from the server within 0.5 s" in str(info.value)
    assert any(c == b"DONE" for c in server.commands)
    _logged_out_quietly(session, server)


@pytest.mark.parametrize("server", ["silent"], indirect=True)
def test_an_idle_without_its_continuation_is_a_stall(server: SilentServer) -> None:
    session = ImapSession.connect(server.params())
    with pytest.raises(Stalled):
        Idler(session, timeout=0.5).start()
    _logged_out_quietly(session, server)


@pytest.mark.parametrize("server", ["half-line"], indirect=True)
def test_a_line_that_never_ends_is_a_stall(server: SilentServer) -> None:
    session = ImapSession.connect(server.params())
    idler = Idler(session, timeout=0.5)
    idler.start()
    with pytest.raises(Stalled):
        idler.wait(5.0)
    _logged_out_quietly(session, server)


def test_what_counts_as_a_stall() -> None:
    assert is_stall(Stalled("x: IDLE: no answer"))
    wrapped = RuntimeError("SEARCH failed")
    wrapped.__cause__ = TimeoutError("timed out")
    assert is_stall(wrapped)  # a command's read time-out, as imap/errors.py classifies it
    assert not is_stall(ConnectionResetError("reset"))  # a RST is a loss, not silence
    assert not is_stall(EOFError())
    looped = RuntimeError("a")
    looped.__cause__ = looped
    assert not is_stall(looped)
    assert Stalled("x").kind == "reconnect"
