"""What keys each table accepts, of which kind, and the provider presets."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

Kind = Literal["str", "path", "int", "number", "bool", "strlist", "table", "accounts"]

TOP: dict[str, Kind] = {
    "rules": "path",
    "state": "path",
    "state_password_file": "path",
    "timezone": "str",
    "log_format": "str",
    "metrics": "table",
    "limits": "table",
    "cluster": "table",
    "accounts": "accounts",
}
#: `[cluster]`: several daemons sharing a PostgreSQL state (config/cluster.py)
CLUSTER: dict[str, Kind] = {"replica": "str", "lease_seconds": "number"}
METRICS: dict[str, Kind] = {"listen": "str"}
#: `[limits]`: what one message, one run or one hour may cost (docs/operations.md, "Hostile mail")
LIMITS: dict[str, Kind] = {
    "mailboxes_created_per_run": "int",
    "forwards_per_address_per_hour": "int",
    "part_text_bytes": "int",
    "message_text_bytes": "int",
    "evaluation_seconds": "number",
}
ACCOUNT: dict[str, Kind] = {
    "provider": "str",
    "host": "str",
    "port": "int",
    "tls": "str",
    "username": "str",
    "password": "str",
    "password_file": "path",
    "password_env": "str",
    "ca_file": "path",
    "watch": "strlist",
    "archive": "str",
    "trash": "str",
    "create_mailboxes": "bool",
    "max_connections": "int",
    "allow_insecure": "bool",
    "poll_interval": "number",
    "idle_renew_seconds": "number",
    "idle_timeout_seconds": "number",
    "notify": "str",
    "smtp": "table",
    "auth": "str",
    "oauth2": "table",
}
SMTP: dict[str, Kind] = {
    "host": "str",
    "port": "int",
    "tls": "str",
    "username": "str",
    "password": "str",
    "password_file": "path",
    "password_env": "str",
    "from": "str",
    "allow_insecure": "bool",
}

#: `[accounts.NAME.oauth2]` (docs/configuration.md, "OAuth2"; mailrules/config/oauth2.py)
OAUTH2: dict[str, Kind] = {
    "client_id": "str",
    "tenant": "str",
    "flow": "str",
    "client_secret": "str",
    "client_secret_file": "path",
    "client_secret_env": "str",
    "token_url": "str",
    "authorization_url": "str",
    "device_authorization_url": "str",
    "scopes": "strlist",
    "refresh_token_file": "path",
    "refresh_token_env": "str",
    "token_store": "path",
    "mechanism": "str",
}

SECRET_KEYS = ("password", "password_file", "password_env")
CLIENT_SECRET_KEYS = ("client_secret", "client_secret_file", "client_secret_env")
REFRESH_TOKEN_KEYS = ("refresh_token_file", "refresh_token_env")
#: Keys whose values are never echoed in an error (environment overrides included).
HIDDEN_KEYS = frozenset({*SECRET_KEYS, *CLIENT_SECRET_KEYS, *REFRESH_TOKEN_KEYS})
# Keys whose default is "not set": an empty environment value unsets them.
OPTIONAL_KEYS = frozenset({"ca_file", "archive", "trash", "provider", "tenant", "token_store"})

TLS_MODES = ("implicit", "starttls", "none")
AUTH_MODES = ("password", "oauth2")
#: `notify`: watch every mailbox on one NOTIFY connection where the server allows it, or IDLE each
NOTIFY_MODES = ("auto", "off")
OAUTH2_FLOWS = ("authorization_code", "device_code", "client_credentials")
OAUTH2_MECHANISMS = ("auto", "xoauth2", "oauthbearer")
LOG_FORMATS = ("text", "json")
IMAP_PORTS = {"implicit": 993, "starttls": 143, "none": 143}
SMTP_PORTS = {"implicit": 465, "starttls": 587, "none": 25}
MAX_CONNECTIONS = (1, 50)
#: `[limits]` part_text_bytes and message_text_bytes (1 KiB to 1 GiB), evaluation_seconds
TEXT_BYTES = (1024, 1 << 30)
EVALUATION_SECONDS = (0.01, 3600.0)

DEFAULT_RULES = "rules.d"
DEFAULT_STATE = "state.db"
DEFAULT_LEASE_SECONDS = 15.0
#: `[cluster] lease_seconds`: from a takeover within a second to one within an hour
LEASE_SECONDS = (1.0, 3600.0)
DEFAULT_TIMEZONE = "UTC"
DEFAULT_LISTEN = "127.0.0.1:9464"
DEFAULT_POLL_INTERVAL = 60.0
#: IDLE renewal and the wait for an answer to DONE/NOOP (docs/operations.md, "Silent connections");
#: RFC 2177 §3: re-issue IDLE within 29 minutes, so neither may exceed that.
DEFAULT_IDLE_RENEW, DEFAULT_IDLE_TIMEOUT, IDLE_MAX_SECONDS = 540.0, 30.0, 29 * 60.0
DEFAULT_MAX_CONNECTIONS = 5


#: No preset names an archive or a trash: Gmail's names are localised ("[Google Mail]/Papierkorb")
#: and it marks them SPECIAL-USE (\All, \Trash), which a name here would override; a server that
#: marks nothing is asked by name, "[Gmail]/All Mail" included (imap/special_use.py).
PROVIDERS: dict[str, dict[str, Any]] = {
    "gmail": {
        "host": "imap.gmail.com",
        "port": 993,
        "tls": "implicit",
        "max_connections": 8,  # of Gmail's 15 (PROVIDER_MAX_CONNECTIONS): room for the user's clients
        "smtp": {"host": "smtp.gmail.com", "port": 587, "tls": "starttls"},
    },
    "outlook": {
        "host": "outlook.office365.com",
        "port": 993,
        "tls": "implicit",
        "smtp": {"host": "smtp.office365.com", "port": 587, "tls": "starttls"},
    },
    # The same servers as gmail and outlook, named after the identity platforms whose OAuth2
    # endpoints they bring (OAUTH2_PRESETS); all four take `auth = "oauth2"`.
    "google": {
        "host": "imap.gmail.com",
        "port": 993,
        "tls": "implicit",
        "max_connections": 8,
        "smtp": {"host": "smtp.gmail.com", "port": 587, "tls": "starttls"},
    },
    "microsoft": {
        "host": "outlook.office365.com",
        "port": 993,
        "tls": "implicit",
        "smtp": {"host": "smtp.office365.com", "port": 587, "tls": "starttls"},
    },
    "yahoo": {
        "host": "imap.mail.yahoo.com",
        "port": 993,
        "tls": "implicit",
        "smtp": {"host": "smtp.mail.yahoo.com", "port": 465, "tls": "implicit"},
    },
    "fastmail": {
        "host": "imap.fastmail.com",
        "port": 993,
        "tls": "implicit",
        "smtp": {"host": "smtp.fastmail.com", "port": 465, "tls": "implicit"},
    },
}

# Simultaneous IMAP connections a provider allows one account, the user's other clients included
# (imap/gmail.py, docs/operations.md): a max_connections above it is refused at load.
PROVIDER_MAX_CONNECTIONS: dict[str, int] = {"gmail": 15, "google": 15}

_MS = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
#: The authorization server of each provider that offers OAuth2 for IMAP and SMTP (imap-notes.md
#: (e)). `{tenant}` is the account's `tenant` (Microsoft: default "common").
OAUTH2_PRESETS: dict[str, dict[str, Any]] = {
    "google": {
        "authorization_url": "https://accounts.google.com/o/oauth2/v2/auth",
        "token_url": "https://oauth2.googleapis.com/token",
        "device_authorization_url": "https://oauth2.googleapis.com/device/code",
        # The one scope for IMAP and SMTP; offline access is asked with access_type, and
        # prompt=consent makes Google issue a refresh token again at a second login.
        "scopes": ("https://mail.google.com/",),
        "authorize_params": (("access_type", "offline"), ("prompt", "consent")),
        "flow": "authorization_code",
    },
    "microsoft": {
        "authorization_url": _MS + "/authorize",
        "token_url": _MS + "/token",
        "device_authorization_url": _MS + "/devicecode",
        "scopes": (
            "https://outlook.office.com/IMAP.AccessAsUser.All",
            "https://outlook.office.com/SMTP.Send",
            "offline_access",
        ),
        # client credentials (app-only): IMAP.AccessAsApp and SMTP.SendAsApp through .default
        "app_scopes": ("https://outlook.office365.com/.default",),
        "flow": "device_code",
        "tenant": "common",
    },
}
OAUTH2_PRESETS["gmail"] = OAUTH2_PRESETS["google"]
OAUTH2_PRESETS["outlook"] = OAUTH2_PRESETS["microsoft"]
#: Microsoft's tenants that are no tenant: the client credentials grant needs the real one.
MICROSOFT_SHARED_TENANTS = ("common", "organizations", "consumers")

_KIND_NAMES: dict[Kind, str] = {
    "str": "a string",
    "path": "a string (a path)",
    "int": "an integer",
    "number": "a number",
    "bool": "a boolean",
    "strlist": "an array of strings",
    "table": "a table",
    "accounts": "a table of accounts",
}


def kind_name(kind: Kind) -> str:
    """`"an integer"` for "int": the words of "expected ..."."""
    return _KIND_NAMES[kind]


def type_name(value: object) -> str:
    """What a TOML value is, in words: `"a string"`, `"an integer"`..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, dt.datetime):
        return "a date-time"
    if isinstance(value, dt.date):
        return "a date"
    if isinstance(value, dt.time):
        return "a time"
    return type(value).__name__


def matches_kind(value: object, kind: Kind) -> bool:
    """Whether a parsed TOML value has the type a key of `kind` needs."""
    if kind in ("str", "path"):
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "strlist":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, dict)
