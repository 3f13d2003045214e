"""A test SMTP server (aiosmtpd on loopback) that takes AUTH XOAUTH2 with the test authorization
server's JWTs, as Google's and Microsoft's submission servers take theirs, error leg included:
a refused token gets `334 base64({"status":"401",...})`, the client's empty line, then 535."""

from __future__ import annotations

import base64
import binascii
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

from tests.oauth_server import decode_jwt

ERROR_CHALLENGE = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.example/"})


@dataclass
class Received:
    user: str | None
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class OAuthSink:
    """Accepts mail after AUTH XOAUTH2 with a token `key` signed for the user it names, not expired.
    Records `logins` (user, accepted) and `error_answers` (what the client sent after the error
    challenge: b"" is the right answer)."""

    key: bytes
    messages: list[Received] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)
    error_answers: list[bytes] = field(default_factory=list)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) > 1:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, handled=False)
        else:
            answer = await server.challenge_auth("")
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=True)
            blob = answer
        fields = dict(
            part.split("=", 1) for part in blob.decode("utf-8", "replace").split("\x01") if "=" in part
        )
        user, bearer = fields.get("user", ""), fields.get("auth", "")
        token = bearer.removeprefix("Bearer ")
        ok = bearer.startswith("Bearer ") and self._valid(token, user)
        self.logins.append((user, ok))
        if ok:
            return AuthResult(success=True, auth_data=user)
        # Google's XOAUTH2 error leg: a JSON challenge, the client answers an empty line, then 535.
        answer = await server.challenge_auth(ERROR_CHALLENGE)
        self.error_answers.append(answer if isinstance(answer, bytes) else b"<aborted>")
        return AuthResult(success=False, handled=False)

    def _valid(self, token: str, user: str) -> bool:
        try:
            claims = decode_jwt(token, self.key)
        except (ValueError, IndexError, binascii.Error, json.JSONDecodeError):
            return False
        return claims.get("email") == user and float(claims.get("exp", 0)) > time.time()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Received(session.auth_data, envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
        )
        return "250 2.0.0 queued"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def oauth_smtp(key: bytes) -> Iterator[tuple[OAuthSink, int]]:
    """The sink on a loopback port, plain text (the sender is told allow_insecure). AUTH is not
    required (aiosmtpd warns against that without TLS): `Received.user` says who logged in."""
    sink = OAuthSink(key)
    port = free_port()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=port,
        auth_require_tls=False,
        auth_exclude_mechanism=["LOGIN", "PLAIN"],
    )
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()
