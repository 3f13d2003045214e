"""`[accounts.NAME.oauth2]`: an account's OAuth2 keys, validated, with its provider's preset applied."""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, cast

from mailrules.config import env as _env
from mailrules.config.locate import KeyPath
from mailrules.config.model import AuthMode, OAuth2Flow, OAuth2Mechanism, OAuth2Settings, Secret
from mailrules.config.schema import (
    AUTH_MODES,
    CLIENT_SECRET_KEYS,
    MICROSOFT_SHARED_TENANTS,
    OAUTH2,
    OAUTH2_FLOWS,
    OAUTH2_MECHANISMS,
    OAUTH2_PRESETS,
    REFRESH_TOKEN_KEYS,
    SECRET_KEYS,
    Kind,
)

LOOPBACK = ("127.0.0.1", "::1", "localhost")
GOOGLE_MAIL_SCOPE = "https://mail.google.com/"
# A tenant goes into the endpoints' path: a domain name or a GUID, nothing that changes the URL.
_TENANT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_ENDPOINT_FOR_FLOW = {"authorization_code": "authorization_url", "device_code": "device_authorization_url"}


class Context(Protocol):
    """What the loader's context offers this module (mailrules/config/context.py `Context`)."""

    env: Mapping[str, str]
    origins: dict[KeyPath, str]
    tokens_dir: Path

    def error(self, path: KeyPath, message: str, at: KeyPath | None = None) -> None: ...
    def warn(self, path: KeyPath, message: str) -> None: ...
    def check_keys(self, table: dict[str, Any], path: KeyPath, schema: dict[str, Kind]) -> None: ...
    def get(self, table: dict[str, Any], path: KeyPath, key: str, kind: Kind) -> Any: ...
    def text(self, table: dict[str, Any], path: KeyPath, key: str) -> str | None: ...
    def choice(
        self, table: dict[str, Any], path: KeyPath, key: str, allowed: tuple[str, ...]
    ) -> str | None: ...
    def file_path(self, table: dict[str, Any], path: KeyPath, key: str) -> Path | None: ...
    def clean(self, path: KeyPath, value: str | None) -> str | None: ...


def default_token_store(tokens_dir: Path, account: str) -> Path:
    """`tokens_dir/ACCOUNT.json`; a name that is no safe file name gets one, with a hash that
    keeps two such names apart (`a/b` -> `a_b-1a2b3c4d.json`)."""
    if _FILE_NAME.fullmatch(account) and len(account) <= 100:
        return tokens_dir / f"{account}.json"
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", account)[:60]
    digest = hashlib.sha256(account.encode("utf-8")).hexdigest()[:8]
    return tokens_dir / f"{safe}-{digest}.json"


def endpoint_problem(url: str) -> str | None:
    """Why `url` cannot be an OAuth2 endpoint: https, or http to a loopback address only."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        return f"'{url}' is not a URL"
    if any(c.isspace() or not c.isprintable() for c in url):
        return f"'{url}' is not a URL"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host in LOOPBACK:
        return None
    return f"expected an https URL (http only to 127.0.0.1, ::1 or localhost), got '{url}'"


def oauth2_settings(
    name: str, table: dict[str, Any] | None, account: KeyPath, cx: Context, provider: str | None
) -> OAuth2Settings | None:
    """The OAuth2 settings of an account with `auth = "oauth2"`; None after reporting what is wrong."""
    p: KeyPath = (*account, "oauth2")
    if table is None:
        cx.error(
            p,
            'required with auth = "oauth2": a table with at least client_id '
            "(and token_url unless the provider gives it)",
            at=(*account, "auth"),
        )
        return None
    cx.check_keys(table, p, OAUTH2)
    preset: dict[str, Any] = OAUTH2_PRESETS.get(provider or "", {})
    ok = True

    client_id = cx.clean((*p, "client_id"), cx.text(table, p, "client_id"))
    if "client_id" not in table:
        cx.error((*p, "client_id"), "required (the application (client) ID of your app registration)")
    tenant = _tenant(table, p, cx, preset)
    flow = cast(OAuth2Flow | None, cx.choice(table, p, "flow", OAUTH2_FLOWS))
    chosen = flow is not None  # said in the file: its endpoint must be there
    if flow is None:
        ok = ok and "flow" not in table
        flow = preset.get("flow", "authorization_code")
    mechanism = cast(OAuth2Mechanism | None, cx.choice(table, p, "mechanism", OAUTH2_MECHANISMS))
    ok = ok and (mechanism is not None or "mechanism" not in table)

    client_secret = _secret(table, p, cx, CLIENT_SECRET_KEYS, "client secret")
    refresh_token = _secret(table, p, cx, REFRESH_TOKEN_KEYS, "refresh token")
    if flow == "client_credentials":
        if client_secret is None and not any(k in table for k in CLIENT_SECRET_KEYS):
            cx.error(
                p,
                'flow = "client_credentials" needs a client secret: set client_secret, '
                "client_secret_file or client_secret_env",
                at=(*p, "flow"),
            )
            ok = False
        if any(k in table for k in REFRESH_TOKEN_KEYS):
            cx.error(
                p,
                "the client_credentials flow uses no refresh token",
                at=next((*p, k) for k in REFRESH_TOKEN_KEYS if k in table),
            )
            ok = False
        if tenant in MICROSOFT_SHARED_TENANTS:
            cx.error(
                (*p, "tenant"),
                f"the client_credentials flow needs your tenant (its domain or ID), not '{tenant}'",
            )
            ok = False

    urls: dict[str, str | None] = {}
    for key in ("token_url", "authorization_url", "device_authorization_url"):
        urls[key] = _endpoint(table, p, cx, key, preset, tenant)
    if urls["token_url"] is None and "token_url" not in table:
        cx.error((*p, "token_url"), "required (no provider preset gives it)")
    wanted = _ENDPOINT_FOR_FLOW.get(flow)
    if wanted is not None and urls[wanted] is None and chosen and wanted not in table:
        cx.error(
            (*p, wanted), f'required with flow = "{flow}" (no provider preset gives it)', at=(*p, "flow")
        )
        ok = False

    scopes = _scopes(table, p, cx, preset, flow)
    if scopes is None:
        ok = False
        scopes = ()
    if flow == "device_code" and GOOGLE_MAIL_SCOPE in scopes:
        cx.error(
            (*p, "flow"),
            f"Google does not grant the mail scope ({GOOGLE_MAIL_SCOPE}) to the device "
            'flow; use flow = "authorization_code" (`mailrules auth login --no-browser` prints '
            "the URL to open elsewhere)",
        )
        ok = False

    token_store = cx.file_path(table, p, "token_store")
    if token_store is None:
        ok = ok and "token_store" not in table
        token_store = default_token_store(cx.tokens_dir, name)

    token_url = urls["token_url"]
    if not ok or client_id is None or token_url is None:
        return None
    if (client_secret is None and any(k in table for k in CLIENT_SECRET_KEYS)) or (
        refresh_token is None and any(k in table for k in REFRESH_TOKEN_KEYS)
    ):
        return None  # reported by _secret
    return OAuth2Settings(
        client_id=client_id,
        token_url=token_url,
        token_store=token_store,
        flow=flow,
        scopes=scopes,
        client_secret=client_secret,
        refresh_token=refresh_token,
        authorization_url=urls["authorization_url"],
        device_authorization_url=urls["device_authorization_url"],
        authorize_params=tuple(preset.get("authorize_params", ())),
        tenant=tenant,
        mechanism=mechanism or "auto",
    )


def _tenant(table: dict[str, Any], p: KeyPath, cx: Context, preset: dict[str, Any]) -> str | None:
    value = cx.text(table, p, "tenant")
    if value is None:
        return cast("str | None", preset.get("tenant"))
    if "tenant" not in preset:
        cx.error((*p, "tenant"), 'only for provider "microsoft" (or "outlook")')
        return None
    if not _TENANT.fullmatch(value):
        cx.error((*p, "tenant"), f"expected a domain name or a tenant ID, got {value!r}")
        return None
    return value


def _endpoint(
    table: dict[str, Any], p: KeyPath, cx: Context, key: str, preset: dict[str, Any], tenant: str | None
) -> str | None:
    value = cx.text(table, p, key)
    if value is None:
        url = preset.get(key)
        return None if url is None else str(url).format(tenant=tenant or "common")
    problem = endpoint_problem(value)
    if problem is not None:
        cx.error((*p, key), problem)
        return None
    return value


def _scopes(
    table: dict[str, Any], p: KeyPath, cx: Context, preset: dict[str, Any], flow: str
) -> tuple[str, ...] | None:
    given = cx.get(table, p, "scopes", "strlist")
    if given is None:
        if "scopes" in table:
            return None
        key = "app_scopes" if flow == "client_credentials" and "app_scopes" in preset else "scopes"
        return tuple(preset.get(key, ()))
    bad = [s for s in given if not _SCOPE.fullmatch(s)]
    if bad:
        cx.error(
            (*p, "scopes"), f"{bad[0]!r} is not a scope (one word of printable ASCII, no quote or backslash)"
        )
        return None
    return tuple(dict.fromkeys(given))


def file_or_env_value(table: dict[str, Any], p: KeyPath, cx: Context, key: str) -> tuple[str, str] | None:
    """The value `key` of `table` points to, a `*_file` key (the file's content) or a `*_env` one
    (the environment variable it names), and its source for messages (`KEY FILE`, `$VAR`); None
    after an error (reported; it never shows the value)."""
    kp = (*p, key)
    if key.endswith("_file"):
        file = cx.file_path(table, p, key)
        if file is None:
            return None
        try:
            return _env.read_value_file(file), f"{key} {file}"
        except _env.ValueFileError as exc:
            cx.error(kp, f"cannot read {file}: {exc}")
            return None
    var = cx.text(table, p, key)
    if var is None:
        return None
    value = cx.env.get(var)
    if value is None:
        cx.error(kp, f"the environment variable {var} is not set")
        return None
    return value, f"${var}"


def _secret(
    table: dict[str, Any], p: KeyPath, cx: Context, keys: tuple[str, ...], what: str
) -> Secret | None:
    """The one value of `keys` (`x`, `x_file`, `x_env`: whichever are in `keys`), or None (unset,
    or unreadable after an error that never shows the value)."""
    given = [k for k in keys if k in table]
    if len(given) > 1:
        cx.error(p, f"set only one of {', '.join(keys)} (found {', '.join(given)})", at=(*p, given[-1]))
        return None
    if not given:
        return None
    key = given[0]
    kp = (*p, key)
    value: str | None
    if key.endswith(("_file", "_env")):
        found = file_or_env_value(table, p, cx, key)
        if found is None:
            return None
        value, source = found
    else:
        value = cx.get(table, p, key, "str")
        origin = cx.origins.get(kp, "")
        source = origin if origin.startswith("$") else key
    if value == "":
        cx.error(kp, f"the {what} from {source} is empty" if source != key else "must not be empty")
        return None
    if value is not None and any(c.isspace() or not c.isprintable() for c in value):
        cx.error(kp, f"the {what} from {source} contains spaces or control characters")
        return None
    return None if value is None else Secret(value, source)


def account_auth(
    name: str, t: dict[str, Any], p: KeyPath, cx: Context, provider: str | None
) -> tuple[AuthMode | None, OAuth2Settings | None]:
    """An account's `auth` (None when it is none of AUTH_MODES: reported) and, for "oauth2", its
    `[oauth2]` table (None after an error)."""
    auth = cast(AuthMode | None, cx.choice(t, p, "auth", AUTH_MODES))
    if auth is None and "auth" in t:
        return None, None
    if auth is None or auth == "password":
        if "oauth2" in t:
            cx.error((*p, "oauth2"), 'set auth = "oauth2" on the account to use these settings')
        return "password", None
    if any(k in t for k in SECRET_KEYS):
        cx.error(
            p,
            'auth = "oauth2" logs in with a token: remove the password',
            at=next((*p, k) for k in SECRET_KEYS if k in t),
        )
    table = cx.get(t, p, "oauth2", "table")
    return auth, oauth2_settings(name, table, p, cx, provider)
