"""SMTP side of `forward` and `redirect`: submitting the bytes smtp/compose.py builds."""

from __future__ import annotations

import base64
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailrules.config.model import Secret, SmtpSettings, TlsMode
from mailrules.errors import ConfigError, MailrulesError
from mailrules.redact import redact
from mailrules.smtp.compose import (
    ErrorKind,
    SmtpActionError,
    build_forward,
    build_redirect,
    header_text,
    validate_address,
)
from mailrules.tls import ssl_context

log = logging.getLogger(__name__)


class SmtpTokens(Protocol):
    """An OAuth2 account's tokens (mailrules/oauth/accounts.py `AccountTokens`), for AUTH XOAUTH2."""

    def access_token(self) -> Secret:
        """The current access token (refreshed first when due); raises an OAuthError."""

    def force_refresh(self, refused: Secret | None = None) -> Secret:
        """A new access token because the server refused `refused`."""


# RFC 6750 §2.1 b64token: what a bearer token may contain (nothing that ends the SASL message)
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpParams:
    """Where and how to submit mail; the password never appears in repr or errors. With `tokens`
    (an OAuth2 account) the sender logs in with AUTH XOAUTH2 as `username` instead."""

    host: str
    port: int
    from_addr: str
    tls: TlsMode = "starttls"
    username: str | None = None
    password: str | Secret | None = field(default=None, repr=False)
    ca_file: str | None = None
    allow_insecure: bool = False
    timeout: float = 30.0
    tokens: SmtpTokens | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tls not in ("implicit", "starttls", "none"):
            raise ConfigError(f"smtp tls must be implicit, starttls or none, not {self.tls!r}")
        if self.tls == "none" and not self.allow_insecure:
            raise ConfigError('smtp tls = "none" sends mail in clear text; set allow_insecure = true')
        if not 0 < self.port < 65536:
            raise ConfigError(f"smtp port {self.port} is out of range")
        if self.username is not None and self.password is None and self.tokens is None:
            raise ConfigError("smtp username given without a password")
        try:
            validate_address(self.from_addr)
        except SmtpActionError as exc:
            raise ConfigError(f"smtp from: {exc}") from None

    @classmethod
    def from_settings(
        cls,
        settings: SmtpSettings,
        *,
        ca_file: str | None = None,
        timeout: float = 30.0,
        tokens: SmtpTokens | None = None,
    ) -> SmtpParams:
        """Parameters from an account's `[accounts.X.smtp]` settings; `tokens`: the account's, for
        settings that log in with OAuth2 (`settings.oauth2`)."""
        if settings.oauth2 and tokens is None:
            raise ConfigError("smtp: this account logs in with OAuth2, but no tokens were given")
        return cls(
            host=settings.host,
            port=settings.port,
            tls=settings.tls,
            username=settings.username,
            password=settings.password,
            from_addr=settings.from_,
            ca_file=ca_file,
            allow_insecure=settings.allow_insecure,
            timeout=timeout,
            tokens=tokens if settings.oauth2 else None,
        )

    def _password(self) -> str:
        if isinstance(self.password, Secret):
            return self.password.reveal()
        return self.password or ""


# -- sending ----------------------------------------------------------------------------------


class SmtpSender:
    """Submits forwards and redirects through one account's SMTP server, one connection per send.

    Holds no connection between sends, so one sender may serve several threads. With the state
    store, a send happens at most once (house style 7: journal before, confirm after)::

        key = intent_key(account, mailbox, uidvalidity, uid, rule, "forward", to)
        if not store.intent(key, entry):       # done before, or in doubt after a crash
            ...record "skipped"
        else:
            try:
                sender.send_forward(raw, to, rule=rule, idempotency_key=key)
            except SmtpActionError as exc:
                if not exc.maybe_sent:         # certainly not sent: a later run may try again
                    store.release(key)
                ...record "failed"
            else:
                with store.transaction():
                    store.confirm(key)
                    ...record "ok"
    """

    def __init__(self, params: SmtpParams) -> None:
        self.params = params

    def send_forward(self, original: bytes, to: str, *, rule: str, idempotency_key: str) -> str:
        """Forward `original` to `to` (attached as message/rfc822); return the new Message-ID."""
        message, message_id = build_forward(
            original, to, from_addr=self.params.from_addr, rule=rule, idempotency_key=idempotency_key
        )
        self._submit(message, to)
        log.info("rule %r: forwarded to %s as %s", rule, to, message_id)
        return message_id

    def send_redirect(self, original: bytes, to: str, *, rule: str, idempotency_key: str) -> None:
        """Resend `original` unchanged (plus Resent-* headers) to the envelope recipient `to`."""
        message, resent_id = build_redirect(
            original, to, from_addr=self.params.from_addr, idempotency_key=idempotency_key
        )
        self._submit(message, to)
        log.info("rule %r: redirected to %s as %s", rule, to, resent_id)

    # -- the SMTP dialogue ---------------------------------------------------------------------

    def _submit(self, message: bytes, to: str) -> None:
        p = self.params
        stage = "connect"
        conn: smtplib.SMTP | None = None
        used: list[str] = []  # the tokens this send used: cut out of any error message
        self._check_ascii_login()
        try:
            if p.tls == "implicit":
                stage = "tls"
                conn = smtplib.SMTP_SSL(p.host, p.port, timeout=p.timeout, context=self.tls_context())
            else:
                conn = smtplib.SMTP(p.host, p.port, timeout=p.timeout)
                conn.ehlo()
                if p.tls == "starttls":
                    stage = "tls"
                    conn.starttls(context=self.tls_context())
                    conn.ehlo()
            if p.username is not None:
                stage = "auth"
                if p.tls == "none" and not p.allow_insecure:  # also refused by SmtpParams
                    raise SmtpActionError(f"{self._where()}: refusing to log in without TLS", "tls")
                self.authenticate(conn, used)
            options: list[str] = []
            if not message.isascii():
                # 8-bit content must travel as 8bit (never re-encoded: the original stays intact)
                if not conn.has_extn("8bitmime"):
                    raise SmtpActionError(
                        f"{self._where()}: the message has 8-bit content and the server lacks 8BITMIME",
                        "protocol",
                    )
                options.append("BODY=8BITMIME")
            stage = "send"
            conn.sendmail(p.from_addr, [to], message, mail_options=options)
        except SmtpActionError:
            raise
        except (smtplib.SMTPException, OSError, UnicodeError) as exc:
            raise self._classify(exc, stage, to, used) from None
        finally:
            if conn is not None:
                try:
                    conn.quit()
                except (smtplib.SMTPException, OSError):
                    conn.close()

    def authenticate(self, conn: smtplib.SMTP, used: list[str] | None = None) -> None:
        """Log in on an open connection (EHLO sent, TLS on) as forward and redirect do: AUTH XOAUTH2
        with the account's token, else the password; `used` collects the tokens sent (doctor too)."""
        p = self.params
        if p.username is not None and p.tokens is not None:
            self._xoauth2(conn, p.tokens, p.username, [] if used is None else used)
        elif p.username is not None:
            conn.login(p.username, p._password())

    def _xoauth2(self, conn: smtplib.SMTP, tokens: SmtpTokens, user: str, used: list[str]) -> None:
        """AUTH XOAUTH2 (Google's and Microsoft's SMTP): the token the server refuses (535) is
        refreshed once and tried again. On its error challenge (334 + base64 JSON) the client
        answers an empty line and gets the 535 (the same leg as IMAP, imap/sasl.py)."""
        features = conn.esmtp_features.get("auth", "").upper().split()
        if "XOAUTH2" not in features:
            raise SmtpActionError(f"{self._where()}: the server does not offer AUTH XOAUTH2", "auth")
        if any(c in user for c in "\x00\x01\r\n"):
            raise SmtpActionError(f"{self._where()}: the username contains a control character", "auth")

        def token(get: Callable[[], Secret]) -> str:
            try:
                value = get().reveal()
            except MailrulesError as exc:  # an OAuthError naming the account and the fix
                raise SmtpActionError(f"{self._where()}: no access token: {exc}", "auth") from None
            if not _B64TOKEN.fullmatch(value):
                raise SmtpActionError(f"{self._where()}: the access token is not a bearer token", "auth")
            used.append(value)
            message = f"user={user}\x01auth=Bearer {value}\x01\x01"
            used.append(base64.b64encode(message.encode()).decode())
            return value

        def auth(value: str) -> None:
            answers = iter((f"user={user}\x01auth=Bearer {value}\x01\x01",))
            # The response goes after the server's first 334, not on the AUTH line: a JWT makes it
            # longer than the 512 octets of an SMTP command line (RFC 5321 §4.5.3.1.4) that some
            # servers hold AUTH to. Every later 334 is an error challenge: an empty answer.
            conn.auth("XOAUTH2", lambda challenge=None: next(answers, ""), initial_response_ok=False)

        first = token(tokens.access_token)
        try:
            auth(first)
        except smtplib.SMTPAuthenticationError as exc:
            if exc.smtp_code != 535:
                raise
            log.info(
                "%s: the server refused the access token (%s); refreshing it once", self._where(), _reply(exc)
            )
            auth(token(lambda: tokens.force_refresh(Secret(first))))

    def _check_ascii_login(self) -> None:
        """smtplib sends AUTH (PLAIN, LOGIN, CRAM-MD5) in ASCII only: a username or password
        beyond it would fail in the middle of the dialogue with a UnicodeEncodeError. Said before
        connecting, without the secret; the settings must change, so trying again cannot help."""
        p = self.params
        if p.username is None or p.tokens is not None:
            return
        bad = [
            what
            for what, value in (("username", p.username), ("password", p._password()))
            if not value.isascii()
        ]
        if bad:
            raise SmtpActionError(
                f"{self._where()}: the SMTP {' and '.join(bad)} of this account "
                f"{'has' if len(bad) == 1 else 'have'} characters outside ASCII, which SMTP AUTH "
                "cannot send here (Python's smtplib): cannot log in; change them in the settings",
                "config",
            )

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context forward and redirect connect with (doctor tests the same one): verified
        like IMAP, system CAs plus ca_file when given (a private CA, a self-signed server)."""
        return ssl_context(self.params.ca_file)

    def _where(self) -> str:
        return f"SMTP {self.params.host}:{self.params.port}"

    def _classify(self, exc: BaseException, stage: str, to: str, used: Sequence[str] = ()) -> SmtpActionError:
        """One clear message per failure; no password (nor its base64 forms) in it."""
        where = self._where()
        kind: ErrorKind
        maybe_sent = False
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            kind, text = "auth", f"authentication failed for {self.params.username!r}: {_reply(exc)}"
        elif isinstance(exc, smtplib.SMTPNotSupportedError):
            what = {"tls": "STARTTLS", "auth": "AUTH"}.get(stage, "a needed extension")
            kind, text = ("tls" if stage == "tls" else "auth"), f"server does not offer {what}"
        elif isinstance(exc, smtplib.SMTPRecipientsRefused):
            replies = "; ".join(f"{code} {_text(msg)}" for code, msg in exc.recipients.values())
            kind, text = "recipient", f"recipient {to} refused: {replies}"
        elif isinstance(exc, smtplib.SMTPSenderRefused):
            kind, text = "sender", f"sender {self.params.from_addr} refused: {_reply(exc)}"
        elif isinstance(exc, smtplib.SMTPDataError):
            kind, text = "rejected", f"message refused: {_reply(exc)}"
        elif isinstance(exc, ssl.SSLCertVerificationError):
            kind, text = "tls", f"TLS certificate not trusted: {exc.verify_message}"
        elif isinstance(exc, ssl.SSLError):
            kind, text = "tls", f"TLS failed: {exc.reason or exc}"
        elif isinstance(exc, ConnectionRefusedError):
            kind, text = "connection", "connection refused"
        elif isinstance(exc, socket.gaierror):
            kind, text = "connection", f"cannot resolve host: {exc.strerror}"
        elif isinstance(exc, TimeoutError):
            kind, text, maybe_sent = "timeout", f"timed out during {stage}", stage == "send"
        elif isinstance(exc, smtplib.SMTPServerDisconnected | OSError):
            kind, text, maybe_sent = "connection", f"connection lost during {stage}", stage == "send"
        elif isinstance(exc, smtplib.SMTPResponseException):
            kind, text = "protocol", f"unexpected reply during {stage}: {_reply(exc)}"
        elif isinstance(exc, UnicodeError):  # never its text: it quotes what it could not encode
            kind, text = "config", f"characters outside ASCII during {stage}, which smtplib cannot send"
        else:
            kind, text = "protocol", f"{type(exc).__name__} during {stage}"
        return SmtpActionError(redact(self._scrub(f"{where}: {text}"), used), kind, maybe_sent=maybe_sent)

    def _scrub(self, text: str) -> str:
        secret = self.params._password()
        if not secret:
            return text
        user = self.params.username or ""
        forms = {
            secret,
            base64.b64encode(secret.encode()).decode(),
            base64.b64encode(f"\0{user}\0{secret}".encode()).decode(),  # AUTH PLAIN
        }
        return redact(text, forms)


def _text(message: bytes | str) -> str:
    raw = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return header_text(raw)


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_text(exc.smtp_error)}"
