"""The IMAP error classifier: RFC 5530 codes and transport failures -> ImapError kinds."""

from __future__ import annotations

import imaplib
import ssl
import typing

import pytest
from imapclient import exceptions as imx

from mailrules.errors import ImapError, ImapErrorKind
from mailrules.imap.errors import classify, from_response, response_code


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("UNAVAILABLE", "retry"),
        ("INUSE", "retry"),
        ("LIMIT", "retry"),
        ("AUTHENTICATIONFAILED", "auth"),
        ("AUTHORIZATIONFAILED", "permanent"),
        ("EXPIRED", "permanent"),
        ("PRIVACYREQUIRED", "permanent"),
        ("CONTACTADMIN", "permanent"),
        ("NOPERM", "permanent"),
        ("OVERQUOTA", "permanent"),
        ("NONEXISTENT", "permanent"),
        ("CANNOT", "permanent"),
        ("TRYCREATE", "permanent"),
    ],
)
def test_rfc5530_codes_on_a_no(code: str, kind: str) -> None:
    err = classify(imaplib.IMAP4.error(f"copy failed: [{code}] something went wrong"))
    assert (err.kind, err.code) == (kind, code)


def test_trycreate_keeps_its_code() -> None:
    err = classify(imx.IMAPClientError("copy failed: [TRYCREATE] Mailbox does not exist."))
    assert err.code == "TRYCREATE" and err.kind == "permanent"


@pytest.mark.parametrize(
    "exc",
    [
        imaplib.IMAP4.abort("socket error: EOF"),
        imx.IMAPClientAbortError("unexpected response: b'garbage'"),
        EOFError("eof"),
        OSError(104, "Connection reset by peer"),
        ConnectionResetError(104, "reset"),
        BrokenPipeError(32, "broken pipe"),
        TimeoutError("timed out"),
        ConnectionRefusedError(111, "refused"),
        ssl.SSLError(1, "bad record mac"),
        imaplib.IMAP4.abort("[UNAVAILABLE] Server shutting down"),
        imaplib.IMAP4.error("command: NOOP => BYE Disconnected for inactivity"),
    ],
)
def test_transport_failures_mean_reconnect(exc: BaseException) -> None:
    assert classify(exc).kind == "reconnect"


def test_bye_with_code_keeps_the_code_but_reconnects() -> None:
    err = classify(imaplib.IMAP4.abort("[UNAVAILABLE] Server shutting down"))
    assert (err.kind, err.code) == ("reconnect", "UNAVAILABLE")


def test_login_error_without_code_is_auth() -> None:
    assert classify(imx.LoginError("login failed: b'Authentication failed.'")).kind == "auth"


def test_login_error_with_codes() -> None:
    assert classify(imx.LoginError("b'[AUTHENTICATIONFAILED] Invalid credentials.'")).kind == "auth"
    # Dovecot answers [UNAVAILABLE] when its auth backend is down, [LIMIT] for the connection cap.
    assert classify(imx.LoginError("b'[UNAVAILABLE] Temporary authentication failure.'")).kind == "retry"
    assert classify(imx.LoginError("b'[LIMIT] Maximum number of connections'")).kind == "retry"


def test_certificate_failure_is_permanent_and_says_what_to_set() -> None:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "self-signed certificate"
    err = classify(exc, context="acct")
    assert err.kind == "permanent"
    assert "ca_file" in str(err) and "self-signed certificate" in str(err)


def test_password_never_in_message() -> None:
    exc = imx.LoginError("login failed: [AUTHENTICATIONFAILED] bad password hunter2 for alice")
    err = classify(exc, context="alice@example", secrets=["hunter2"])
    assert "hunter2" not in str(err)
    assert "***" in str(err)


def test_readonly_is_permanent_not_reconnect() -> None:
    assert classify(imaplib.IMAP4.readonly("INBOX is not writable")).kind == "permanent"


def test_capability_and_value_errors_are_permanent() -> None:
    assert classify(imx.CapabilityError("Server does not support MOVE capability")).kind == "permanent"
    assert classify(ValueError("invalid literal for int()")).kind == "permanent"


def test_an_imap_error_passes_through() -> None:
    original = ImapError("x", "retry", "INUSE")
    assert classify(original) is original


def test_response_code_extraction() -> None:
    assert response_code("[TRYCREATE] Mailbox doesn't exist") == "TRYCREATE"
    assert response_code(b"NO [OVERQUOTA] Quota exceeded") == "OVERQUOTA"
    assert response_code("UID command error: BAD [b'Error in IMAP command']") is None
    assert response_code("[COPYUID 1 2 3] done") is None  # not an error code
    assert response_code("no code at all") is None


def test_from_response() -> None:
    err = from_response("UID COPY", "NO", b"[TRYCREATE] Mailbox does not exist.", context="a (h:1)")
    assert (err.kind, err.code) == ("permanent", "TRYCREATE")
    assert str(err).startswith("a (h:1): UID COPY failed: NO [TRYCREATE]")
    assert from_response("LOGIN", "NO", "[UNAVAILABLE] later").kind == "retry"
    assert from_response("UID FETCH", "BAD", "Too long argument").kind == "permanent"


@pytest.mark.parametrize(
    ("kind", "ends"), [("reconnect", True), ("auth", True), ("retry", False), ("permanent", False)]
)
def test_ends_session_is_reconnect_or_auth(kind: ImapErrorKind, ends: bool) -> None:
    # The one place that says which failures leave the connection unusable (watcher, run, limits).
    assert ImapError("x", kind).ends_session is ends
    assert typing.get_args(ImapErrorKind) == ("retry", "reconnect", "auth", "permanent")
