"""One authenticated IMAP connection: TLS policy, login, capability and namespace discovery, logout."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from imapclient import IMAPClient as _ImapClient
from imapclient import imap_utf7
from imapclient.exceptions import LoginError
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.response_parser import parse_response
from imapclient.tls import IMAP4_TLS

from mailrules import __version__
from mailrules.config.model import Secret
from mailrules.errors import ImapError, MailrulesError
from mailrules.imap.core import login_arg, quote
from mailrules.imap.errors import classify, from_response
from mailrules.imap.names import Namespaces
from mailrules.imap.sasl import (
    OAuthLoginError,
    TokenSource,
    TokenUnavailable,
    authenticate_oauth,
    choose_mechanism,
)
from mailrules.imap.special_use import attributes_to_uses, names_to_uses
from mailrules.imap.transfer import TransferCommands
from mailrules.tls import ssl_context

log = logging.getLogger(__name__)

TlsMode = Literal["implicit", "starttls", "none"]


@dataclass(frozen=True)
class ConnectionParams:
    """Where and how to connect; the password never appears in repr. With `tokens` (an OAuth2
    account) the session logs in with an access token (SASL XOAUTH2 or OAUTHBEARER) and
    `password` is unused."""

    host: str
    port: int
    tls: TlsMode
    username: str
    password: str = field(repr=False)
    ca_file: str | None = None
    allow_insecure: bool = False
    timeout: float = 30.0
    name: str = ""
    tokens: TokenSource | None = field(default=None, repr=False, compare=False)

    @property
    def account(self) -> str:
        return self.name or f"{self.username}@{self.host}"


#: TCP keepalive: the first probe after 60 s of silence, then every 10 s; 3 unanswered probes and
#: the kernel resets the connection, so a dead peer is noticed within 60 + 3 × 10 = 90 s of silence
#: (docs/operations.md, "Silent connections"). Where the platform lacks the TCP_KEEP* options, only
#: SO_KEEPALIVE is set and the system's defaults apply (Linux: 2 h).
KEEPALIVE = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))


def _keepalive(sock: socket.socket) -> None:
    # imapclient sets no TCP keepalive; without it a half-open connection only shows up as silence.
    # Set once on the TCP socket: STARTTLS wraps the same socket, so the options stay.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in KEEPALIVE:
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


_GREETING_CAPABILITIES = re.compile(rb"^\* (?:OK|PREAUTH) \[CAPABILITY ([^\]]*)\]", re.IGNORECASE)


class _GreetingCapabilities:
    """imaplib asks CAPABILITY right after the greeting even when the greeting listed them
    (`* OK [CAPABILITY ...]`, RFC 9051 §7.1: Dovecot, Cyrus): those are taken instead, one round
    trip less per connection. Every later call (after STARTTLS, whose capabilities must be asked
    again: RFC 9051 §6.2.1) asks as before."""

    welcome: bytes
    untagged_responses: dict[str, list[Any]]
    capabilities: tuple[str, ...]
    _greeted = False

    def _get_capabilities(self) -> None:
        listed = None if self._greeted else _GREETING_CAPABILITIES.match(self.welcome or b"")
        self._greeted = True
        if listed is not None and listed.group(1).strip():
            # imaplib filed the code under CAPABILITY too: gone, as its own CAPABILITY would pop it
            self.untagged_responses.pop("CAPABILITY", None)
            self.capabilities = tuple(listed.group(1).decode("ascii", "replace").upper().split())
            return
        super()._get_capabilities()  # type: ignore[misc]


class _Imap4(_GreetingCapabilities, IMAP4WithTimeout):  # type: ignore[misc]
    pass


class _Imap4Tls(_GreetingCapabilities, IMAP4_TLS):  # type: ignore[misc]
    pass


class IMAPClient(_ImapClient):  # type: ignore[misc]
    """imapclient's client over the imaplib classes above (what its `_create_IMAP4` makes, but them)."""

    def _create_IMAP4(self) -> Any:
        timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _Imap4Tls(self.host, self.port, self.ssl_context, timeout)
        return _Imap4(self.host, self.port, timeout)


class ImapSession(TransferCommands):
    """An authenticated connection. Use one per thread (house style 6); make it with `connect`."""

    def __init__(self, client: Any, params: ConnectionParams) -> None:
        super().__init__(client, params.account, f"{params.host}:{params.port}", secrets=(params.password,))
        self._params = params
        self._separator: str | None = None
        self._special_use: dict[str, str] | None = None
        self.enabled: frozenset[str] = frozenset()
        self._closed = False
        #: the access token this session logged in with (OAuth2), for `TokenSource.expired`
        self.token: Secret | None = None
        #: OAuth2: the SASL mechanism it logged in with, and those the server offered before login
        self.mechanism: str | None = None
        self.offered: tuple[str, ...] = ()

    # -- connecting ---------------------------------------------------------------------------------

    @classmethod
    def connect(cls, params: ConnectionParams) -> ImapSession:
        """Open, secure, log in, re-read capabilities, ENABLE what helps, send ID; raise ImapError."""
        where = f"{params.account} ({params.host}:{params.port})"
        if params.tls not in ("implicit", "starttls", "none"):
            raise ImapError(f"{where}: tls must be implicit, starttls or none: {params.tls!r}", "permanent")
        for what, value in (("username", params.username), ("password", params.password)):
            if any(c in value for c in "\r\n\x00"):
                # Refused before the socket is opened: `LOGIN u\r\nX1 DELETE INBOX` is two commands.
                # The message names the account only: `where` holds the username when there is no name.
                raise ImapError(
                    f"{params.name or 'account'}: the {what} contains CR, LF or NUL: not sent", "permanent"
                )
        if params.tls == "none" and not params.allow_insecure:
            # Refused before the socket is even opened, so no password can leave in clear text.
            raise ImapError(
                f"{where}: refusing to log in without TLS; set allow_insecure = true for this account "
                "to allow a plaintext connection (loopback or a trusted network only)",
                "permanent",
            )
        try:
            ctx = ssl_context(params.ca_file) if params.tls != "none" else None
        except (OSError, ssl.SSLError) as exc:
            raise ImapError(f"{where}: cannot read ca_file {params.ca_file!r}: {exc}", "permanent") from exc
        try:
            client = IMAPClient(
                params.host,
                params.port,
                ssl=params.tls == "implicit",
                ssl_context=ctx if params.tls == "implicit" else None,
                timeout=params.timeout,
            )
        except Exception as exc:
            raise classify(exc, context=f"{where}: connect", secrets=(params.password,)) from exc
        # imapclient sets imaplib's debug level to 5 and routes imaplib's trace to the
        # "imapclient.imaplib" logger: imaplib then formats `'< %r' % line` and more for every line
        # it reads, whether that logger wants it or not (logs.setup_logging keeps it at INFO: it
        # would log message contents). ~6% of a 20,000-message run's instructions (bench/README.md).
        if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
            client._imap.debug = 0
        session = cls(client, params)
        if b"[CAPABILITY " not in (client.welcome or b""):
            session.command_count += 1  # imaplib asked CAPABILITY itself after the greeting
        try:
            _keepalive(client.socket())
            if params.tls == "starttls":
                session._starttls(ctx)
            session._login()
            session._after_login()
        except ImapError:
            session._shutdown()
            raise
        except Exception as exc:
            session._shutdown()
            raise classify(exc, context=f"{where}: connect", secrets=(params.password,)) from exc
        except BaseException:
            session._shutdown()
            raise
        return session

    def _pre_auth_caps(self) -> set[str]:
        # imaplib's list (greeting, refreshed after STARTTLS): asking imapclient would send a command.
        return {str(c).upper() for c in self._client._imap.capabilities}

    def _starttls(self, ctx: ssl.SSLContext | None) -> None:
        if "STARTTLS" not in self._pre_auth_caps():
            raise ImapError(
                f'{self._context}: server does not offer STARTTLS; use tls = "implicit" (port 993)',
                "permanent",
            )
        # RFC 2595 §3.1: imapclient forgets the pre-TLS capabilities after this.
        self._call("STARTTLS", lambda: self._client.starttls(ctx))
        self.command_count += 1  # imaplib sends CAPABILITY right after the TLS handshake

    def _login(self) -> None:
        if self._params.tokens is not None:
            self._oauth_login(self._params.tokens)
            return
        pre = self._pre_auth_caps()
        if "LOGINDISABLED" in pre:
            raise ImapError(f"{self._context}: server disabled LOGIN on this connection", "permanent")
        user, password = self._params.username, self._params.password
        if (user + password).isascii() or "AUTH=PLAIN" not in pre:
            self._login_command(user, password)
        else:
            # imaplib's LOGIN encodes arguments as ASCII; SASL PLAIN carries UTF-8 (RFC 4616).
            self._call("AUTHENTICATE", lambda: self._client.plain_login(user, password))
        log.info("%s: logged in to %s", self._account, self._host)

    def _oauth_login(self, tokens: TokenSource) -> None:
        """SASL with the account's access token; a token the server refuses is refreshed once and
        tried again on this connection (the server may know it expired before we do)."""
        pre = self._pre_auth_caps()
        self.offered = tuple(sorted(c[5:] for c in pre if c.startswith("AUTH=")))
        mechanism = choose_mechanism(pre, tokens.mechanism)
        token = self._token(tokens.access_token)
        try:
            self._authenticate(mechanism, token)
        except OAuthLoginError as exc:
            if exc.kind != "auth":
                raise
            log.info("%s: the server refused the access token (%s); refreshing it once", self._account, exc)
            token = self._token(lambda: tokens.force_refresh(token))
            self._authenticate(mechanism, token)
        self.token, self.mechanism = token, mechanism
        log.info("%s: logged in to %s (%s)", self._account, self._host, mechanism)

    def _token(self, get: Callable[[], Secret]) -> Secret:
        try:
            token = get()
        except MailrulesError as exc:  # an OAuthError: its message names the account and the fix
            raise TokenUnavailable(str(exc), login_required=getattr(exc, "kind", "") == "login") from None
        self._secrets = (*self._secrets, token.reveal())  # cut out of every later error message
        return token

    def _authenticate(self, mechanism: str, token: Secret) -> None:
        self.command_count += 1
        started = time.perf_counter()
        ok = False
        try:
            authenticate_oauth(
                self._client,
                mechanism,
                self._params.username,
                token.reveal(),
                self._params.host,
                self._params.port,
                context=self._context,
            )
            ok = True
        finally:
            self._record("AUTHENTICATE", started, ok)

    def _login_command(self, user: str, password: str) -> None:
        # Not imapclient's login(): imaplib quotes the password but sends the username as it is, so
        # a space or a quote breaks the command and CR/LF would start another one. Both go quoted,
        # or as literals when 8-bit (core.login_arg).
        reply = self._run(
            "LOGIN", [b"LOGIN ", login_arg(user), b" ", login_arg(password)], accept=("OK", "NO", "BAD")
        )
        if reply.typ != "OK":
            # As imapclient reported it: kind "auth" unless an RFC 5530 code says otherwise.
            raise self._fail(LoginError(f"{reply.typ} {reply.text.decode('utf-8', 'replace')}"), "LOGIN")
        self._client._imap.state = "AUTH"  # what imaplib's own login() records; ENABLE, SELECT need it

    def _after_login(self) -> None:
        # Capabilities may grow after authentication (Exchange adds MOVE): re-read them. Dovecot sends
        # them in the LOGIN OK; otherwise ask.
        pushed = [c for c in self._take("CAPABILITY") if isinstance(c, bytes)]
        if not pushed:
            self._run("CAPABILITY", [b"CAPABILITY"])
            pushed = [c for c in self._take("CAPABILITY") if isinstance(c, bytes)]
        words = pushed[-1].decode("ascii", "replace").upper().split() if pushed else []
        self._caps = frozenset(words)
        # Keep imapclient's @require_capability checks in step with what we just read.
        self._client._cached_capabilities = tuple(w.encode("ascii") for w in words)
        batch: list[tuple[str, bytes]] = []
        if self.has("ENABLE") and self.has("CONDSTORE"):
            # RFC 5161 §3.1: only valid before SELECT. Never UTF8=ACCEPT: it forbids SEARCH CHARSET.
            # QRESYNC makes the server report removals as VANISHED ranges instead of one EXPUNGE
            # line per message (RFC 7162 §3.2.10): a MOVE of 20,000 messages answers in a few
            # lines, not 20,000 for imaplib to parse.
            wanted = b"CONDSTORE QRESYNC" if self.has("QRESYNC") else b"CONDSTORE"
            batch.append(("ENABLE", b"ENABLE " + wanted))
        if self.has("ID"):
            # After authentication only: some servers (FastMail) reject ID before login.
            version = quote(__version__.encode("ascii", "replace"))
            batch.append(("ID", b'ID ("name" "mailrules" "version" ' + version + b")"))
        if self.has("NAMESPACE"):
            batch.append(("NAMESPACE", b"NAMESPACE"))
        # The three answer independently of one another: one round trip instead of three.
        replies = dict(zip([name for name, _ in batch], self._pipelined(batch), strict=True))
        for name in ("ENABLE", "NAMESPACE"):
            reply = replies.get(name)
            if reply is not None and reply.typ != "OK":
                raise self._throttled(from_response(name, reply.typ, reply.text, context=self._context), name)
        if "ENABLE" in replies:
            self.enabled = frozenset(_text(c).upper() for c in b" ".join(self._take("ENABLED")).split())
        refused = replies.get("ID")
        if refused is not None and refused.typ != "OK":
            err = from_response("ID", refused.typ, refused.text, context=self._context)
            log.debug("%s: ID refused: %s", self._account, err)
        self._take("ID")  # the server's name and version: not used
        namespace = self._take("NAMESPACE") if "NAMESPACE" in replies else None
        self._separator = self._discover_separator(namespace)

    def _discover_separator(self, namespace: list[Any] | None) -> str | None:
        # The namespaces portable names are mapped with (imap/names.py), and the separator.
        groups = _namespaces(namespace) if namespace else None
        if groups is not None and groups[0]:
            personal, other, shared = groups
            self.names = Namespaces.from_response(personal, (other, shared))
            return self.names.separator
        # RFC 9051 §6.3.9: `LIST "" ""` returns the hierarchy delimiter of the root.
        root = self._list([b'LIST "" ""'])
        self.names = Namespaces.from_list_root(root[0].delimiter if root else None)
        return self.names.separator

    # -- properties ---------------------------------------------------------------------------------

    @property
    def separator(self) -> str | None:
        """The personal namespace's hierarchy delimiter (NAMESPACE, else LIST); None when flat.
        The server's: names given to this session use "/" (imap/names.py) whatever it is."""
        return self._separator

    @property
    def namespaces(self) -> Namespaces:
        """How this session maps portable names (imap/names.py); `describe()` puts it in words."""
        return self.names if self.names is not None else Namespaces()

    @property
    def account(self) -> str:
        return self._account

    def special_use(self) -> dict[str, str]:
        """{`\\Archive`: name, `\\Trash`: name, ...}: extended LIST, LIST attributes, then names; cached."""
        if self._special_use is not None:
            return dict(self._special_use)
        found: dict[str, str] = {}
        listing = None
        if self.has("SPECIAL-USE") and self.has("LIST-EXTENDED"):
            # The selection option is LIST-EXTENDED syntax (RFC 5258), so both must be advertised;
            # it returns only the mailboxes that have a special use (RFC 6154).
            found = attributes_to_uses(self._list([b'LIST (SPECIAL-USE) "" "*"']))
        if not found:
            # RFC 6154 §2: the attributes MAY also appear in a plain LIST (Gmail, SPECIAL-USE alone).
            listing = self.list_mailboxes()
            found = attributes_to_uses(listing)
        if self.has("X-GM-EXT-1") and "\\All" in found and "\\Archive" not in found:
            # Gmail archives to All Mail, whatever the account's language calls it, and marks no
            # \Archive (imap/gmail.py): \All stands for it, and no second LIST looks for names.
            found = {**found, "\\Archive": found["\\All"]}
        if any(use not in found for use in ("\\Archive", "\\Trash")):
            found = names_to_uses(listing if listing is not None else self.list_mailboxes(), found)
        self._special_use = found
        return dict(found)

    # -- closing ------------------------------------------------------------------------------------

    def logout(self) -> None:
        """LOGOUT and close the socket; never raises (the connection may already be gone)."""
        if self._closed:
            return
        self._closed = True
        if not self._dead:
            try:
                self._call("LOGOUT", self._client.logout)
            except Exception as exc:
                log.debug("%s: logout failed: %s", self._account, exc)
        self._shutdown()

    def close(self) -> None:
        """Same as logout(): never CLOSE, which would expunge (RFC 9051 §6.4.1)."""
        self.logout()

    def _shutdown(self) -> None:
        self._dead = True
        self._closed = True
        with contextlib.suppress(Exception):
            self._client.shutdown()

    def __enter__(self) -> ImapSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.logout()

    def __repr__(self) -> str:
        return f"ImapSession(account={self._account!r}, host={self._host!r})"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _namespaces(data: list[Any]) -> tuple[list[tuple[str, str | None]], ...]:
    """A NAMESPACE answer (RFC 2342 §5) -> its personal, other users' and shared groups, each a
    list of (prefix, delimiter), empty for NIL: prefixes in modified UTF-7 decoded, as
    imapclient's namespace() reads them."""
    groups = [
        _pairs([(imap_utf7.decode(p), d, *rest) for p, d, *rest in item] if item else None)
        for item in parse_response(data)
    ]
    return tuple([*groups, [], [], []][:3])


def _pairs(group: Any) -> list[tuple[str, str | None]]:
    """One NAMESPACE list as imapclient parsed it -> [(prefix, delimiter)] (RFC 2342 §5)."""
    return [(_text(p), None if d is None else _text(d)) for p, d, *_ in group or ()]
