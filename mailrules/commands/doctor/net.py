"""Network probes for `mailrules doctor`: DNS, TCP, TLS details, a plain-language hint per failure, and
their rows (shared by the IMAP and SMTP probes)."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import importlib
import ipaddress
import os
import smtplib
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mailrules.commands.doctor.report import Check, Status
from mailrules.errors import ImapError, MailrulesError
from mailrules.imap.errors import classify

Service = Literal["IMAP", "SMTP"]
# (implicit TLS port, STARTTLS port) per service
PORTS: dict[Service, tuple[int, int]] = {"IMAP": (993, 143), "SMTP": (465, 587)}

# OpenSSL verify codes (X509_V_ERR_*) the hints tell apart
_EXPIRED = {10}
_NOT_YET_VALID = {9}
_UNTRUSTED = {18, 19, 20, 21, 2}
_MISMATCH = {62, 64}
#: A certificate that expires sooner than this many days is a WARN.
EXPIRY_WARN_DAYS = 1


class NoGreeting(MailrulesError):
    """The server sent no plaintext greeting in time, or something that is not one (a TLS record)."""


class StarttlsRefused(MailrulesError):
    """The server answered STARTTLS with NO or BAD (or does not know it)."""


class PlaintextRefused(MailrulesError):
    """tls = "none" without allow_insecure: mailrules refuses to send the password in clear text."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a hint needs to know about the server that failed; never the password, only its source."""

    service: Service
    host: str
    port: int
    tls: str
    username: str | None = None
    secret_source: str = ""


class Clock:
    """Milliseconds since creation, to one decimal."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def ms(self) -> float:
        return round((time.perf_counter() - self._t0) * 1000, 1)


# -- the hint classifier ----------------------------------------------------------------------


def _root(exc: BaseException) -> BaseException:
    """The original failure under mailrules' wrappers (ImapError is raised `from` it)."""
    seen = 0
    while isinstance(exc, MailrulesError) and exc.__cause__ is not None and seen < 5:
        exc, seen = exc.__cause__, seen + 1
    return exc


def _password_hint(ep: Endpoint) -> str:
    source = ep.secret_source
    where = "the password in the config file" if source in ("", "password") else f"the password from {source}"
    user = f"the username {ep.username!r} and " if ep.username else ""
    return f"check {user}{where} (a typo, an expired or rotated password, or an app password required)"


def diagnose(exc: BaseException, ep: Endpoint) -> tuple[str, str]:
    """(what went wrong, what to do about it) in plain language, for any failure talking to `ep`."""
    implicit, starttls = PORTS[ep.service]
    where = f"{ep.host}:{ep.port}"
    cause = _root(exc)
    text = str(cause) or type(cause).__name__
    if isinstance(cause, PlaintextRefused):
        return (
            'refused: tls = "none" would send the password unencrypted',
            f'use tls = "starttls" (port {starttls}) or tls = "implicit" (port {implicit}); only on loopback '
            "or a trusted network, set allow_insecure = true",
        )
    if isinstance(cause, NoGreeting):
        return (
            f"no {ep.service} greeting: {text}",
            f"port {ep.port} seems to speak implicit TLS (it waits for a TLS handshake): "
            f'use tls = "implicit" or port {starttls}',
        )
    if isinstance(cause, StarttlsRefused):
        return text, f'no STARTTLS on port {ep.port}: use tls = "implicit" (port {implicit})'
    if isinstance(cause, ssl.SSLCertVerificationError):
        return _cert_hint(cause, ep)
    if isinstance(cause, ssl.SSLError):
        reason = (getattr(cause, "reason", None) or "").upper()
        if "WRONG_VERSION_NUMBER" in reason or "wrong version number" in text.lower():
            return (
                "TLS handshake failed: wrong version number (the server answered in plaintext)",
                f'port {ep.port} speaks plaintext/STARTTLS: use tls = "starttls" or port {implicit}',
            )
        if isinstance(cause, ssl.SSLEOFError) or "EOF" in reason:
            return (
                f"the server closed the connection during the TLS handshake: {text}",
                "the port may not speak TLS, or the server refuses this TLS version or these ciphers",
            )
        if "ALERT_PROTOCOL_VERSION" in reason or "UNSUPPORTED_PROTOCOL" in reason:
            return f"TLS handshake failed: {text}", "the server offers no TLS version this machine accepts"
        return (f"TLS handshake failed: {text}", f'check that port {ep.port} speaks tls = "{ep.tls}"')
    if isinstance(cause, smtplib.SMTPAuthenticationError):
        reply = cause.smtp_error.decode("utf-8", "replace") if isinstance(cause.smtp_error, bytes) else ""
        return f"authentication failed: {cause.smtp_code} {reply}".rstrip(), _password_hint(ep)
    if isinstance(cause, smtplib.SMTPNotSupportedError):
        return f"not offered by the server: {text}", "the server lacks STARTTLS or AUTH on this port"
    if isinstance(cause, socket.gaierror):
        return (
            f"cannot resolve {ep.host!r}: {cause.strerror or text}",
            "check the host name for typos, and that this machine's DNS resolver works",
        )
    if isinstance(cause, ConnectionRefusedError):
        return (
            f"connection refused by {where}",
            f"nothing listens there: check host and port ({ep.service}: {implicit} for implicit TLS, "
            f"{starttls} for STARTTLS) and that the server runs; a firewall may also reject the connection",
        )
    if isinstance(cause, TimeoutError):
        return (
            f"no answer from {where} (timed out)",
            "a firewall may be dropping the packets, or the host or port is wrong",
        )
    if isinstance(cause, smtplib.SMTPServerDisconnected):
        return f"the server closed the connection: {text}", f'does port {ep.port} speak tls = "{ep.tls}"?'
    if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{where} is unreachable: {cause.strerror}", "no route to the host: check network and firewall"
    err = exc if isinstance(exc, ImapError) else classify(cause)
    if err.kind == "auth" or err.code == "AUTHENTICATIONFAILED" or "[AUTHENTICATIONFAILED]" in str(err):
        return f"authentication failed: {_server_text(str(err))}", _password_hint(ep)
    if isinstance(cause, OSError):
        return f"connection failed: {text}", "check host, port and firewall"
    return str(err), ""


def _server_text(message: str) -> str:
    """`account (host): login failed: b'[AUTH...] text'` -> `[AUTH...] text`."""
    text = message.rsplit("failed: ", 1)[-1].strip()
    if text[:2] in ("b'", 'b"') and text[-1:] == text[1]:
        text = text[2:-1]
    return text


def _cert_hint(exc: ssl.SSLCertVerificationError, ep: Endpoint) -> tuple[str, str]:
    code = getattr(exc, "verify_code", None)
    message = getattr(exc, "verify_message", None) or str(exc)
    low = message.lower()
    what = f"certificate failed verification: {message}"
    if code in _EXPIRED or "expired" in low:
        return what, (
            "the server's certificate has expired: its administrator must renew it "
            "(ca_file cannot make an expired certificate valid)"
        )
    if code in _NOT_YET_VALID or "not yet valid" in low:
        return what, "the certificate is not valid yet: check this machine's clock and the certificate"
    if code in _MISMATCH or "mismatch" in low:
        return what, (
            f"the certificate does not name {ep.host!r}: set host to a name the certificate lists "
            "(see SAN above), or fix the certificate; ca_file does not help here"
        )
    if code in _UNTRUSTED or "self-signed" in low or "self signed" in low or "issuer" in low:
        return what, (
            "the certificate is self-signed or from a private CA this machine does not trust: set "
            'ca_file = "/path/to/ca.pem" to the CA certificate that signed it (or to the self-signed '
            "certificate itself)"
        )
    return what, 'if the server uses a private CA, set ca_file = "/path/to/ca.pem"'


# -- DNS and TCP --------------------------------------------------------------------------------

SockAddr = tuple[Any, ...]


def resolve(host: str, port: int) -> list[tuple[int, SockAddr]]:
    """getaddrinfo for a TCP connection: (family, sockaddr), duplicates dropped, in resolver order."""
    out: list[tuple[int, SockAddr]] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if (family, sockaddr) not in out:
            out.append((family, tuple(sockaddr)))
    return out


def connect_first(addresses: list[tuple[int, SockAddr]], timeout: float) -> tuple[socket.socket, SockAddr]:
    """A socket connected to the first address that answers; raise the last failure if none does."""
    last: OSError = OSError("no address to connect to")
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        return sock, sockaddr
    raise last


def show_address(sockaddr: SockAddr) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


# -- TLS ------------------------------------------------------------------------------------------


def insecure_context() -> ssl.SSLContext:
    """For diagnosis only: accepts any certificate, so that we can say what it contains."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def read_line(sock: socket.socket, limit: int = 8192) -> bytes:
    """One line, byte by byte (no buffering: the TLS handshake must find the rest of the stream)."""
    data = bytearray()
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def imap_starttls(sock: socket.socket, greeting_timeout: float) -> None:
    """Read the greeting and ask for STARTTLS; the socket is then ready for the TLS handshake."""
    old = sock.gettimeout()
    sock.settimeout(greeting_timeout)
    try:
        greeting = read_line(sock)
    except TimeoutError:
        raise NoGreeting(f"nothing received within {greeting_timeout:g} s") from None
    finally:
        sock.settimeout(old)
    if not greeting:
        raise NoGreeting("the server closed the connection without a greeting")
    if not greeting.startswith((b"* OK", b"* PREAUTH")):
        shown = "a TLS record" if greeting[:1] in (b"\x15", b"\x16") else repr(greeting[:40])
        raise NoGreeting(f"received {shown} instead of '* OK'")
    sock.sendall(b"D1 STARTTLS\r\n")
    while True:
        line = read_line(sock)
        if not line:
            raise ImapError("the server closed the connection after STARTTLS", "reconnect")
        if line.startswith(b"D1 "):
            if not line[3:].upper().startswith(b"OK"):
                raise StarttlsRefused(f"STARTTLS refused: {line[3:].decode('utf-8', 'replace').strip()}")
            return


def decode_der(der: bytes) -> dict[str, Any]:
    """The getpeercert() dict of a certificate that was not verified (Python decodes only verified ones)."""
    # CPython's own decoder (what getpeercert() uses), reachable only through a private name.
    decoder: Callable[[str], dict[str, Any]] | None = getattr(
        importlib.import_module("_ssl"), "_test_decode_cert", None
    )
    if decoder is None:
        return {}
    fd, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(ssl.DER_cert_to_PEM_cert(der))
        return decoder(path)
    except (OSError, ValueError, ssl.SSLError):
        return {}
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _name(rdns: Any) -> str:
    pairs = {k: v for rdn in rdns or () for k, v in rdn}
    for key, label in (("commonName", "CN"), ("organizationName", "O")):
        if key in pairs:
            return f"{label}={pairs[key]}"
    return "?"


def hostname_matches(host: str, sans: list[tuple[str, str]]) -> bool:
    """RFC 6125 matching of `host` against SAN entries: IPs exactly, DNS names with a left-most wildcard."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    for kind, value in sans:
        if ip is not None:
            if kind == "IP Address":
                with contextlib.suppress(ValueError):
                    if ipaddress.ip_address(value.strip()) == ip:
                        return True
            continue
        if kind != "DNS":
            continue
        pattern, name = value.lower().rstrip("."), host.lower().rstrip(".")
        if pattern.startswith("*."):
            head, _, rest = name.partition(".")
            if head and rest == pattern[2:]:
                return True
        elif pattern == name:
            return True
    return False


def describe_tls(sock: ssl.SSLSocket, host: str, verified: bool) -> tuple[str, dict[str, Any]]:
    """Protocol, cipher and what the certificate says: one line and the same as data."""
    cert: dict[str, Any] = sock.getpeercert() or {}
    if not cert:
        der = sock.getpeercert(binary_form=True)
        cert = decode_der(der) if der else {}
    cipher = sock.cipher()
    sans = [(str(k), str(v)) for k, v in cert.get("subjectAltName", ())]
    info: dict[str, Any] = {
        "protocol": sock.version(),
        "cipher": cipher[0] if cipher else None,
        "subject": _name(cert.get("subject")),
        "san": [f"{'IP' if k == 'IP Address' else k}:{v}" for k, v in sans],
        "issuer": _name(cert.get("issuer")),
        "verified": verified,
    }
    if "notAfter" in cert:
        expires = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), dt.UTC)
        info["expires"] = expires.date().isoformat()
        info["days_left"] = (expires - dt.datetime.now(dt.UTC)).days
    info["hostname_matches"] = True if verified else hostname_matches(host, sans)
    parts = [f"{info['protocol']} {info['cipher']}", f"subject {info['subject']}"]
    if info["san"]:
        parts.append("SAN " + ", ".join(info["san"]))
    parts.append(f"issuer {info['issuer']}")
    if "days_left" in info:
        left = info["days_left"]
        when = "EXPIRED" if left < 0 else f"{left} day{'' if left == 1 else 's'} left"
        parts.append(f"expires {info['expires']} ({when})")
    parts.append(f"hostname {'matches' if info['hostname_matches'] else 'DOES NOT match'} {host}")
    return "; ".join(parts), info


# -- rows -----------------------------------------------------------------------------------------


def fail(name: str, exc: BaseException, ep: Endpoint, clock: Clock, status: Status = "FAIL") -> Check:
    """The row of a failed check: what went wrong and what to do about it (`diagnose`)."""
    result, hint = diagnose(exc, ep)
    return Check(name, status, result, clock.ms(), hint, {"error": type(exc).__name__})


def dns_tcp(
    ep: Endpoint, prefix: str, timeout: float, rows: list[Check], bad: Status
) -> tuple[Any, SockAddr] | None:
    """The DNS and TCP rows; the connected socket (the caller closes it) or None when either failed."""
    clock = Clock()
    try:
        addresses = resolve(ep.host, ep.port)
    except OSError as exc:
        rows.append(fail(f"{prefix}DNS", exc, ep, clock, bad))
        return None
    shown = ", ".join(str(a[1][0]) for a in addresses)
    rows.append(Check(f"{prefix}DNS", "OK", f"{ep.host} -> {shown}", clock.ms(), details={"found": shown}))
    clock = Clock()
    try:
        sock, sockaddr = connect_first(addresses, timeout)
    except OSError as exc:
        rows.append(fail(f"{prefix}TCP connect", exc, ep, clock, bad))
        return None
    rows.append(Check(f"{prefix}TCP connect", "OK", show_address(sockaddr), clock.ms()))
    return sock, sockaddr


#: Opens a TLS connection with the given context -> (the TLS socket, a function that closes it all).
TlsOpener = Callable[[ssl.SSLContext], tuple[ssl.SSLSocket, Callable[[], None]]]


def tls_row(
    name: str, host: str, open_tls: TlsOpener, ctx: ssl.SSLContext, ep: Endpoint, bad: Status
) -> Check:
    """Run `open_tls(ctx)` -> (SSLSocket, close); on a certificate failure look again without verifying."""
    clock = Clock()
    try:
        sock, close = open_tls(ctx)
    except ssl.SSLCertVerificationError as exc:
        row = fail(name, exc, ep, clock, bad)
        try:
            sock, close = open_tls(insecure_context())
            try:
                line, info = describe_tls(sock, host, verified=False)
            finally:
                close()
            row.result += f" | the server presented (NOT verified, for diagnosis only): {line}"
            row.details.update(info)
        except (OSError, MailrulesError, smtplib.SMTPException) as again:
            row.result += f" | a second, non-verifying look failed too: {again}"
        return row
    except (OSError, MailrulesError, smtplib.SMTPException) as exc:
        return fail(name, exc, ep, clock, bad)
    try:
        line, info = describe_tls(sock, host, verified=True)
    finally:
        close()
    ms = clock.ms()
    days = info.get("days_left")
    if days is not None and days < EXPIRY_WARN_DAYS:
        return Check(name, "WARN", line, ms, "the certificate expires within a day: renew it", info)
    return Check(name, "OK", line, ms, details=info)
