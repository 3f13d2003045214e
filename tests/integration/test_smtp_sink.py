"""Forward and redirect against a real SMTP server (aiosmtpd on loopback): plain, STARTTLS, TLS, AUTH."""

from __future__ import annotations

import email
import email.policy
import logging
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mailrules.smtp.compose import SmtpActionError
from mailrules.smtp.sender import SmtpParams, SmtpSender

BOT = "bot@example.com"
USER, PASSWORD = "bot", "s3cret-Pa55word"
ORIGINAL = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: me@example.com\r\n"
    b"Subject: =?utf-8?q?R=C3=A9union?=\r\n"
    b"Message-ID: <orig-1@example.org>\r\n"
    b"\r\n"
    b"Bonjour,\r\n"
    b".a line starting with a dot\r\n"
    b"caf\xc3\xa9\r\n"
)
KEY = "work/INBOX/7/100/boss/forward/me@example.com"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]


@dataclass
class Sink:
    """An aiosmtpd handler that keeps what it receives and refuses `refused@example.com`."""

    messages: list[Received] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address == "refused@example.com":
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Received(
                envelope.mail_from, list(envelope.rcpt_tos), envelope.content, list(envelope.mail_options)
            )
        )
        return "250 2.0.0 queued"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    sink: Sink
    port: int
    ca_file: str | None = None

    def sender(self, **overrides: Any) -> SmtpSender:
        params: dict[str, Any] = {
            "host": "127.0.0.1", "port": self.port, "from_addr": BOT, "tls": "none",
            "allow_insecure": True, "timeout": 10.0,
        }  # fmt: skip
        params.update(overrides)
        return SmtpSender(SmtpParams(**params))


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "server.crt", d / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(crt), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(crt), str(key)


def _server_context(cert: tuple[str, str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    return ctx


def _run(**kwargs: Any) -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


@pytest.fixture
def plain() -> Iterator[Server]:
    for sink, port in _run():
        yield Server(sink, port)


@pytest.fixture
def starttls(cert: tuple[str, str]) -> Iterator[Server]:
    for sink, port in _run(
        tls_context=_server_context(cert),
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    ):
        yield Server(sink, port, ca_file=cert[0])


@pytest.fixture
def implicit(cert: tuple[str, str]) -> Iterator[Server]:
    # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; this connection is TLS from the start
    for sink, port in _run(
        ssl_context=_server_context(cert), authenticator=authenticator, auth_require_tls=False
    ):
        yield Server(sink, port, ca_file=cert[0])


def our_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What mailrules logged (aiosmtpd's own debug log shows the whole dialogue: not ours)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("mailrules"))


def parse(raw: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


# -- forward and redirect over a plain connection ---------------------------------------------


def test_forward_attaches_the_original_unchanged(plain: Server) -> None:
    message_id = plain.sender().send_forward(ORIGINAL, "me@example.com", rule="boss", idempotency_key=KEY)
    (got,) = plain.sink.messages
    assert got.mail_from == BOT and got.rcpt_tos == ["me@example.com"]
    assert "BODY=8BITMIME" in got.mail_options
    msg = parse(got.content)
    assert msg["Message-ID"] == message_id
    assert msg["Subject"] == "Fwd: Réunion"
    assert msg["X-Mailrules-Loop"] == BOT
    boundary = msg.get_boundary()
    assert boundary is not None
    # cut the message/rfc822 part out of the received bytes: byte-identical to the original
    after = got.content.split(b"Content-Type: message/rfc822\r\n", 1)[1].split(b"\r\n\r\n", 1)[1]
    attached = after.rsplit(b"\r\n--" + boundary.encode() + b"--", 1)[0]
    assert attached == ORIGINAL


def test_forward_message_id_is_stable_per_key(plain: Server) -> None:
    sender = plain.sender()
    first = sender.send_forward(ORIGINAL, "me@example.com", rule="boss", idempotency_key=KEY)
    again = sender.send_forward(ORIGINAL, "me@example.com", rule="boss", idempotency_key=KEY)
    other = sender.send_forward(ORIGINAL, "me@example.com", rule="boss", idempotency_key=KEY + "x")
    assert first == again != other


def test_redirect_resends_the_original_bytes(plain: Server) -> None:
    plain.sender().send_redirect(ORIGINAL, "boss@example.com", rule="boss", idempotency_key=KEY)
    (got,) = plain.sink.messages
    assert got.mail_from == BOT and got.rcpt_tos == ["boss@example.com"]
    assert got.content.endswith(ORIGINAL)
    prefix = got.content[: -len(ORIGINAL)].split(b"\r\n")
    assert [line.split(b":", 1)[0] for line in prefix if line] == [
        b"Resent-From", b"Resent-To", b"Resent-Date", b"Resent-Message-ID", b"X-Mailrules-Loop",
    ]  # fmt: skip
    assert parse(got.content)["Message-ID"] == "<orig-1@example.org>"


def test_injection_attempts_send_nothing_extra(plain: Server) -> None:
    sender = plain.sender()
    with pytest.raises(SmtpActionError) as info:
        sender.send_forward(ORIGINAL, "a@b.c\r\nBcc: x@y.z", rule="r", idempotency_key=KEY)
    assert info.value.kind == "invalid"
    with pytest.raises(SmtpActionError):
        sender.send_redirect(ORIGINAL, "a@b.c\r\nRCPT TO:<x@y.z>", rule="r", idempotency_key=KEY)
    assert plain.sink.messages == []
    evil = b"From: a@b.c\r\nSubject: =?utf-8?q?hi=0D=0ABcc:_evil@x.org?=\r\n\r\nbody\r\n"
    sender.send_forward(evil, "me@example.com", rule="r\r\nBcc: evil@x.org", idempotency_key=KEY)
    (got,) = plain.sink.messages
    assert got.rcpt_tos == ["me@example.com"]
    msg = parse(got.content)
    assert msg["Bcc"] is None and msg["Subject"] == "Fwd: hi Bcc: evil@x.org"


def test_loop_guard_refuses_our_own_forward(plain: Server) -> None:
    sender = plain.sender()
    sender.send_forward(ORIGINAL, "me@example.com", rule="boss", idempotency_key=KEY)
    sender.send_redirect(ORIGINAL, "me@example.com", rule="boss", idempotency_key=KEY)
    forwarded, redirected = (m.content for m in plain.sink.messages)
    for mail in (forwarded, redirected):
        for send in (sender.send_forward, sender.send_redirect):
            with pytest.raises(SmtpActionError, match="mail loop") as info:
                send(mail, "me@example.com", rule="boss", idempotency_key=KEY)
            assert info.value.kind == "loop"
    assert len(plain.sink.messages) == 2
    plain.sender(from_addr="other@example.com").send_forward(
        forwarded, "me@example.com", rule="boss", idempotency_key=KEY
    )
    assert len(plain.sink.messages) == 3


def test_recipient_refused_is_classified(plain: Server) -> None:
    with pytest.raises(SmtpActionError, match=r"recipient refused@example\.com refused: 550") as info:
        plain.sender().send_forward(ORIGINAL, "refused@example.com", rule="r", idempotency_key=KEY)
    assert info.value.kind == "recipient" and not info.value.maybe_sent


def test_connection_refused_is_classified() -> None:
    sender = SmtpSender(
        SmtpParams(host="127.0.0.1", port=free_port(), from_addr=BOT, tls="none", allow_insecure=True)
    )
    with pytest.raises(SmtpActionError, match="connection refused") as info:
        sender.send_redirect(ORIGINAL, "me@example.com", rule="r", idempotency_key=KEY)
    assert info.value.kind == "connection" and not info.value.maybe_sent


# -- TLS and AUTH -----------------------------------------------------------------------------


def test_starttls_with_auth(starttls: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sender = starttls.sender(
        tls="starttls", allow_insecure=False, ca_file=starttls.ca_file, username=USER, password=PASSWORD
    )
    sender.send_forward(ORIGINAL, "me@example.com", rule="boss", idempotency_key=KEY)
    (got,) = starttls.sink.messages
    assert got.rcpt_tos == ["me@example.com"]
    logged = our_logs(caplog)
    assert "forwarded to me@example.com" in logged
    assert PASSWORD not in logged and "Bonjour" not in logged


def test_wrong_password_is_a_clear_error_without_the_password(
    starttls: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wr0ng-Pa55word"
    sender = starttls.sender(
        tls="starttls", allow_insecure=False, ca_file=starttls.ca_file, username=USER, password=wrong
    )
    with pytest.raises(SmtpActionError) as info:
        sender.send_forward(ORIGINAL, "me@example.com", rule="boss", idempotency_key=KEY)
    err = info.value
    assert err.kind == "auth" and not err.maybe_sent
    assert f"authentication failed for '{USER}'" in str(err) and "535" in str(err)
    for text in (str(err), repr(err), repr(sender.params), our_logs(caplog)):
        assert wrong not in text
    assert starttls.sink.messages == []


def test_untrusted_certificate_is_refused(starttls: Server) -> None:
    sender = starttls.sender(tls="starttls", allow_insecure=False, ca_file=None)  # system CAs only
    with pytest.raises(SmtpActionError, match="certificate") as info:
        sender.send_forward(ORIGINAL, "me@example.com", rule="boss", idempotency_key=KEY)
    assert info.value.kind == "tls"
    assert starttls.sink.messages == []


def test_server_requiring_starttls_refuses_plain_mail(starttls: Server) -> None:
    with pytest.raises(SmtpActionError) as info:
        starttls.sender().send_redirect(ORIGINAL, "me@example.com", rule="r", idempotency_key=KEY)
    assert info.value.kind == "sender" and "530" in str(info.value)
    assert starttls.sink.messages == []


def test_plain_server_without_starttls_is_refused(plain: Server) -> None:
    sender = plain.sender(tls="starttls", allow_insecure=False)
    with pytest.raises(SmtpActionError, match="STARTTLS") as info:
        sender.send_redirect(ORIGINAL, "me@example.com", rule="r", idempotency_key=KEY)
    assert info.value.kind == "tls"
    assert plain.sink.messages == []


def test_implicit_tls_with_auth(implicit: Server) -> None:
    sender = implicit.sender(
        tls="implicit", allow_insecure=False, ca_file=implicit.ca_file, username=USER, password=PASSWORD
    )
    sender.send_redirect(ORIGINAL, "me@example.com", rule="r", idempotency_key=KEY)
    (got,) = implicit.sink.messages
    assert got.content.endswith(ORIGINAL)
