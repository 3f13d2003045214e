"""An OAuth2 authorization server for the test suite: HS256 JWT access tokens, rotating refresh tokens,
the device, authorization-code (PKCE) and client-credentials grants, on a loopback port in a thread.

What a test can do with it (the HTTP side follows RFC 6749, 7636, 8628; errors are the RFC's JSON):

- `grant(user)`: mint tokens directly (the "refresh token obtained elsewhere" case);
- `revoke(user)` / `expire_refresh_tokens()`: the next refresh gets `invalid_grant`;
- `approve(user_code, user)` / `deny(user_code)`: act for the person at the device's verification page;
- GET `authorization_url?...` (urllib acts as the browser): 302 to the loopback redirect with code+state;
- `fail_next(n, "503"|"drop")`: the next n requests get a 503 or a closed connection;
- `issued` (every access and refresh token, in order), `all_secrets()` (those plus codes and client secrets:
  what a test greps every output for), `requests` (a Counter per grant type or endpoint).

`key` is the HS256 key Dovecot's oauth2 passdb validates the access tokens with (`dovecot_key_line()`).
The clock (`clock`) is injectable for the device grant's timing; JWT times are always wall-clock,
because Dovecot checks them against its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_CLIENT = "mailrules-test"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode_jwt(claims: dict[str, Any], key: bytes) -> str:
    """A compact JWS (RFC 7515) with HS256; no `kid`, so Dovecot looks the key up as `default`."""
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def decode_jwt(token: str, key: bytes) -> dict[str, Any]:
    """The claims of a token `encode_jwt` made with `key`; ValueError when the signature is wrong."""
    signing_input, _, signature = token.rpartition(".")
    expected = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(b64url(expected), signature):
        raise ValueError("bad signature")
    payload = signing_input.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier)))."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


class OAuthFailure(Exception):
    """An error answer of the token or device endpoint (RFC 6749 §5.2)."""

    def __init__(self, error: str, status: int = 400, description: str = "") -> None:
        super().__init__(error)
        self.error, self.status, self.description = error, status, description


@dataclass
class Client:
    client_id: str
    secret: str | None = None  # None: a public client (no authentication, RFC 6749 §2.1)
    app_user: str | None = None  # the mailbox a client_credentials token is for (the `email` claim)


@dataclass
class RefreshGrant:
    user: str
    client_id: str
    scope: str
    expires_at: float | None
    active: bool = True


@dataclass
class CodeGrant:
    user: str
    client_id: str
    scope: str
    redirect_uri: str
    challenge: str
    method: str
    expires_at: float


@dataclass
class DeviceGrant:
    client_id: str
    scope: str
    user_code: str
    expires_at: float
    interval: int
    last_poll: float
    user: str | None = None  # set by approve()
    denied: bool = False
    done: bool = False


@dataclass
class Failures:
    remaining: int = 0
    mode: str = "503"
    served: int = 0


@dataclass
class OAuthTestServer:
    """The server state and its test hooks; `start()`/`stop()` (or `with`) run the HTTP side."""

    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    issuer: str = ""  # the `iss` claim; default: the server's URL (another server may share a Dovecot)
    access_lifetime: float = 3600.0
    refresh_lifetime: float | None = None  # None: refresh tokens do not expire
    rotate_refresh: bool = True
    device_interval: int = 5
    device_lifetime: float = 600.0
    code_lifetime: float = 60.0
    scope: str = "imap"
    authorize_user: str = "user@example.org"  # whom the authorization endpoint logs in as
    clock: Callable[[], float] = time.time
    issued: list[str] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    clients: dict[str, Client] = field(default_factory=dict)
    failures: Failures = field(default_factory=Failures)
    deny_authorization: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _refresh: dict[str, RefreshGrant] = field(default_factory=dict)
    _codes: dict[str, CodeGrant] = field(default_factory=dict)
    _devices: dict[str, DeviceGrant] = field(default_factory=dict)
    _other_secrets: list[str] = field(default_factory=list)
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.clients.setdefault(DEFAULT_CLIENT, Client(DEFAULT_CLIENT))
        self._httpd = _Httpd((HOST, 0), _Handler)
        self._httpd.oauth = self

    # -- addresses ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None
        port: int = self._httpd.server_address[1]
        return port

    @property
    def url(self) -> str:
        """The base of every endpoint (and the `iss` claim unless `issuer` is set)."""
        return f"http://{HOST}:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def device_url(self) -> str:
        return f"{self.url}/device"

    @property
    def authorization_url(self) -> str:
        return f"{self.url}/authorize"

    # -- running ------------------------------------------------------------------------------------

    def start(self) -> OAuthTestServer:
        assert self._httpd is not None
        httpd = self._httpd
        # A short poll interval: stop() returns at once instead of after up to half a second.
        self._thread = threading.Thread(
            target=lambda: httpd.serve_forever(poll_interval=0.05), name="oauth-test", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            if self._thread is not None:
                self._httpd.shutdown()
                self._thread.join(timeout=10)
            self._httpd.server_close()

    def __enter__(self) -> OAuthTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test hooks ---------------------------------------------------------------------------------

    def add_client(self, client_id: str, secret: str | None = None, app_user: str | None = None) -> Client:
        client = Client(client_id, secret, app_user)
        with self._lock:
            self.clients[client_id] = client
            if secret:
                self._other_secrets.append(secret)
        return client

    def grant(
        self,
        user: str,
        *,
        client_id: str = DEFAULT_CLIENT,
        scope: str | None = None,
        lifetime: float | None = None,
    ) -> dict[str, Any]:
        """Tokens for `user` as a token response would carry them (`access_token`, `refresh_token`...)."""
        with self._lock:
            return self._tokens(user, client_id, scope or self.scope, refresh=True, lifetime=lifetime)

    def access_token(
        self,
        user: str,
        *,
        lifetime: float | None = None,
        scope: str | None = None,
        not_before: float | None = None,
        key: bytes | None = None,
    ) -> str:
        """A bare access token (no refresh token); `lifetime` may be negative (already expired)."""
        with self._lock:
            return self._jwt(user, DEFAULT_CLIENT, scope or self.scope, lifetime, not_before, key)

    def revoke(self, user: str | None = None) -> int:
        """Revoke every refresh token (of `user`); returns how many were still active."""
        with self._lock:
            hit = [g for g in self._refresh.values() if g.active and user in (None, g.user)]
            for g in hit:
                g.active = False
            return len(hit)

    def expire_refresh_tokens(self) -> None:
        with self._lock:
            for g in self._refresh.values():
                g.expires_at = self.clock() - 1

    def approve(self, user_code: str, user: str) -> None:
        """The person at the verification page entered `user_code` and logged in as `user`."""
        with self._lock:
            self._device_by_user_code(user_code).user = user

    def deny(self, user_code: str) -> None:
        with self._lock:
            self._device_by_user_code(user_code).denied = True

    def pending_user_codes(self) -> list[str]:
        with self._lock:
            return [d.user_code for d in self._devices.values() if d.user is None and not d.done]

    def fail_next(self, count: int, mode: str = "503") -> None:
        """The next `count` requests (any endpoint) get HTTP 503 (`"503"`) or a dropped connection
        (`"drop"`: the socket closes without an answer)."""
        if mode not in ("503", "drop"):
            raise ValueError(mode)
        with self._lock:
            self.failures = Failures(count, mode)

    def all_secrets(self) -> list[str]:
        """Every secret this server handed out or knows: tokens, codes, device codes, client secrets."""
        with self._lock:
            return [*self.issued, *self._codes, *self._devices, *self._other_secrets]

    def active_refresh_tokens(self, user: str | None = None) -> list[str]:
        with self._lock:
            now = self.clock()
            return [
                t
                for t, g in self._refresh.items()
                if g.active and user in (None, g.user) and (g.expires_at is None or g.expires_at > now)
            ]

    # -- the grants ---------------------------------------------------------------------------------

    def _jwt(
        self,
        user: str,
        client_id: str,
        scope: str,
        lifetime: float | None,
        not_before: float | None = None,
        key: bytes | None = None,
    ) -> str:
        wall = time.time()
        now = int(wall)
        life = self.access_lifetime if lifetime is None else lifetime
        claims = {
            "iss": self.issuer or self.url,
            "sub": user,
            "email": user,
            "scope": scope,
            "client_id": client_id,
            # exp rounded up: never before the `expires_in` the token response announces (a client
            # counting from before its request must never hold a token the server thinks expired)
            "iat": now,
            "nbf": int(not_before) if not_before is not None else now,
            "exp": math.ceil(wall + life),
            "jti": secrets.token_hex(8),
        }
        token = encode_jwt(claims, key or self.key)
        self.issued.append(token)
        return token

    def _tokens(
        self, user: str, client_id: str, scope: str, *, refresh: bool, lifetime: float | None = None
    ) -> dict[str, Any]:
        life = self.access_lifetime if lifetime is None else lifetime
        out: dict[str, Any] = {
            "access_token": self._jwt(user, client_id, scope, life),
            "token_type": "Bearer",
            "expires_in": int(life),
            "scope": scope,
        }
        if refresh:
            token = secrets.token_urlsafe(24)
            expires = None if self.refresh_lifetime is None else self.clock() + self.refresh_lifetime
            self._refresh[token] = RefreshGrant(user, client_id, scope, expires)
            self.issued.append(token)
            out["refresh_token"] = token
        return out

    def token_request(self, form: dict[str, str], basic: tuple[str, str] | None) -> dict[str, Any]:
        """The token endpoint (RFC 6749 §3.2): raises OAuthFailure for an error answer."""
        grant_type = form.get("grant_type", "")
        client = self._authenticate(form, basic)
        if grant_type == "refresh_token":
            return self._refresh_grant(client, form)
        if grant_type == "authorization_code":
            return self._code_grant(client, form)
        if grant_type == DEVICE_GRANT:
            return self._device_grant(client, form)
        if grant_type == "client_credentials":
            if client.secret is None:
                raise OAuthFailure("unauthorized_client", description="public clients cannot use this grant")
            return self._tokens(
                client.app_user or client.client_id,
                client.client_id,
                form.get("scope") or self.scope,
                refresh=False,
            )
        raise OAuthFailure("unsupported_grant_type")

    def _authenticate(self, form: dict[str, str], basic: tuple[str, str] | None) -> Client:
        secret: str | None
        if basic is not None:
            client_id, secret = basic
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret")
        client = self.clients.get(client_id)
        if client is None:
            raise OAuthFailure("invalid_client", 401, "unknown client")
        if client.secret is not None and not hmac.compare_digest(client.secret, secret or ""):
            raise OAuthFailure("invalid_client", 401, "client authentication failed")
        return client

    def _refresh_grant(self, client: Client, form: dict[str, str]) -> dict[str, Any]:
        grant = self._refresh.get(form.get("refresh_token", ""))
        if grant is None or not grant.active or grant.client_id != client.client_id:
            raise OAuthFailure("invalid_grant", description="refresh token unknown, used or revoked")
        if grant.expires_at is not None and grant.expires_at <= self.clock():
            raise OAuthFailure("invalid_grant", description="refresh token expired")
        if self.rotate_refresh:
            grant.active = False  # rotation: each use issues a new one and invalidates this one
            return self._tokens(grant.user, client.client_id, grant.scope, refresh=True)
        out = self._tokens(grant.user, client.client_id, grant.scope, refresh=False)
        return out

    def _code_grant(self, client: Client, form: dict[str, str]) -> dict[str, Any]:
        grant = self._codes.pop(form.get("code", ""), None)  # single use
        if grant is None or grant.client_id != client.client_id or grant.expires_at <= self.clock():
            raise OAuthFailure("invalid_grant", description="code unknown, used or expired")
        if form.get("redirect_uri") != grant.redirect_uri:
            raise OAuthFailure("invalid_grant", description="redirect_uri differs from the request's")
        if grant.challenge and s256(form.get("code_verifier", "")) != grant.challenge:
            raise OAuthFailure("invalid_grant", description="PKCE verification failed")
        return self._tokens(grant.user, client.client_id, grant.scope, refresh=True)

    def _device_grant(self, client: Client, form: dict[str, str]) -> dict[str, Any]:
        grant = self._devices.get(form.get("device_code", ""))
        if grant is None or grant.client_id != client.client_id or grant.done:
            raise OAuthFailure("invalid_grant", description="device code unknown or used")
        now = self.clock()
        if grant.expires_at <= now:
            raise OAuthFailure("expired_token")
        if grant.denied:
            raise OAuthFailure("access_denied")
        too_fast = now - grant.last_poll < grant.interval
        grant.last_poll = now
        if too_fast:
            grant.interval += 5  # RFC 8628 §3.5: slow_down adds 5 seconds to every later poll
            raise OAuthFailure("slow_down")
        if grant.user is None:
            raise OAuthFailure("authorization_pending")
        grant.done = True
        return self._tokens(grant.user, client.client_id, grant.scope, refresh=True)

    def device_request(self, form: dict[str, str], basic: tuple[str, str] | None) -> dict[str, Any]:
        """The device authorization endpoint (RFC 8628 §3.1-3.2)."""
        client = self._authenticate(form, basic)
        device_code = secrets.token_urlsafe(24)
        letters = "BCDFGHJKLMNPQRSTVWXZ"  # §6.1: no vowels, no look-alikes
        raw = "".join(secrets.choice(letters) for _ in range(8))
        user_code = f"{raw[:4]}-{raw[4:]}"
        now = self.clock()
        self._devices[device_code] = DeviceGrant(
            client.client_id,
            form.get("scope") or self.scope,
            user_code,
            now + self.device_lifetime,
            self.device_interval,
            now,
        )
        verify = f"{self.url}/device/verify"
        return {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verify,
            "verification_uri_complete": f"{verify}?user_code={user_code}",
            "expires_in": int(self.device_lifetime),
            "interval": self.device_interval,
        }

    def authorize(self, query: dict[str, str]) -> str:
        """The authorization endpoint (RFC 6749 §4.1.1, RFC 7636): the Location to redirect to.

        No login page: the request is approved as `authorize_user` (or `login_hint`) unless
        `deny_authorization` is set. A bad client or redirect_uri raises OAuthFailure (shown, not
        redirected, as §4.1.2.1 requires)."""
        client = self.clients.get(query.get("client_id", ""))
        if client is None:
            raise OAuthFailure("invalid_client", 400, "unknown client")
        redirect_uri = query.get("redirect_uri", "")
        parts = urllib.parse.urlsplit(redirect_uri)
        # RFC 8252 §7.3: loopback redirects over http, any port.
        if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
            raise OAuthFailure("invalid_request", 400, "redirect_uri must be an http loopback address")
        state = query.get("state", "")

        def back(**params: str) -> str:
            if state:
                params["state"] = state
            sep = "&" if parts.query else "?"
            return f"{redirect_uri}{sep}{urllib.parse.urlencode(params)}"

        if query.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return back(error="invalid_request", error_description="PKCE with S256 is required")
        if self.deny_authorization:
            return back(error="access_denied")
        code = secrets.token_urlsafe(24)
        user = query.get("login_hint") or self.authorize_user
        self._codes[code] = CodeGrant(
            user,
            client.client_id,
            query.get("scope") or self.scope,
            redirect_uri,
            query["code_challenge"],
            "S256",
            self.clock() + self.code_lifetime,
        )
        return back(code=code)

    def _device_by_user_code(self, user_code: str) -> DeviceGrant:
        for grant in self._devices.values():
            if grant.user_code == user_code:
                return grant
        raise KeyError(user_code)

    def _take_failure(self, counted: str) -> str | None:
        with self._lock:
            self.requests[counted] += 1
            if self.failures.remaining <= 0:
                return None
            self.failures.remaining -= 1
            self.failures.served += 1
            return self.failures.mode


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    oauth: OAuthTestServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Httpd

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes request lines (codes, device codes) to stderr: keep them out of outputs.
        return

    def _send(self, status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(status)
        ctype = "application/json" if isinstance(body, dict) else "text/plain; charset=utf-8"
        self.send_header("Content-Type", ctype)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _failed(self, counted: str) -> bool:
        """Count the request under `counted`; True when the failure switch answered it."""
        mode = self.server.oauth._take_failure(counted)
        if mode == "drop":
            self.close_connection = True
            self.connection.shutdown(2)  # SHUT_RDWR: the client sees the connection end, no answer
            return True
        if mode == "503":
            self._send(503, "temporarily unavailable\n", {"Retry-After": "0"})
            return True
        return False

    def _form(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8")
        form = dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))
        basic = None
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            user, _, password = base64.b64decode(auth[6:]).decode("utf-8").partition(":")
            # RFC 6749 §2.3.1: both parts are form-urlencoded before the Basic encoding.
            basic = (urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password))
        return form, basic

    def do_POST(self) -> None:
        form, basic = self._form()
        path = urllib.parse.urlsplit(self.path).path
        counted = {"/token": form.get("grant_type") or "(none)", "/device": "device_authorization"}
        if self._failed(counted.get(path, path)):
            return
        oauth = self.server.oauth
        try:
            with oauth._lock:
                if path == "/token":
                    body = oauth.token_request(form, basic)
                elif path == "/device":
                    body = oauth.device_request(form, basic)
                else:
                    self._send(404, "not found\n")
                    return
        except OAuthFailure as exc:
            error = {"error": exc.error}
            if exc.description:
                error["error_description"] = exc.description
            self._send(exc.status, error)
            return
        self._send(200, body)

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        if self._failed("authorize" if parts.path == "/authorize" else parts.path):
            return
        oauth = self.server.oauth
        query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        if parts.path == "/authorize":
            try:
                with oauth._lock:
                    location = oauth.authorize(query)
            except OAuthFailure as exc:
                self._send(exc.status, f"{exc.error}: {exc.description}\n")
                return
            self._send(302, "redirecting\n", {"Location": location})
        elif parts.path == "/device/verify" and "user" in query:
            try:
                oauth.approve(query.get("user_code", ""), query["user"])
            except KeyError:
                self._send(404, "no such code\n")
                return
            self._send(200, "approved\n")
        else:
            self._send(404, "not found\n")
