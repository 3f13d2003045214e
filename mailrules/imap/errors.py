"""One classifier from imapclient/imaplib/socket failures and RFC 5530 response codes to ImapError kinds."""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
from collections.abc import Iterable

from imapclient import exceptions as imapclient_exceptions

from mailrules.errors import ImapError
from mailrules.redact import redact

# RFC 5530 §3 response codes -> what the caller should do about them.
_RETRY = frozenset({"UNAVAILABLE", "INUSE", "LIMIT", "SERVERBUG", "EXPUNGEISSUED"})
_AUTH = frozenset({"AUTHENTICATIONFAILED"})
_PERMANENT = frozenset(
    {
        "AUTHORIZATIONFAILED", "EXPIRED", "PRIVACYREQUIRED", "CONTACTADMIN", "NOPERM", "OVERQUOTA",
        "NONEXISTENT", "CANNOT", "TRYCREATE", "ALREADYEXISTS", "CORRUPTION", "CLIENTBUG",
        "BADCHARSET", "ALERT", "PARSE", "READ-ONLY",
    }
)
KNOWN_CODES = _RETRY | _AUTH | _PERMANENT

# `[CODE` at the start of resp-text; `[b'...` (imaplib's repr of a data list) never matches.
_CODE = re.compile(r"\[([A-Z][A-Z0-9-]*)(?=[ \]])")


def response_code(text: str | bytes) -> str | None:
    """The RFC 5530 response code named in a server text (`NO [TRYCREATE] ...` -> `TRYCREATE`)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for match in _CODE.finditer(text):
        code = match.group(1).upper()
        if code in KNOWN_CODES:
            return code
    return None


def _kind_for_code(code: str | None, default: str) -> str:
    if code in _RETRY:
        return "retry"
    if code in _AUTH:
        return "auth"
    if code in _PERMANENT:
        return "permanent"
    return default


def from_response(command: str, typ: str, text: str | bytes, *, context: str = "") -> ImapError:
    """An ImapError for a tagged NO/BAD (or an untagged BYE) answer to `command`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    code = response_code(text)
    if typ == "BYE":
        kind = "reconnect"
    elif typ == "BAD":
        kind = _kind_for_code(code, "permanent")  # a BAD is our bug or an over-long line: never retry
    else:
        kind = _kind_for_code(code, "permanent")
    prefix = f"{context}: " if context else ""
    return ImapError(f"{prefix}{command} failed: {typ} {text}".rstrip(), kind, code)


def classify(exc: BaseException, *, context: str = "", secrets: Iterable[str] = ()) -> ImapError:
    """Map any failure raised while talking IMAP to an ImapError with kind retry/reconnect/auth/permanent.

    `secrets` (the password, a token) are cut out of the message, whatever the server echoed.
    """
    if isinstance(exc, ImapError):
        return exc
    secrets = tuple(secrets)
    text = redact(str(exc), secrets) or type(exc).__name__
    code = response_code(text)
    prefix = f"{context}: " if context else ""

    def make(kind: str, what: str) -> ImapError:
        return ImapError(f"{prefix}{what}", kind, code)

    # Order matters: readonly < abort < error in imaplib, LoginError < IMAPClientError.
    if isinstance(exc, imaplib.IMAP4.readonly):
        return make("permanent", f"mailbox became read-only: {text}")
    if isinstance(exc, imaplib.IMAP4.abort):
        # EOF, BYE, "unexpected response", socket errors inside imaplib: the connection is gone.
        return make("reconnect", f"connection lost: {text}")
    if isinstance(exc, imapclient_exceptions.LoginError):
        return make(_kind_for_code(code, "auth"), f"login failed: {text}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        # Retrying cannot make an untrusted certificate trusted: say what to configure instead.
        reason = redact(getattr(exc, "verify_message", "") or text, secrets)
        return ImapError(
            f"{prefix}TLS certificate verification failed ({reason}); "
            "if the server uses a private CA, set ca_file to its certificate",
            "permanent",
            None,
        )
    if isinstance(exc, ssl.SSLError | socket.timeout | TimeoutError | EOFError | OSError):
        return make("reconnect", f"connection failed: {type(exc).__name__}: {text}")
    if isinstance(exc, imapclient_exceptions.CapabilityError):
        return make("permanent", f"server lacks a capability: {text}")
    if isinstance(exc, imaplib.IMAP4.error):
        if re.search(r"\bBYE\b", text):
            return make("reconnect", f"server closed the session: {text}")
        return make(_kind_for_code(code, "permanent"), text)
    # ValueError/UnicodeError from imapclient's argument handling: a bug on our side.
    return make("permanent", f"{type(exc).__name__}: {text}")
