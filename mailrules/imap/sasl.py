"""OAuth2 over IMAP: the XOAUTH2 and OAUTHBEARER (RFC 7628) messages and the AUTHENTICATE exchange.

Written by hand because imapclient 4.1.0 gets the error leg wrong: on a refused token the server
sends a continuation `+ base64(json)` and waits for the client's answer before its tagged NO;
imapclient's `oauth2_login`/`oauthbearer_login` answer that challenge with the token again
(imap-notes.md (e)). Here the client answers as the mechanisms require: an empty response
(XOAUTH2, Google's protocol page) or `%x01` (RFC 7628 §3.2.3), then reads the NO and raises
`OAuthLoginError` carrying the JSON's status and scope. The token never reaches a message.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from typing import Any, Protocol

from mailrules.config.model import Secret
from mailrules.errors import ImapError, ImapErrorKind
from mailrules.imap.errors import classify, from_response

#: What `mechanism = "auto"` prefers, best first (RFC 7628 is the standard; XOAUTH2 is what
#: Microsoft offers, and Google offers both).
MECHANISMS = ("OAUTHBEARER", "XOAUTH2")
#: An error challenge larger than this is not a status JSON: it is not decoded (only counted as refused).
MAX_CHALLENGE = 4096
# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_CRLF = b"\r\n"
# RFC 7628 §3.2.3: after an error challenge, OAUTHBEARER answers %x01 (base64 "AQ=="); Google's
# XOAUTH2 page: an empty response.
_ERROR_ANSWER = {"OAUTHBEARER": base64.b64encode(b"\x01"), "XOAUTH2": b""}


class OAuthLoginError(ImapError):
    """The server refused the OAuth2 login. `status`, `scope`, `schemes` come from the error
    challenge (None when the server sent none); `kind` is "auth" (the cue to refresh the token
    once) unless an RFC 5530 code says otherwise (`[UNAVAILABLE]`: "retry")."""

    def __init__(
        self,
        message: str,
        *,
        kind: ImapErrorKind = "auth",
        status: str | None = None,
        scope: str | None = None,
        schemes: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, kind, code)
        self.status = status
        self.scope = scope
        self.schemes = schemes


class TokenUnavailable(ImapError):
    """No access token to log in with: the token endpoint refused or did not answer, or there are
    no tokens yet. `login_required`: only `mailrules auth login ACCOUNT` helps (kind "auth");
    otherwise a later attempt may succeed (kind "reconnect")."""

    def __init__(self, message: str, *, login_required: bool) -> None:
        super().__init__(message, "auth" if login_required else "reconnect")
        self.login_required = login_required


class TokenSource(Protocol):
    """An OAuth2 account's tokens, shared by all its connections (mailrules/oauth/accounts.py
    `AccountTokens`). Each call may raise an OAuthError (a MailrulesError with `kind`)."""

    @property
    def mechanism(self) -> str:
        """The configured SASL mechanism: "auto", "xoauth2" or "oauthbearer"."""

    def access_token(self) -> Secret:
        """The current access token (refreshed first when it is due)."""

    def force_refresh(self, refused: Secret | None = None) -> Secret:
        """A new access token because a server refused `refused`."""

    def expired(self, token: Secret | None = None) -> None:
        """A server ended a session because `token` expired: the next login refreshes first."""


def choose_mechanism(capabilities: Iterable[str], configured: str = "auto") -> str:
    """The SASL mechanism to use: `configured` ("auto", "xoauth2", "oauthbearer") against the
    server's pre-login CAPABILITY. "auto" takes OAUTHBEARER where advertised, else XOAUTH2.
    Raises ImapError (permanent) when the server offers neither, or not the configured one."""
    offered = {c.upper()[5:] for c in capabilities if c.upper().startswith("AUTH=")}
    wanted = configured.upper()
    if wanted == "AUTO":
        for mech in MECHANISMS:
            if mech in offered:
                return mech
        raise ImapError(
            f"the server offers no OAuth2 login (no AUTH=OAUTHBEARER or AUTH=XOAUTH2; it offers "
            f"{_offered(offered)})",
            "permanent",
        )
    if wanted not in MECHANISMS:
        raise ImapError(
            f"unknown OAuth2 mechanism {printable(configured)!r} (auto, xoauth2 or oauthbearer)", "permanent"
        )
    if wanted not in offered:
        raise ImapError(
            f"the server does not offer AUTH={wanted} (it offers {_offered(offered)}); "
            'set mechanism = "auto"',
            "permanent",
        )
    return wanted


def _offered(offered: set[str]) -> str:
    return ", ".join(f"AUTH={m}" for m in sorted(offered)) or "no SASL mechanism"


def _check_token(token: str) -> None:
    if not _B64TOKEN.fullmatch(token):
        # Never show the value: say only what is wrong with it.
        raise ImapError(
            "the access token is not a bearer token (RFC 6750 §2.1: letters, digits, -._~+/ and "
            "trailing =); refusing to send it",
            "permanent",
        )


def _check_field(what: str, value: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ImapError(f"the {what} {printable(value)} contains a control character", "permanent")


def xoauth2_response(user: str, token: str) -> bytes:
    """The XOAUTH2 client response (before base64): `user=U ^A auth=Bearer T ^A ^A`."""
    _check_field("user name", user)
    _check_token(token)
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def _saslname(user: str) -> str:
    # RFC 5801 §4 saslname: "=" and "," are written =3D and =2C (the "=" first).
    return user.replace("=", "=3D").replace(",", "=2C")


def oauthbearer_response(user: str, token: str, host: str, port: int) -> bytes:
    """The OAUTHBEARER client response (RFC 7628 §3.1) before base64:
    `n,a=U,^Ahost=H^Aport=P^Aauth=Bearer T^A^A`."""
    _check_field("user name", user)
    _check_field("host", host)
    _check_token(token)
    if not 0 < port < 65536:
        raise ImapError(f"port {port} is out of range", "permanent")
    gs2 = f"n,a={_saslname(user)}," if user else "n,,"
    return f"{gs2}\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()


def client_response(mechanism: str, user: str, token: str, host: str, port: int) -> bytes:
    """The initial client response of `mechanism` (XOAUTH2 or OAUTHBEARER), not yet base64."""
    mech = mechanism.upper()
    if mech == "XOAUTH2":
        return xoauth2_response(user, token)
    if mech == "OAUTHBEARER":
        return oauthbearer_response(user, token, host, port)
    raise ImapError(f"not an OAuth2 mechanism: {mechanism!r}", "permanent")


def printable(value: object, limit: int = 200) -> str:
    """`value` for a message: control characters escaped, at most `limit` characters."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def parse_error_challenge(data: bytes | None) -> dict[str, str]:
    """The fields of an error challenge (`+ base64(json)`, RFC 7628 §3.2.2): `status`, `scope`,
    `schemes`, `openid-configuration`, each made printable. Never raises: what does not decode is {}."""
    if not data or len(data) > MAX_CHALLENGE:
        return {}
    try:
        decoded: Any = json.loads(base64.b64decode(data.strip(), validate=True))
    except (binascii.Error, ValueError):
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {
        key: printable(value, 100)
        for key, value in decoded.items()
        if key in ("status", "scope", "schemes", "openid-configuration") and isinstance(value, str | int)
    }


def authenticate_oauth(
    client: Any,
    mechanism: str,
    user: str,
    token: str,
    host: str,
    port: int,
    *,
    sasl_ir: bool | None = None,
    context: str = "",
) -> None:
    """Log in on a connected, not yet authenticated imapclient `client` with an OAuth2 `token`.

    Sends `AUTHENTICATE <mechanism>` with the initial response on the command line where the server
    advertises SASL-IR (RFC 4959; `sasl_ir` overrides), else after the server's `+`. An error
    challenge gets the mechanism's answer, then the tagged NO raises OAuthLoginError (kind "auth")
    with the challenge's status and scope. A connection failure raises ImapError (kind "reconnect");
    the client's socket timeout bounds every wait. `host`/`port` go into OAUTHBEARER's message.
    """
    imap = client._imap  # imaplib.IMAP4 under imapclient; we write the exchange ourselves
    mech = mechanism.upper()
    where = context or f"{user} ({host}:{port})"
    caps = {str(c).upper() for c in imap.capabilities}
    if f"AUTH={mech}" not in caps:
        raise ImapError(f"{where}: the server does not offer AUTH={mech}", "permanent")
    initial = base64.b64encode(client_response(mech, user, token, host, port))
    secrets = (token, initial.decode("ascii"))
    use_ir = "SASL-IR" in caps if sasl_ir is None else sasl_ir
    challenge: bytes | None = None
    try:
        # Same hygiene as imaplib._command: codes left by earlier commands must not be read as ours.
        for key in ("OK", "NO", "BAD"):
            imap.untagged_responses.pop(key, None)
        tag: bytes = imap._new_tag()
        command = tag + b" AUTHENTICATE " + mech.encode("ascii")
        if use_ir:
            imap.send(command + b" " + initial + _CRLF)
        else:
            imap.send(command + _CRLF)
            if not _tagged_or_continuation(imap, tag):
                imap.send(initial + _CRLF)
        answered = False
        while not _tagged_or_continuation(imap, tag):
            if not answered:
                challenge = imap.continuation_response
                imap.send(_ERROR_ANSWER[mech] + _CRLF)
                answered = True
            else:
                # A second challenge is not part of either mechanism: cancel (RFC 9051 §6.2.2).
                imap.send(b"*" + _CRLF)
        typ, data = imap._get_tagged_response(tag)
        imap._check_bye()
    except ImapError:
        raise
    except Exception as exc:
        raise classify(exc, context=f"{where}: AUTHENTICATE {mech}", secrets=secrets) from exc
    text = data[0] if data and isinstance(data[0], bytes) else b""
    if typ == "OK":
        imap.state = "AUTH"  # what imaplib.authenticate does after OK; later commands check it
        return
    reply = printable(text.decode("utf-8", "replace"))
    for secret in secrets:
        reply = reply.replace(secret, "***")
    verdict = from_response(f"AUTHENTICATE {mech}", typ, reply, context=where)
    if typ != "NO":
        raise verdict  # BAD: a malformed exchange, our bug; never "refresh and try again"
    fields = parse_error_challenge(challenge)
    detail = ", ".join(f"{k}={fields[k]}" for k in ("status", "scope") if k in fields)
    # A NO without an RFC 5530 code is a refused credential, like [AUTHENTICATIONFAILED].
    kind: ImapErrorKind = "auth" if verdict.code is None else verdict.kind
    raise OAuthLoginError(
        f"{verdict}" + (f" ({detail})" if detail else ""),
        kind=kind,
        status=fields.get("status"),
        scope=fields.get("scope"),
        schemes=fields.get("schemes"),
        code=verdict.code,
    )


def _tagged_or_continuation(imap: Any, tag: bytes) -> bool:
    """Read responses until the tagged one (True) or a continuation request (False)."""
    while imap._get_response() is not None:
        if imap.tagged_commands.get(tag):
            return True
    return False
