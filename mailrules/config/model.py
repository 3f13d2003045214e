"""The frozen settings objects the loader builds, and `Secret`, a string that never prints."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from mailrules.bounds import DEFAULT_BOUNDS, Bounds

TlsMode = Literal["implicit", "starttls", "none"]
LogFormat = Literal["text", "json"]
AuthMode = Literal["password", "oauth2"]
NotifyMode = Literal["auto", "off"]
OAuth2Flow = Literal["authorization_code", "device_code", "client_credentials"]
OAuth2Mechanism = Literal["auto", "xoauth2", "oauthbearer"]

REDACTED = "***"


class Secret:
    """A password or token: `reveal()` gives the value; `repr`, `str` and format give `Secret('***')`."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "") -> None:
        self._value = value
        # Where the value came from ("password_file /run/secrets/x", "$VAR"): for error messages
        # about a failed login, never the value itself.
        self.source = source

    def reveal(self) -> str:
        """The secret value; call it only where the value is sent to a server."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{REDACTED}')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        # Constant-time, and only against another Secret: `secret == "guess"` is always False,
        # so neither timing nor an assertion message can tell anything about the value.
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    def __hash__(self) -> int:
        return hash((Secret, self._value))


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Where `/metrics`, `/healthz` and `/readyz` are served; `listen = ""` disables them."""

    listen: str = "127.0.0.1:9464"

    @property
    def address(self) -> tuple[str, int] | None:
        """`(host, port)` to bind, or None when disabled; `":9464"` binds every interface."""
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return (host or "0.0.0.0", int(port))


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """`[limits]`: bounds no message can push mailrules past (docs/operations.md, "Hostile mail")."""

    #: mailboxes one run (or the daemon's arrivals in one hour) may create per account
    mailboxes_created_per_run: int = 50
    #: forwards and redirects to one address per hour per account
    forwards_per_address_per_hour: int = 20
    #: decoded bytes of one text part, and of all of a message's text, that body/text search
    part_text_bytes: int = DEFAULT_BOUNDS.part_text_bytes
    message_text_bytes: int = DEFAULT_BOUNDS.message_text_bytes
    #: seconds the rules may spend evaluating one message in one pass
    evaluation_seconds: float = DEFAULT_BOUNDS.evaluation_seconds

    @property
    def bounds(self) -> Bounds:
        """The bounds on one message's evaluation (mailrules/bounds.py)."""
        return Bounds(self.part_text_bytes, self.message_text_bytes, self.evaluation_seconds)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """The SMTP submission server an account's `forward` and `redirect` actions use."""

    host: str
    port: int
    tls: TlsMode
    username: str | None
    password: Secret | None
    from_: str
    allow_insecure: bool = False
    #: log in with AUTH XOAUTH2 as `username`, with the account's OAuth2 access token
    oauth2: bool = False


@dataclass(frozen=True, slots=True)
class OAuth2Settings:
    """`[accounts.NAME.oauth2]`, presets applied: who the client is, where its authorization
    server is, how `mailrules auth login` gets the first tokens, where they are kept."""

    client_id: str
    token_url: str
    token_store: Path
    flow: OAuth2Flow = "authorization_code"
    scopes: tuple[str, ...] = ()
    client_secret: Secret | None = None
    #: a refresh token obtained elsewhere (`refresh_token_file`/`_env`): used while the store has none
    refresh_token: Secret | None = None
    authorization_url: str | None = None
    device_authorization_url: str | None = None
    #: extra parameters of the authorization URL (Google: access_type=offline, prompt=consent)
    authorize_params: tuple[tuple[str, str], ...] = ()
    tenant: str | None = None
    mechanism: OAuth2Mechanism = "auto"


@dataclass(frozen=True, slots=True)
class AccountSettings:
    """One IMAP account, named by its table: `[accounts.work]` is the account "work"."""

    name: str
    host: str
    port: int
    tls: TlsMode
    username: str
    password: Secret | None  # None with auth = "oauth2"
    ca_file: Path | None = None
    watch: tuple[str, ...] = ()
    archive: str | None = None
    trash: str | None = None
    create_mailboxes: bool = True
    max_connections: int = 5
    allow_insecure: bool = False
    provider: str | None = None
    poll_interval: float = 60.0
    #: IDLE is re-issued after this long; a DONE or NOOP unanswered within `idle_timeout` ends the
    #: connection as stalled (docs/operations.md, "Silent connections")
    idle_renew_seconds: float = 540.0
    idle_timeout_seconds: float = 30.0
    #: "auto": one NOTIFY connection watches every mailbox where the server allows it (RFC 5465);
    #: "off": IDLE per mailbox (docs/operations.md, "Watching")
    notify: NotifyMode = "auto"
    smtp: SmtpSettings | None = None
    auth: AuthMode = "password"
    oauth2: OAuth2Settings | None = None


@dataclass(frozen=True, slots=True)
class PostgresUrl:
    """`state = "postgresql://..."`: the URL without its password (what messages show), and the
    password from the URL or `state_password_file` (None: libpq's PGPASSWORD or ~/.pgpass)."""

    url: str
    password: Secret | None = None

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """`[cluster]`: this daemon's name among those sharing a PostgreSQL state, and how long an
    account stays with a daemon that stopped renewing its lease."""

    replica: str = "mailrules"
    lease_seconds: float = 15.0


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration, validated; `warnings` are problems that do not stop a start.

    `state` is a SQLite file (Path) or a PostgreSQL database (PostgresUrl): open it with
    `mailrules.state.factory.open_state(settings)`."""

    rules: Path
    state: Path | PostgresUrl
    config_path: Path
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    accounts: dict[str, AccountSettings] = field(default_factory=dict)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    log_format: LogFormat = "text"
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    warnings: tuple[str, ...] = ()

    def redacted_dict(self) -> dict[str, Any]:
        """The settings as plain TOML-shaped data (for `mailrules config show`), passwords as `***`."""
        return {
            "config_path": str(self.config_path),
            "rules": str(self.rules),
            "state": str(self.state),
            "timezone": self.timezone.key,
            "log_format": self.log_format,
            "metrics": {"listen": self.metrics.listen},
            "limits": {
                "mailboxes_created_per_run": self.limits.mailboxes_created_per_run,
                "forwards_per_address_per_hour": self.limits.forwards_per_address_per_hour,
                "part_text_bytes": self.limits.part_text_bytes,
                "message_text_bytes": self.limits.message_text_bytes,
                "evaluation_seconds": self.limits.evaluation_seconds,
            },
            "cluster": {"replica": self.cluster.replica, "lease_seconds": self.cluster.lease_seconds},
            "accounts": {name: _account_dict(a) for name, a in self.accounts.items()},
        }


def _account_dict(a: AccountSettings) -> dict[str, Any]:
    out: dict[str, Any] = {
        "host": a.host,
        "port": a.port,
        "tls": a.tls,
        "username": a.username,
        "password": None if a.password is None else REDACTED,
        "ca_file": None if a.ca_file is None else str(a.ca_file),
        "watch": list(a.watch),
        "archive": a.archive,
        "trash": a.trash,
        "create_mailboxes": a.create_mailboxes,
        "max_connections": a.max_connections,
        "allow_insecure": a.allow_insecure,
        "provider": a.provider,
        "poll_interval": a.poll_interval,
        "idle_renew_seconds": a.idle_renew_seconds,
        "idle_timeout_seconds": a.idle_timeout_seconds,
        "notify": a.notify,
        "smtp": None,
    }
    if a.smtp is not None:
        s = a.smtp
        out["smtp"] = {
            "host": s.host,
            "port": s.port,
            "tls": s.tls,
            "username": s.username,
            "password": None if s.password is None else REDACTED,
            "from": s.from_,
            "allow_insecure": s.allow_insecure,
        }
        if s.oauth2:
            out["smtp"]["auth"] = "oauth2"
    out["auth"] = a.auth
    if a.oauth2 is not None:
        out["oauth2"] = _oauth2_dict(a.oauth2)
    return out


def _oauth2_dict(o: OAuth2Settings) -> dict[str, Any]:
    """The OAuth2 settings for `mailrules config`: secrets as `***` (present) or null, no token."""
    return {
        "client_id": o.client_id,
        "tenant": o.tenant,
        "flow": o.flow,
        "client_secret": None if o.client_secret is None else REDACTED,
        "token_url": o.token_url,
        "authorization_url": o.authorization_url,
        "device_authorization_url": o.device_authorization_url,
        "scopes": list(o.scopes),
        "refresh_token": None if o.refresh_token is None else REDACTED,
        "token_store": str(o.token_store),
        "mechanism": o.mechanism,
    }
