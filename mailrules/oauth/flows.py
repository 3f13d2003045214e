"""The three ways `mailrules auth login` obtains an account's first tokens: authorization code with
PKCE and a loopback redirect (RFC 8252), device code (RFC 8628), client credentials."""

from __future__ import annotations

import html
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mailrules.oauth.client import DeviceAuthorization, TokenClient
from mailrules.oauth.errors import OAuthError, TokenEndpointUnavailable, printable
from mailrules.oauth.store import Tokens

log = logging.getLogger(__name__)

#: How often a device-code poll may fail for network reasons before the login gives up.
DEVICE_POLL_FAILURES = 5
_PAGE = (
    "<!doctype html><meta charset=utf-8><title>mailrules</title>"
    "<p>{message}</p><p>You can close this window and return to the terminal.</p>"
)


def login_client_credentials(client: TokenClient) -> Tokens:
    """RFC 6749 §4.4: app-only tokens (Microsoft 365: IMAP.AccessAsApp, scope `.../.default`)."""
    return client.client_credentials()


def login_device_code(
    client: TokenClient,
    show: Callable[[DeviceAuthorization], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Tokens:
    """RFC 8628: get a user code, `show` it (with the verification URL), poll until the user has
    approved it. `authorization_pending` waits, `slow_down` adds 5 s to the interval (§3.5);
    `access_denied` and `expired_token` end the login with an OAuthError."""
    device = client.device_authorization()
    show(device)
    interval = max(device.interval, 0.0)
    deadline = clock() + device.expires_in
    failures = 0
    while True:
        sleep(interval)
        try:
            return client.poll_device(device)
        except TokenEndpointUnavailable as exc:
            failures += 1
            if failures >= DEVICE_POLL_FAILURES:
                raise
            log.warning("device code poll failed (%s); trying again", exc)
        except OAuthError as exc:
            if exc.error == "authorization_pending":
                pass
            elif exc.error == "slow_down":
                interval += 5.0
            elif exc.error == "expired_token":
                raise OAuthError(
                    "the device code expired before it was approved; run the login again", error=exc.error
                ) from None
            elif exc.error == "access_denied":
                raise OAuthError("the login was denied at the verification page", error=exc.error) from None
            else:
                raise
        if clock() >= deadline:
            raise OAuthError(
                "the device code expired before it was approved; run the login again", error="expired_token"
            )


def login_authorization_code(
    client: TokenClient,
    show: Callable[[str], None],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 300.0,
) -> Tokens:
    """RFC 6749 §4.1 + RFC 7636 (S256) + RFC 8252 §7.3: listen on a loopback port, `show` the
    authorization URL (open a browser, or print it for `--no-browser`), take the redirect that
    brings the code, check its state, exchange the code with the verifier.

    `host` goes into the redirect URI and is where the listener binds (127.0.0.1 by default,
    RFC 8252 §8.3); `port` 0 takes a free one. OAuthError when the user refuses, the state does not
    match, or no redirect arrives within `timeout` seconds."""
    with _RedirectListener(host, port) as listener:
        authority = f"[{host}]" if ":" in host else host
        request = client.authorization_request(f"http://{authority}:{listener.port}/")
        show(request.url)
        params = listener.wait(timeout)
    if params is None:
        raise OAuthError(f"no redirect from the browser within {timeout:.0f} s; run the login again")
    if params.get("state") != request.state:
        # RFC 6749 §10.12: a redirect that is not the answer to our request (CSRF) is ignored.
        raise OAuthError("the redirect's state does not match the request; run the login again")
    if "error" in params:
        description = params.get("error_description", "")
        raise OAuthError(
            f"the authorization server said {printable(params['error'])}"
            + (f": {printable(description)[:300]}" if description else ""),
            error=params["error"],
        )
    code = params.get("code")
    if not code:
        raise OAuthError("the redirect carried no authorization code")
    return client.exchange_code(code, request)


class _RedirectListener:
    """A one-shot HTTP listener on a loopback port, served from a thread: the first request with a
    `code` or an `error` in its query is kept, answered with a short page, and ends the wait."""

    def __init__(self, host: str, port: int) -> None:
        self._done = threading.Event()
        self.params: dict[str, str] | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return  # the request line carries the authorization code: never to stderr

            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                if ("code" not in query and "error" not in query) or outer._done.is_set():
                    self._answer(404, "Nothing to see here.")
                    return
                outer.params = query
                ok = "code" in query
                self._answer(200, "mailrules is logged in." if ok else "The login was not completed.")
                outer._done.set()

            def _answer(self, status: int, message: str) -> None:
                body = _PAGE.format(message=html.escape(message)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        try:
            self._server = (_Server6 if ":" in host else ThreadingHTTPServer)((host, port), Handler)
        except OSError as exc:
            raise OAuthError(f"cannot listen on {host}:{port} for the redirect: {exc.strerror}") from None
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        server = self._server
        self._thread = threading.Thread(  # a short poll: the login ends as soon as the code is in
            target=lambda: server.serve_forever(poll_interval=0.1), name="oauth-redirect", daemon=True
        )

    def __enter__(self) -> _RedirectListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def wait(self, timeout: float) -> dict[str, str] | None:
        return self.params if self._done.wait(timeout) else None


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6
