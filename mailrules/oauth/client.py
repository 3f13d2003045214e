"""The token endpoint and its siblings, through authlib: the only module that imports the OAuth2
library (authlib, over requests).

Why authlib: one maintained client covers every grant mailrules needs for every provider:
refresh, authorization code with PKCE (RFC 7636), client credentials, and the device grant's token
request (RFC 8628 §3.4), with the client authentication methods (`none`, `client_secret_post`,
`client_secret_basic`) done per RFC 6749 §2.3. msal and google-auth each serve one provider, and
mailrules must also talk to any RFC-abiding server (the test suite's, a self-hosted one). authlib
has no call for the device authorization request itself (RFC 8628 §3.1): that one POST is made
here on authlib's session with authlib's client authentication. Its requests integration is
used (synchronous, like the rest of mailrules; requests' timeouts bound every call).

Every response becomes `Tokens` at once (tokens as `Secret`); every failure becomes an
`OAuthError` whose message carries the RFC 6749 error code and a printable description, never a
token or the client secret.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError as AuthlibOAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE

from mailrules import __version__
from mailrules.config.model import Secret
from mailrules.oauth.errors import InvalidGrant, OAuthError, TokenEndpointUnavailable, printable
from mailrules.oauth.store import Tokens
from mailrules.redact import redact

T = TypeVar("T")

LOOPBACK = ("127.0.0.1", "::1", "localhost")
#: RFC 6749 §5.2 and RFC 8628 §3.5 codes that mean "not now" rather than "no".
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
AUTH_METHODS = ("client_secret_post", "client_secret_basic")


def check_endpoint(name: str, url: str) -> None:
    """ValueError unless `url` is https, or http to a loopback address (the test server, a local proxy)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in LOOPBACK:
        return
    raise ValueError(f"{name} must be an https URL (http only to 127.0.0.1, ::1 or localhost): {url!r}")


@dataclass(frozen=True)
class ClientSettings:
    """Where the authorization server is and who the client is. `client_secret` only for a
    confidential client (client credentials; Google's "desktop app" secret); `auth_method` is how
    it is sent. `authorize_params` go into the authorization URL (Google: access_type=offline)."""

    token_url: str
    client_id: str
    client_secret: Secret | None = None
    scopes: tuple[str, ...] = ()
    authorization_url: str | None = None
    device_authorization_url: str | None = None
    auth_method: str = "client_secret_post"
    authorize_params: tuple[tuple[str, str], ...] = ()
    timeout: float = 30.0

    def __post_init__(self) -> None:
        check_endpoint("token_url", self.token_url)
        for name in ("authorization_url", "device_authorization_url"):
            url = getattr(self, name)
            if url is not None:
                check_endpoint(name, url)
        if self.auth_method not in AUTH_METHODS:
            raise ValueError(f"auth_method must be one of {', '.join(AUTH_METHODS)}: {self.auth_method!r}")

    @property
    def scope(self) -> str | None:
        return " ".join(self.scopes) or None


@dataclass(frozen=True)
class AuthorizationRequest:
    """The URL to open in a browser, and what the code exchange needs from it."""

    url: str
    state: str
    verifier: Secret
    redirect_uri: str


@dataclass(frozen=True)
class DeviceAuthorization:
    """RFC 8628 §3.2: what to show the user, and the device code to poll with."""

    device_code: Secret
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


class TokenClient:
    """Requests to one authorization server for one client. Thread-safe: each call uses its own
    HTTP session (a refresh happens every hour or so; a kept-alive connection buys nothing)."""

    def __init__(self, settings: ClientSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock

    def __repr__(self) -> str:
        return f"TokenClient(token_url={self.settings.token_url!r}, client_id={self.settings.client_id!r})"

    # -- requests -----------------------------------------------------------------------------------

    def refresh(self, refresh_token: Secret) -> Tokens:
        """RFC 6749 §6. A response without a new refresh token keeps `refresh_token`."""
        tokens = self._token(
            lambda s: s.refresh_token(self.settings.token_url, refresh_token=refresh_token.reveal()),
            extra_secrets=(refresh_token.reveal(),),
        )
        if tokens.refresh_token is None:
            return Tokens(
                tokens.access_token,
                tokens.expires_at,
                tokens.obtained_at,
                refresh_token,
                tokens.scope,
                tokens.token_type,
            )
        return tokens

    def client_credentials(self) -> Tokens:
        """RFC 6749 §4.4 (app-only access: no user, no refresh token)."""
        if self.settings.client_secret is None:
            raise OAuthError("the client_credentials flow needs a client secret")
        return self._token(lambda s: s.fetch_token(self.settings.token_url, grant_type="client_credentials"))

    def authorization_request(self, redirect_uri: str) -> AuthorizationRequest:
        """RFC 6749 §4.1.1 with PKCE S256 (RFC 7636 §4): a fresh verifier and state each time."""
        if self.settings.authorization_url is None:
            raise OAuthError("no authorization endpoint is configured for the authorization_code flow")
        verifier = generate_token(64)  # 43-128 unreserved characters (RFC 7636 §4.1)
        with self._session(redirect_uri=redirect_uri, code_challenge_method="S256") as s:
            extra = dict(self.settings.authorize_params)
            url, state = s.create_authorization_url(
                self.settings.authorization_url, code_verifier=verifier, **extra
            )
        return AuthorizationRequest(url, state, Secret(verifier, "PKCE verifier"), redirect_uri)

    def exchange_code(self, code: str, request: AuthorizationRequest) -> Tokens:
        """RFC 6749 §4.1.3: the code the redirect brought, with the PKCE verifier."""
        return self._token(
            lambda s: s.fetch_token(
                self.settings.token_url,
                grant_type="authorization_code",
                code=code,
                redirect_uri=request.redirect_uri,
                code_verifier=request.verifier.reveal(),
            ),
            extra_secrets=(code, request.verifier.reveal()),
        )

    def device_authorization(self) -> DeviceAuthorization:
        """RFC 8628 §3.1-3.2: ask for a device code and a user code."""
        url = self.settings.device_authorization_url
        if url is None:
            raise OAuthError("no device authorization endpoint is configured for the device_code flow")

        def post(s: OAuth2Session) -> dict[str, Any]:
            data = {"scope": self.settings.scope} if self.settings.scope else {}
            auth = s.client_auth(s.token_endpoint_auth_method)
            response = s.post(url, data=data, auth=auth, headers={"Accept": "application/json"})
            return _json_answer(response)

        answer = self._call(post)
        try:
            return DeviceAuthorization(
                Secret(str(answer["device_code"]), "device code"),
                str(answer["user_code"]),
                str(answer.get("verification_uri") or answer["verification_url"]),  # Google's old name
                answer.get("verification_uri_complete"),
                float(answer.get("expires_in", 600)),
                float(answer.get("interval", 5)),  # §3.2: 5 seconds when absent
            )
        except (KeyError, TypeError, ValueError):
            raise OAuthError(
                "the device authorization answer lacks device_code, user_code or verification_uri"
            ) from None

    def poll_device(self, device: DeviceAuthorization) -> Tokens:
        """RFC 8628 §3.4. Raises OAuthError with `error` authorization_pending, slow_down,
        access_denied or expired_token as the server says (the caller loops)."""
        return self._token(
            lambda s: s.fetch_token(
                self.settings.token_url,
                grant_type=DEVICE_CODE_GRANT_TYPE,
                device_code=device.device_code.reveal(),
            ),
            extra_secrets=(device.device_code.reveal(),),
            scope=False,
        )

    # -- plumbing -----------------------------------------------------------------------------------

    def _session(self, *, scope: bool = True, **kwargs: Any) -> OAuth2Session:
        settings = self.settings
        secret = settings.client_secret.reveal() if settings.client_secret is not None else None
        session = OAuth2Session(
            client_id=settings.client_id,
            client_secret=secret,
            token_endpoint_auth_method=settings.auth_method if secret else "none",
            scope=settings.scope if scope else None,
            default_timeout=settings.timeout,
            **kwargs,
        )
        session.headers["User-Agent"] = f"mailrules/{__version__}"
        return session

    def _secrets(self, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        secret = self.settings.client_secret
        return (*extra, *((secret.reveal(),) if secret is not None else ()))

    def _token(
        self,
        fetch: Callable[[OAuth2Session], Mapping[str, Any]],
        *,
        extra_secrets: tuple[str, ...] = (),
        scope: bool = True,
    ) -> Tokens:
        started = self._clock()  # expiry counted from before the request: never later than the server's
        answer = self._call(fetch, extra_secrets, scope=scope)
        return tokens_from_response(answer, started, self.settings.scopes)

    def _call(
        self, fn: Callable[[OAuth2Session], T], extra_secrets: tuple[str, ...] = (), *, scope: bool = True
    ) -> T:
        secrets = self._secrets(extra_secrets)
        try:
            with self._session(scope=scope) as session:
                return fn(session)
        except AuthlibOAuthError as exc:
            raise _from_error_code(str(exc.error), exc.description, secrets) from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status >= 500 or status == 429:
                raise TokenEndpointUnavailable(f"the token endpoint answered HTTP {status}") from None
            raise OAuthError(f"the token endpoint answered HTTP {status}") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            reason = redact(str(exc), secrets)[:300]
            raise TokenEndpointUnavailable(
                f"cannot reach the token endpoint: {type(exc).__name__}: {printable(reason)}"
            ) from None
        except requests.RequestException as exc:
            raise OAuthError(f"token request failed: {type(exc).__name__}") from None
        except ValueError:
            # authlib: a 2xx whose body is not a JSON object (a captive portal, a proxy's page).
            raise TokenEndpointUnavailable("the token endpoint's answer is not a JSON object") from None


def _json_answer(response: requests.Response) -> dict[str, Any]:
    """A JSON object from a 2xx; an error object raises like authlib does for the token endpoint."""
    if response.status_code >= 500 or response.status_code == 429:
        response.raise_for_status()
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        response.raise_for_status()
        raise ValueError("not a JSON object")
    if "error" in answer:
        raise AuthlibOAuthError(error=str(answer["error"]), description=answer.get("error_description"))
    return answer


def _from_error_code(error: str, description: str | None, secrets: tuple[str, ...]) -> OAuthError:
    code = printable(error)[:80]
    text = f"{code}: {printable(redact(description, secrets))[:300]}" if description else code
    if error == "invalid_grant":
        return InvalidGrant(f"the authorization server refused the grant ({text})", error=error)
    if error in TRANSIENT_ERRORS:
        return TokenEndpointUnavailable(f"the authorization server is unavailable ({text})", error=error)
    return OAuthError(f"the authorization server said {text}", error=error)


def tokens_from_response(answer: Mapping[str, Any], now: float, requested: tuple[str, ...]) -> Tokens:
    """`Tokens` from a token response (RFC 6749 §5.1); OAuthError when it has no access token.
    No `scope` in the answer means the requested ones (§5.1: "if identical ... OPTIONAL")."""
    access = answer.get("access_token")
    if not isinstance(access, str) or not access:
        raise OAuthError("the token endpoint's answer has no access_token")
    refresh = answer.get("refresh_token")
    try:
        expires_in = float(answer["expires_in"]) if answer.get("expires_in") is not None else None
    except (TypeError, ValueError):
        expires_in = None
    scope = answer.get("scope")
    scopes = tuple(scope.split()) if isinstance(scope, str) else requested
    return Tokens(
        Secret(access, "token endpoint"),
        None if expires_in is None else now + expires_in,
        now,
        Secret(refresh, "token endpoint") if isinstance(refresh, str) and refresh else None,
        scopes,
        str(answer.get("token_type", "Bearer")),
    )
