"""Building forwards and redirects (pure): addresses, header injection, loop guard, byte identity."""

from __future__ import annotations

import email
import email.policy
import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from mailrules.config.model import Secret, SmtpSettings
from mailrules.errors import ActionError, ConfigError
from mailrules.smtp.compose import (
    LOOP_HEADER,
    MAX_HOPS,
    SmtpActionError,
    build_forward,
    build_redirect,
    derive_message_id,
    header_text,
    validate_address,
)
from mailrules.smtp.sender import SmtpParams, SmtpSender

NOW = datetime(2026, 11, 26, 15, 8, 12, tzinfo=UTC)
BOT = "bot@example.com"
ORIGINAL = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: me@example.com\r\n"
    b"Subject: =?utf-8?q?R=C3=A9union?= de lundi\r\n"
    b"Message-ID: <orig-1@example.org>\r\n"
    b"\r\n"
    b"Bonjour,\r\n"
    b".leading dot\r\n"
    b"caf\xc3\xa9\r\n"
)


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def attached_bytes(raw: bytes) -> bytes:
    """The exact content of the message/rfc822 part, cut out of the raw bytes."""
    boundary = parse(raw).get_boundary()
    assert boundary is not None
    _, _, rest = raw.partition(b"Content-Type: message/rfc822\r\n")
    assert rest
    body = rest.split(b"\r\n\r\n", 1)[1]
    content, _, tail = body.rpartition(b"\r\n--" + boundary.encode() + b"--\r\n")
    assert tail == b""
    return content


@pytest.mark.parametrize(
    "address", ["me@example.com", "first.last+tag@sub.example.co.uk", "o'brien@x.io", "a_b-c@d-e.f"]
)
def test_plain_addresses_are_accepted(address: str) -> None:
    assert validate_address(address) == address


@pytest.mark.parametrize(
    "address",
    [
        "a@b.c\r\nBcc: x@y.z",
        "a@b.c\nBcc: x@y.z",
        "a\x00@b.c",
        "a b@c.d",
        "<a@b.c>",
        "Alice <a@b.c>",
        "a@b@c.d",
        "a@b.c,d@e.f",
        "a@b.c;",
        "",
        "@b.c",
        "a@",
        "a@b..c",
        ".a@b.c",
        '"a b"@c.d',
        "a@[127.0.0.1]",
        "caf\u00e9@b.c",
        "a" * 250 + "@b.cd",
    ],
)
def test_anything_else_is_refused(address: str) -> None:
    with pytest.raises(SmtpActionError) as info:
        validate_address(address)
    assert info.value.kind == "invalid"
    assert "\r" not in str(info.value) and "\n" not in str(info.value)


def test_header_text_removes_control_characters() -> None:
    assert header_text("hi\r\nBcc: evil@x.org\x00") == "hi Bcc: evil@x.org"


def test_message_ids_derive_from_the_key() -> None:
    mid = derive_message_id(BOT, "work/INBOX/7/1/r/forward/me@example.com")
    assert mid == derive_message_id(BOT, "work/INBOX/7/1/r/forward/me@example.com")
    assert mid != derive_message_id(BOT, "work/INBOX/7/2/r/forward/me@example.com")
    assert mid != derive_message_id("other@example.com", "work/INBOX/7/1/r/forward/me@example.com")
    assert mid.startswith("<") and mid.endswith("@mailrules>")


def test_forward_structure_and_headers() -> None:
    raw, mid = build_forward(
        ORIGINAL, "me@example.com", from_addr=BOT, rule="boss", idempotency_key="k", now=NOW
    )
    assert raw.isascii() is False  # the 8-bit original travels as is
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = parse(raw)
    assert msg["From"] == BOT and msg["To"] == "me@example.com"
    assert msg["Subject"] == "Fwd: Réunion de lundi"
    assert msg["Message-ID"] == mid == derive_message_id(BOT, "k")
    assert msg[LOOP_HEADER] == BOT
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/mixed"
    text, attached = list(msg.iter_parts())
    assert text.get_content().splitlines() == ['Forwarded by mailrules rule "boss".']
    assert attached.get_content_type() == "message/rfc822"
    assert attached["Content-Transfer-Encoding"] == "8bit"
    inner = attached.get_payload(0)
    assert isinstance(inner, email.message.Message)
    assert inner["Message-ID"] == "<orig-1@example.org>"
    assert attached_bytes(raw) == ORIGINAL
    # encoded header: nothing non-ASCII in the header block
    assert raw.split(b"\r\n\r\n", 1)[0].isascii()


def test_forward_of_7bit_message_without_subject() -> None:
    original = b"From: a@b.c\r\n\r\nhi"  # no final CRLF: the delimiter brings its own
    raw, _ = build_forward(original, "me@example.com", from_addr=BOT, rule="r", idempotency_key="k")
    assert raw.isascii()
    assert parse(raw)["Subject"] == "Fwd:"
    assert b"Content-Transfer-Encoding: 7bit" in raw
    assert attached_bytes(raw) == original


def test_forward_normalises_bare_line_ends_to_crlf() -> None:
    original = b"From: a@b.c\nSubject: x\n\nline1\nline2\r.\rend\n"
    raw, _ = build_forward(original, "me@example.com", from_addr=BOT, rule="r", idempotency_key="k")
    assert attached_bytes(raw) == b"From: a@b.c\r\nSubject: x\r\n\r\nline1\r\nline2\r\n.\r\nend\r\n"
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")


def test_forward_boundary_never_occurs_in_the_original() -> None:
    first, _ = build_forward(
        b"Subject: x\r\n\r\nbody\r\n", "me@example.com", from_addr=BOT, rule="r", idempotency_key="k"
    )
    boundary = parse(first).get_boundary()
    assert boundary is not None
    hostile = b"Subject: x\r\n\r\n--" + boundary.encode() + b"--\r\n"
    raw, _ = build_forward(hostile, "me@example.com", from_addr=BOT, rule="r", idempotency_key="k")
    assert parse(raw).get_boundary() != boundary
    assert attached_bytes(raw) == hostile
    assert len(list(parse(raw).iter_parts())) == 2


def test_forward_neutralises_injection_through_subject_and_rule_name() -> None:
    original = b"From: a@b.c\r\nSubject: =?utf-8?q?hi=0D=0ABcc:_evil@x.org?=\r\n\r\nbody\r\n"
    raw, _ = build_forward(
        original, "me@example.com", from_addr=BOT, rule='x"\r\nBcc: evil@x.org', idempotency_key="k"
    )
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert not any(line.lower().startswith(b"bcc") for line in head.split(b"\r\n"))
    msg = parse(raw)
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Fwd: hi Bcc: evil@x.org"
    text = next(iter(msg.iter_parts()))
    assert text.get_content().splitlines() == ['Forwarded by mailrules rule "x" Bcc: evil@x.org".']


def test_forward_refuses_a_bad_recipient() -> None:
    with pytest.raises(SmtpActionError, match="not a plain e-mail address"):
        build_forward(ORIGINAL, "a@b.c\r\nBcc: x@y.z", from_addr=BOT, rule="r", idempotency_key="k")


def test_redirect_prepends_resent_block_to_unchanged_original() -> None:
    raw, rid = build_redirect(ORIGINAL, "boss@example.com", from_addr=BOT, idempotency_key="k", now=NOW)
    assert raw.endswith(ORIGINAL)
    prefix = raw[: -len(ORIGINAL)]
    assert prefix == (
        b"Resent-From: bot@example.com\r\n"
        b"Resent-To: boss@example.com\r\n"
        b"Resent-Date: Thu, 26 Nov 2026 15:08:12 +0000\r\n"
        b"Resent-Message-ID: " + rid.encode() + b"\r\n"
        b"X-Mailrules-Loop: bot@example.com\r\n"
    )
    assert rid == derive_message_id(BOT, "k")


@pytest.mark.parametrize("build", ["forward", "redirect"])
def test_loop_guard(build: str) -> None:
    def send(original: bytes, sender: str) -> bytes:
        if build == "forward":
            return build_forward(original, "me@example.com", from_addr=sender, rule="r", idempotency_key="k")[
                0
            ]
        return build_redirect(original, "me@example.com", from_addr=sender, idempotency_key="k")[0]

    once = send(ORIGINAL, BOT)
    with pytest.raises(SmtpActionError, match="mail loop") as info:
        send(once, BOT)
    assert info.value.kind == "loop" and isinstance(info.value, ActionError)
    with pytest.raises(SmtpActionError, match="mail loop"):
        send(once.replace(b"X-Mailrules-Loop: bot@", b"x-mailrules-loop:  BOT@"), BOT)
    send(once, "other@example.com")  # another sender's guard is not ours


def test_params_hide_the_password_and_validate() -> None:
    p = SmtpParams(host="smtp.example.com", port=587, from_addr=BOT, username="bot", password="hunter2-pw")
    assert "hunter2-pw" not in repr(p) and "hunter2-pw" not in str(p)
    assert p.tls == "starttls"
    with pytest.raises(ConfigError, match="allow_insecure"):
        SmtpParams(host="h", port=25, from_addr=BOT, tls="none")
    assert SmtpParams(host="h", port=25, from_addr=BOT, tls="none", allow_insecure=True).tls == "none"
    with pytest.raises(ConfigError, match="smtp from"):
        SmtpParams(host="h", port=25, from_addr="bot@example.com\r\nBcc: x@y.z")
    with pytest.raises(ConfigError, match="without a password"):
        SmtpParams(host="h", port=25, from_addr=BOT, username="bot")
    with pytest.raises(ConfigError, match="tls"):
        SmtpParams(host="h", port=25, from_addr=BOT, tls="ssl")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="port"):
        SmtpParams(host="h", port=0, from_addr=BOT)


def test_params_from_settings_keep_the_secret() -> None:
    settings = SmtpSettings(
        host="smtp.example.com", port=465, tls="implicit", username="bot",
        password=Secret("hunter2-pw"), from_=BOT,
    )  # fmt: skip
    p = SmtpParams.from_settings(settings, ca_file="/etc/ca.pem", timeout=5)
    assert (p.host, p.port, p.tls, p.from_addr, p.ca_file, p.timeout) == (
        "smtp.example.com", 465, "implicit", BOT, "/etc/ca.pem", 5,
    )  # fmt: skip
    assert "hunter2-pw" not in repr(p)
    assert p._password() == "hunter2-pw"


def test_error_messages_never_carry_the_password() -> None:
    import base64

    p = SmtpParams(host="h", port=587, from_addr=BOT, username="bot", password="hunter2-pw")
    sender = SmtpSender(p)
    plain = base64.b64encode(b"\0bot\0hunter2-pw")
    echoed = smtplib.SMTPAuthenticationError(535, b"bad credentials hunter2-pw " + plain)
    err = sender._classify(echoed, "auth", "me@example.com")
    assert err.kind == "auth"
    assert "hunter2-pw" not in str(err) and plain.decode() not in str(err)
    assert "authentication failed for 'bot'" in str(err) and str(err).startswith("SMTP h:587: ")


def test_forward_ping_pong_between_two_senders_is_refused() -> None:
    alice, bob = "a@example.com", "b@example.com"
    to_bob, _ = build_forward(ORIGINAL, bob, from_addr=alice, rule="r", idempotency_key="k1")
    to_alice, _ = build_forward(to_bob, alice, from_addr=bob, rule="r", idempotency_key="k2")
    assert parse(to_alice).get_all(LOOP_HEADER) == [alice, bob]
    with pytest.raises(SmtpActionError, match="mail loop"):
        build_forward(to_alice, bob, from_addr=alice, rule="r", idempotency_key="k3")


def test_forward_keeps_only_plain_addresses_from_earlier_guards() -> None:
    original = b"X-Mailrules-Loop: =?utf-8?q?x=0D=0ABcc:_e@x.org?=\r\nX-Mailrules-Loop: c@d.e\r\n\r\nhi\r\n"
    raw, _ = build_forward(original, "me@example.com", from_addr=BOT, rule="r", idempotency_key="k")
    assert parse(raw).get_all(LOOP_HEADER) == ["c@d.e", BOT]
    assert parse(raw)["Bcc"] is None


def test_too_many_hops_is_a_loop() -> None:
    guards = b"".join(f"X-Mailrules-Loop: hop{i}@example.com\r\n".encode() for i in range(MAX_HOPS))
    with pytest.raises(SmtpActionError, match="passed 10 mailrules"):
        build_redirect(guards + b"\r\nhi\r\n", "me@example.com", from_addr=BOT, idempotency_key="k")


@pytest.mark.parametrize("build", ["forward", "redirect"])
def test_our_loop_header_inside_a_bounce_or_an_attachment_is_a_loop(build: str) -> None:
    """A bounce returns our forward inside it (message/rfc822 or text/rfc822-headers): the guard
    is then in a part's header, not the message's; it is ours all the same."""
    ours, _ = build_forward(ORIGINAL, "boss@example.org", from_addr=BOT, rule="r", idempotency_key="k")
    inner_headers = ours.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    for returned in (ours, inner_headers):
        bounce = (
            b"From: MAILER-DAEMON@example.org\r\nSubject: failure\r\n"
            b'Content-Type: multipart/mixed; boundary="Z"\r\n\r\n--Z\r\nContent-Type: text/plain\r\n\r\n'
            b"failed\r\n--Z\r\nContent-Type: message/rfc822\r\n\r\n" + returned + b"\r\n--Z--\r\n"
        )

        def send(sender: str, original: bytes = bounce) -> bytes:
            if build == "forward":
                return build_forward(
                    original, "x@example.org", from_addr=sender, rule="r", idempotency_key="k2"
                )[0]
            return build_redirect(original, "x@example.org", from_addr=sender, idempotency_key="k2")[0]

        with pytest.raises(SmtpActionError, match="mail loop") as info:
            send(BOT)
        assert info.value.kind == "loop"
        send("other@example.com")  # another sender's guard inside is not ours: no loop for it
        # a body line that merely mentions the header is not a guard of ours
        send(BOT, ORIGINAL + b"X-Mailrules-Loop is the header mailrules adds\r\n")
