"""Round trips of a connection's start: no CAPABILITY after a greeting that lists them; after
STARTTLS, CAPABILITY and LOGIN together; after LOGIN, ENABLE, ID and NAMESPACE together.

A scripted server answers none of the three before all three have arrived: a client that waited
for each answer before sending the next command would never get one (and time out).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path
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


class StartTls(ScriptedLoopback):
    """STARTTLS, then answers the CAPABILITY after the handshake only once the next command is in
    (a LOGIN sent with it), unless `hold` is False. `tls_caps`: what it lists over TLS."""

    def __init__(
        self, cert: Path, key: Path, tls_caps: str = "IMAP4rev1 AUTH=PLAIN", hold: bool = True
    ) -> None:
        self.server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_ctx.load_cert_chain(cert, key)
        self.tls_caps = tls_caps
        self.hold = hold
        self.commands: list[bytes] = []
        super().__init__()

    def converse(self, conn: socket.socket, reader: BinaryIO) -> None:
        conn.sendall(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n")
        line = reader.readline()
        self.commands.append(line.strip())
        conn.sendall(line.split(b" ", 1)[0] + b" OK go\r\n")
        tls = self.server_ctx.wrap_socket(conn, server_side=True)
        reader = tls.makefile("rb")
        held: bytes | None = None
        while line := reader.readline():
            self.commands.append(line.strip())
            tag, _, rest = line.partition(b" ")
            word = rest.strip().split(b" ", 1)[0].upper()
            answer = b"* CAPABILITY " + self.tls_caps.encode() + b"\r\n" + tag + b" OK done\r\n"
            if word == b"CAPABILITY" and self.hold:
                held = answer
                continue
            out, held = (held or b""), None
            if word == b"CAPABILITY":
                out += answer
            elif word in (b"LOGIN", b"AUTHENTICATE"):
                if word == b"AUTHENTICATE" and rest.strip().count(b" ") < 2:  # no SASL-IR
                    tls.sendall(b"+ \r\n")
                    reader.readline()
                ok = "LOGINDISABLED" not in self.tls_caps
                out += tag + (b" OK [CAPABILITY IMAP4rev1] in\r\n" if ok else b" NO disabled\r\n")
            elif word == b"LIST":
                out += b'* LIST () "/" ""\r\n' + tag + b" OK done\r\n"
            elif word == b"LOGOUT":
                tls.sendall(out + b"* BYE bye\r\n" + tag + b" OK done\r\n")
                return
            else:
                out += tag + b" BAD unexpected\r\n"
            tls.sendall(out)

    def params(self, cert: Path, password: str = "p") -> ConnectionParams:
        return ConnectionParams(
            "127.0.0.1", self.port, "starttls", "u", password, ca_file=str(cert), timeout=3, name="tls"
        )


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        cwd=d,
        check=True,
        capture_output=True,
    )
    return d / "cert.pem", d / "key.pem"


def test_after_starttls_capability_and_login_go_together(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    with StartTls(cert, key) as server:
        session = ImapSession.connect(server.params(cert))
        assert session.command_count == 4  # STARTTLS, CAPABILITY, LOGIN, LIST (none after the greeting)
        session.logout()
    words = [c.split(b" ", 2)[1] for c in server.commands]
    assert words == [b"STARTTLS", b"CAPABILITY", b"LOGIN", b"LIST", b"LOGOUT"]


def test_logindisabled_over_tls_still_refuses(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    with StartTls(cert, key, tls_caps="IMAP4rev1 LOGINDISABLED") as server, pytest.raises(ImapError) as exc:
        ImapSession.connect(server.params(cert))
    assert "server disabled LOGIN" in str(exc.value) and exc.value.kind == "permanent"


def test_a_password_that_needs_sasl_asks_capability_first(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    with StartTls(cert, key, hold=False) as server:
        session = ImapSession.connect(server.params(cert, password="pässwörd"))
        session.logout()
    words = [c.split(b" ", 2)[1] for c in server.commands if b" " in c]
    assert words[:3] == [b"STARTTLS", b"CAPABILITY", b"AUTHENTICATE"]
