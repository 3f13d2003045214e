"""One classifier from imapclient/imaplib/socket failures and RFC 5530 response codes to ImapError kinds."""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
from collections.abc import Iterable

from imapclient import exceptions as imapclient_exceptions

from mailrules.errors import ImapError, ImapErrorKind
from mailrules.redact import redact

# RFC 5530 §3 response codes -> what the caller should do about them.
_RETRY = frozenset({"UNAVAILABLE", "INUSE", "LIMIT", "SERVERBUG", "EXPUNGEISSUED"})
_AUTH = frozenset({"AUTHENTICATIONFAILED"})
_PERMANENT = frozenset(
    {
        "AUTHORIZATIONFAILED",
        "EXPIRED",
        "PRIVACYREQUIRED",
        "CONTACTADMIN",
        "NOPERM",
        "OVERQUOTA",
        "NONEXISTENT",
        "CANNOT",
        "TRYCREATE",
        "ALREADYEXISTS",
        "CORRUPTION",
        "CLIENTBUG",
        "BADCHARSET",
        "ALERT",
        "PARSE",
        "READ-ONLY",
    }
)
KNOWN_CODES = _RETRY | _AUTH | _PERMANENT

# `[CODE` at the start of resp-text; `[b'...` (imaplib's repr of a data list) never matches.
_CODE = re.compile(r"\[([A-Z][A-Z0-9-]*)(?=[ \]])")
# Answers that mean "not now" though no RFC 5530 code says so: Exchange's throttling (with or
# without a suggested backoff) and its "Server Unavailable. 15" (the mailbox's server is busy or
# away), Gmail's connection cap `[ALERT] Too many simultaneous connections.` (imap/microsoft.py,
# imap/gmail.py, docs/operations.md).
_THROTTLED = re.compile(
    r"Request is throttled|Server Unavailable\.|Too many simultaneous connections", re.IGNORECASE
)
_BACKOFF = re.compile(r"Suggested Backoff Time: (\d{1,9}) milliseconds", re.IGNORECASE)
# Exchange ends an OAuth2 session when its token runs out: `* BYE Session invalidated -
# AccessTokenExpired`. Google closes it "with a message that says the session has expired".
_TOKEN_EXPIRED = re.compile(r"AccessTokenExpired|\bsession (?:has )?expired\b", re.IGNORECASE)


class Throttled(ImapError):
    """The server wants fewer commands for a while, `retry_after` seconds when it said so.

    Exchange: `NO Request is throttled. Suggested Backoff Time: 299609 milliseconds`, `NO Server
    Unavailable. 15`; Gmail: `[ALERT] Too many simultaneous connections.` at login. Kind "retry"
    on a live connection; "reconnect" when the login itself was refused.
    """

    def __init__(
        self,
        message: str,
        retry_after: float | None = None,
        code: str | None = None,
        kind: ImapErrorKind = "retry",
    ) -> None:
        super().__init__(message, kind, code)
        self.retry_after = retry_after


class TokenExpired(ImapError):
    """The OAuth2 access token ran out mid-session (Exchange `* BYE Session invalidated -
    AccessTokenExpired`): the connection is gone (kind "reconnect"); refresh the token, then log in."""

    auth_expired = True

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message, "reconnect", code)


def throttle_delay(text: str | bytes) -> float | None:
    """The backoff a throttling answer suggests, in seconds (`Suggested Backoff Time: N milliseconds`)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    m = _BACKOFF.search(text)
    return int(m.group(1)) / 1000 if m else None


def is_throttled(text: str | bytes) -> bool:
    """Whether a NO/BAD/BYE text is a "not now" without an RFC 5530 code (Exchange, Gmail)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return bool(_THROTTLED.search(text))


def is_token_expired(text: str | bytes) -> bool:
    """Whether a BYE text says the session's OAuth2 token expired (refresh before reconnecting)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return bool(_TOKEN_EXPIRED.search(text))


def response_code(text: str | bytes) -> str | None:
    """The RFC 5530 response code named in a server text (`NO [TRYCREATE] ...` -> `TRYCREATE`)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    for match in _CODE.finditer(text):
        code = match.group(1).upper()
        if code in KNOWN_CODES:
            return code
    return None


def _kind_for_code(code: str | None, default: ImapErrorKind) -> ImapErrorKind:
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
    prefix = f"{context}: " if context else ""
    if typ == "BYE" and is_token_expired(text):
        return TokenExpired(f"{prefix}{command} failed: the access token expired: {typ} {text}", code)
    if code is None and is_throttled(text):
        return Throttled(f"{prefix}{command} failed: throttled: {typ} {text}".rstrip(), throttle_delay(text))
    kind: ImapErrorKind
    if typ == "BYE":
        kind = "reconnect"
    elif typ == "BAD":
        kind = _kind_for_code(code, "permanent")  # a BAD is our bug or an over-long line: never retry
    else:
        kind = _kind_for_code(code, "permanent")
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

    def make(kind: ImapErrorKind, what: str) -> ImapError:
        return ImapError(f"{prefix}{what}", kind, code)

    if isinstance(exc, imaplib.IMAP4.error) and is_token_expired(text):
        # imaplib raises a BYE as `abort`; this one asks for a token refresh before the reconnect.
        return TokenExpired(f"{prefix}the session's access token expired: {text}", code)
    if isinstance(exc, imapclient_exceptions.LoginError) and is_throttled(text):
        # Gmail's connection cap is an [ALERT], which alone would read as permanent: try later.
        return Throttled(f"{prefix}login refused for now: {text}", throttle_delay(text), code, "reconnect")
    if (
        isinstance(exc, imaplib.IMAP4.error)
        and not isinstance(exc, imaplib.IMAP4.abort)  # a lost connection stays "reconnect"
        and is_throttled(text)
        and code not in _RETRY
    ):
        return Throttled(f"{prefix}throttled: {text}", throttle_delay(text), code)

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
