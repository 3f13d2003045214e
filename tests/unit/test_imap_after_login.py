"""Round trips of a connection's start: no CAPABILITY after a greeting that lists them, and after
LOGIN, ENABLE, ID and NAMESPACE go out together and are read in one round trip.

A scripted server answers none of the three before all three have arrived: a client that waited
for each answer before sending the next command would never get one (and time out).
"""

from __future__ import annotations

import socket
from typing import BinaryIO

import pytest

from mailrules.errors import ImapError
from mailrules.imap.session import ConnectionParams, ImapSession
from tests.scripted import ScriptedLoopback

CAPS = "IMAP4rev1 ENABLE CONDSTORE QRESYNC ID NAMESPACE"


class AfterLogin(ScriptedLoopback):
    """Greets, answers CAPABILITY and LOGIN at once; ENABLE, ID and NAMESPACE only once the
    three are in (each with `answers[word]`), then LIST and LOGOUT. Records the commands."""

    def __init__(
        self,
        caps: str = CAPS,
        namespace: bytes = b'(("" "/")) NIL NIL',
        greet: bool = True,
        answers: dict[str, str] | None = None,
    ) -> None:
        self.caps = caps
        self.greet = greet
        self.namespace = namespace
        self.answers = {"ENABLE": "OK", "ID": "OK", "NAMESPACE": "OK", **(answers or {})}
        self.commands: list[bytes] = []
        super().__init__()

    def converse(self, conn: socket.socket, reader: BinaryIO) -> None:
        conn.sendall(f"* OK [CAPABILITY {self.caps}] ready\r\n".encode() if self.greet else b"* OK ready\r\n")
        held: dict[bytes, bytes] = {}  # word -> tag, the commands not answered yet
        waiting = {w.encode() for w in ("ENABLE", "ID", "NAMESPACE") if w in self.caps.split()}
        while line := reader.readline():
            self.commands.append(line.strip())
            tag, _, rest = line.partition(b" ")
            word = rest.strip().split(b" ", 1)[0].upper()
            if word == b"CAPABILITY":
                conn.sendall(f"* CAPABILITY {self.caps}\r\n".encode() + tag + b" OK done\r\n")
            elif word == b"LOGIN":
                conn.sendall(tag + f" OK [CAPABILITY {self.caps}] in\r\n".encode())
            elif word in waiting:
                held[word] = tag
                if set(held) == waiting:
                    conn.sendall(b"".join(self._answer(w, t) for w, t in held.items()))
            elif word == b"LIST":
                conn.sendall(b'* LIST () "/" ""\r\n' + tag + b" OK done\r\n")
            elif word == b"LOGOUT":
                conn.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                return
            else:
                conn.sendall(tag + b" BAD unexpected\r\n")

    def _answer(self, word: bytes, tag: bytes) -> bytes:
        status = self.answers[word.decode()]
        untagged = {
            b"ENABLE": b"* ENABLED CONDSTORE QRESYNC\r\n",
            b"ID": b'* ID ("name" "scripted")\r\n',
            b"NAMESPACE": b"* NAMESPACE " + self.namespace + b"\r\n",
        }[word]
        return (untagged if status == "OK" else b"") + tag + b" " + status.encode() + b" done\r\n"

    def params(self) -> ConnectionParams:
        return ConnectionParams(
            "127.0.0.1", self.port, "none", "u", "p", allow_insecure=True, timeout=3, name="scripted"
        )


def test_the_three_go_out_together_and_their_answers_are_read() -> None:
    with AfterLogin(namespace=b'(("INBOX." ".")) (("Other Users." ".")) NIL') as server:
        session = ImapSession.connect(server.params())
        try:
            assert session.enabled == {"CONDSTORE", "QRESYNC"}
            assert (session.namespaces.personal, session.separator) == ("INBOX.", ".")
            assert session.namespaces.source == "NAMESPACE"
            assert session.command_count == 4  # LOGIN, ENABLE, ID, NAMESPACE
        finally:
            session.logout()
    words = [c.split(b" ", 2)[1] for c in server.commands]
    assert words == [b"LOGIN", b"ENABLE", b"ID", b"NAMESPACE", b"LOGOUT"]  # no CAPABILITY: greeted with
    assert server.commands[1].endswith(b"ENABLE CONDSTORE QRESYNC")
    assert server.commands[2].endswith(b'ID ("name" "mailrules" "version" "' + _version() + b'")')


def test_a_greeting_without_capabilities_is_followed_by_capability() -> None:
    with AfterLogin(greet=False) as server:
        session = ImapSession.connect(server.params())
        assert session.command_count == 5  # CAPABILITY, LOGIN, ENABLE, ID, NAMESPACE
        session.logout()
    assert [c.split(b" ", 2)[1] for c in server.commands][:2] == [b"CAPABILITY", b"LOGIN"]
    assert session.enabled == {"CONDSTORE", "QRESYNC"}


def test_a_prefix_in_modified_utf7_is_decoded() -> None:
    with AfterLogin(namespace=b'(("Bo&AO4-te." ".")) NIL NIL') as server:
        session = ImapSession.connect(server.params())
        session.logout()
    assert session.namespaces.personal == "Boîte."


def test_a_refused_id_is_no_failure() -> None:
    with AfterLogin(answers={"ID": "NO not today"}) as server:
        session = ImapSession.connect(server.params())
        session.logout()
    assert session.enabled == {"CONDSTORE", "QRESYNC"} and session.separator == "/"


@pytest.mark.parametrize("refused", ["ENABLE", "NAMESPACE"])
def test_a_refused_enable_or_namespace_fails_the_connection(refused: str) -> None:
    with AfterLogin(answers={refused: "BAD no such thing"}) as server, pytest.raises(ImapError) as exc:
        ImapSession.connect(server.params())
    assert f"{refused} failed" in str(exc.value)


def test_without_namespace_the_root_listing_gives_the_separator() -> None:
    with AfterLogin(caps="IMAP4rev1 ENABLE CONDSTORE ID") as server:
        session = ImapSession.connect(server.params())
        session.logout()
    assert session.namespaces.source == "LIST" and session.separator == "/"
    assert session.enabled == {"CONDSTORE", "QRESYNC"}  # what the server said it enabled
    assert [c.split(b" ", 2)[1] for c in server.commands][1:] == [b"ENABLE", b"ID", b"LIST", b"LOGOUT"]


def _version() -> bytes:
    from mailrules import __version__

    return __version__.encode()
