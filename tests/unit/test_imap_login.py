"""LOGIN on the wire: username and password quoted or as literals, CR/LF/NUL never sent.

A scripted IMAP server on loopback records every byte the client sends.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import BinaryIO

import pytest

from mailrules.compile.serialize import Lit
from mailrules.errors import ImapError
from mailrules.imap.core import UnsendableValue, login_arg
from mailrules.imap.session import ConnectionParams, ImapSession
from tests.scripted import ScriptedLoopback

_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


class ScriptedServer(ScriptedLoopback):
    """Greets with `greeting_caps`; answers CAPABILITY, LOGIN (`login_answer`), LIST, LOGOUT.

    Records every byte it receives.
    """

    def __init__(self, greeting_caps: str = "IMAP4rev1", login_answer: str = "OK") -> None:
        self.greeting_caps = greeting_caps
        self.login_answer = login_answer
        self.received = bytearray()
        super().__init__()

    def converse(self, conn: socket.socket, reader: BinaryIO) -> None:
        conn.sendall(f"* OK [CAPABILITY {self.greeting_caps}] ready\r\n".encode())
        while True:
            line = reader.readline()
            if not line:
                return
            self.received += line
            tag, _, rest = line.partition(b" ")
            while m := _LITERAL.search(line):  # a synchronizing literal: ask for it, read it
                conn.sendall(b"+ go on\r\n")
                data = reader.read(int(m.group(1)))
                line = reader.readline()
                self.received += data + line
            word = rest.strip().split(b" ", 1)[0].upper()
            if word == b"LOGIN":
                conn.sendall(tag + b" " + self.login_answer.encode() + b"\r\n")
            elif word == b"CAPABILITY":  # imaplib asks, whatever the greeting said
                conn.sendall(f"* CAPABILITY {self.greeting_caps}\r\n".encode() + tag + b" OK done\r\n")
            elif word == b"LIST":
                conn.sendall(b'* LIST () "/" ""\r\n' + tag + b" OK done\r\n")
            elif word == b"LOGOUT":
                conn.sendall(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                return
            else:
                conn.sendall(tag + b" BAD unexpected\r\n")

    def params(self, username: str, password: str) -> ConnectionParams:
        return ConnectionParams(
            "127.0.0.1",
            self.port,
            "none",
            username,
            password,
            allow_insecure=True,
            timeout=10,
            name="scripted",
        )


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    s = ScriptedServer(login_answer="OK [CAPABILITY IMAP4rev1] logged in")
    yield s
    s.close()


def login_line(server: ScriptedServer) -> bytes:
    return next(line for line in bytes(server.received).split(b"\r\n") if b" LOGIN " in line)


def test_spaces_quotes_and_backslashes_go_quoted(server: ScriptedServer) -> None:
    with ImapSession.connect(server.params('we"ird \\ user', 'p a"s\\s')) as s:
        assert s.separator == "/"
    assert login_line(server).split(b" ", 1)[1] == b'LOGIN "we\\"ird \\\\ user" "p a\\"s\\\\s"'


def test_a_plain_username_is_quoted_too(server: ScriptedServer) -> None:
    with ImapSession.connect(server.params("alice", "secret")):
        pass
    assert login_line(server).split(b" ", 1)[1] == b'LOGIN "alice" "secret"'


def test_8bit_and_tabs_go_as_literals() -> None:
    # No AUTH=PLAIN in the greeting, so a non-ASCII password goes through LOGIN.
    server = ScriptedServer(login_answer="OK logged in")
    try:
        with ImapSession.connect(server.params("jürgen", "pass\tword")):
            pass
    finally:
        server.close()
    sent = bytes(server.received)
    user, password = "jürgen".encode(), b"pass\tword"
    assert b"LOGIN {%d}\r\n%s {%d}\r\n%s\r\n" % (len(user), user, len(password), password) in sent


@pytest.mark.parametrize("field", ["username", "password"])
@pytest.mark.parametrize("bad", ["\r\nX1 DELETE INBOX", "\nX1 DELETE INBOX", "nul\x00"])
def test_cr_lf_nul_are_refused_before_anything_is_sent(field: str, bad: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # connect() returns before the refusal: a connection would be queued
    port = listener.getsockname()[1]
    user, password = ("u" + bad, "pw") if field == "username" else ("u", "pw" + bad)
    try:
        with pytest.raises(ImapError) as info:
            ImapSession.connect(
                ConnectionParams("127.0.0.1", port, "none", user, password, allow_insecure=True)
            )  # no name: not the username either
        with pytest.raises(TimeoutError):
            listener.accept()  # not even a connection was made
    finally:
        listener.close()
    assert info.value.kind == "permanent"
    assert str(info.value) == f"account: the {field} contains CR, LF or NUL: not sent"
    assert "DELETE" not in str(info.value) and "nul" not in str(info.value)


def test_a_refused_login_is_auth_and_never_shows_the_password() -> None:
    with (
        ScriptedServer(login_answer="NO [AUTHENTICATIONFAILED] Authentication failed.") as server,
        pytest.raises(ImapError) as info,
    ):
        ImapSession.connect(server.params("alice", "hunter2"))
    assert info.value.kind == "auth"
    assert info.value.code == "AUTHENTICATIONFAILED"
    assert "login failed" in str(info.value) and "hunter2" not in str(info.value)


def test_a_login_without_a_code_is_still_auth() -> None:
    with ScriptedServer(login_answer="NO go away") as server, pytest.raises(ImapError) as info:
        ImapSession.connect(server.params("alice", "hunter2"))
    assert info.value.kind == "auth"


def test_login_arg() -> None:
    assert login_arg("a b") == b'"a b"'
    assert login_arg('q"\\') == b'"q\\"\\\\"'
    assert login_arg("") == b'""'
    assert login_arg("é") == Lit("é".encode())
    assert login_arg("\x7f") == Lit(b"\x7f")
    for bad in ("a\rb", "a\nb", "a\x00b"):
        with pytest.raises(UnsendableValue) as info:
            login_arg(bad)
        assert bad not in str(info.value)
