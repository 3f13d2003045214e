"""SMTP credentials with CR/LF cannot inject commands: smtplib sends AUTH as base64 on one line.

A scripted SMTP server on loopback records every line the client sends. (The configuration refuses
such usernames anyway: tests/unit/test_config_hostile.py; this holds for SmtpParams made in code.)
"""

from __future__ import annotations

import base64
import socket
from typing import BinaryIO

import pytest

from mailrules.smtp.sender import SmtpParams, SmtpSender
from tests.scripted import ScriptedLoopback

ORIGINAL = (
    b"From: a@example.org\r\nTo: me@example.com\r\nSubject: hi\r\nMessage-ID: <m1@example.org>\r\n\r\nhi\r\n"
)


class ScriptedSmtp(ScriptedLoopback):
    """Answers EHLO (AUTH PLAIN LOGIN), AUTH, MAIL, RCPT, DATA, QUIT; records each line received."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        super().__init__()

    def converse(self, conn: socket.socket, reader: BinaryIO) -> None:
        conn.sendall(b"220 scripted ESMTP\r\n")
        while line := reader.readline():
            self.lines.append(line)
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                conn.sendall(b"250-scripted\r\n250 AUTH PLAIN LOGIN\r\n")
            elif verb == b"AUTH":
                conn.sendall(b"235 2.7.0 ok\r\n")
            elif verb == b"DATA":
                conn.sendall(b"354 go\r\n")
                while reader.readline() not in (b".\r\n", b""):
                    pass
                conn.sendall(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                conn.sendall(b"250 ok\r\n")
            else:
                conn.sendall(b"500 what\r\n")


@pytest.mark.parametrize(
    ("user", "password"),
    [("u\r\nRCPT TO:<evil@example.net>", "pw"), ("u", "pw\r\nRCPT TO:<evil@example.net>\r\n")],
)
def test_cr_lf_in_smtp_credentials_stay_inside_the_base64_of_auth(user: str, password: str) -> None:
    server = ScriptedSmtp()
    try:
        params = SmtpParams(
            host="127.0.0.1",
            port=server.port,
            from_addr="bot@example.com",
            tls="none",
            username=user,
            password=password,
            allow_insecure=True,
            timeout=10,
        )
        SmtpSender(params).send_redirect(ORIGINAL, "me@example.com", rule="r", idempotency_key="k")
    finally:
        server.close()
    verbs = [line.split(b" ", 1)[0].strip().upper() for line in server.lines]
    assert verbs == [b"EHLO", b"AUTH", b"MAIL", b"RCPT", b"DATA", b"QUIT"]  # one RCPT: ours
    assert b"evil" not in b"".join(line for line in server.lines if not line.startswith(b"AUTH"))
    auth = server.lines[1]
    assert auth.startswith(b"AUTH PLAIN ") and auth.endswith(b"\r\n") and auth.count(b"\r\n") == 1
    assert base64.b64decode(auth.split()[2]) == f"\0{user}\0{password}".encode()
