"""Read, merge and validate the configuration: TOML file + environment -> frozen `Settings`."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailrules.config import env as _env
from mailrules.config.cluster import state_settings
from mailrules.config.context import Context
from mailrules.config.locate import KeyPath, key_places
from mailrules.config.model import (
    AccountSettings,
    LimitsSettings,
    LogFormat,
    MetricsSettings,
    NotifyMode,
    Secret,
    Settings,
    SmtpSettings,
    TlsMode,
)
from mailrules.config.names import control_problem, escape, line_break_problem
from mailrules.config.oauth2 import account_auth, file_or_env_value
from mailrules.config.problems import render
from mailrules.config.reading import read_toml
from mailrules.config.schema import (
    ACCOUNT,
    DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_RULES,
    DEFAULT_TIMEZONE,
    EVALUATION_SECONDS,
    IMAP_PORTS,
    LIMITS,
    LOG_FORMATS,
    MAX_CONNECTIONS,
    METRICS,
    NOTIFY_MODES,
    PROVIDER_MAX_CONNECTIONS,
    PROVIDERS,
    SECRET_KEYS,
    SMTP,
    SMTP_PORTS,
    TEXT_BYTES,
    TLS_MODES,
    TOP,
    type_name,
)
from mailrules.config.timing import timing_settings
from mailrules.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("/etc/mailrules/mailrules.toml")

_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]*):(\d{1,5})")
# Ports whose protocol is well known: a mismatch with `tls` is almost always a mistake.
_IMAP_PORT_TLS = {993: "implicit", 143: "starttls"}
_SMTP_PORT_TLS = {465: "implicit", 587: "starttls", 25: "starttls"}


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load the configuration: `path`, else `$MAILRULES_CONFIG`, else /etc/mailrules/mailrules.toml.

    `env` (default `os.environ`) supplies `MAILRULES_*` overrides and `password_env` variables.
    Every problem found is collected; any problem raises one `ConfigError` listing them all in the
    rule errors' format (config/problems.py). Problems that do not prevent a start are returned in
    `Settings.warnings` for the caller to show.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is None:
        path = _env.config_path_from_env(environ) or DEFAULT_CONFIG_PATH
    shown = str(path)
    config_path = Path(path).expanduser().absolute()
    text, raw = read_toml(config_path, shown)

    cx = Context(shown, config_path.parent, environ)
    cx.places = key_places(text, shown)
    cx.origins.update({key: f"{shown}:{place.key.line}" for key, place in cx.places.items()})
    _env.apply_env(raw, cx.origins, environ, cx.config_dir, cx.errors)
    settings = _settings(raw, cx, config_path)
    if cx.errors:
        raise ConfigError(render(cx.errors, text))
    logger.debug(
        "configuration %s: %d account(s), %d warning(s)",
        config_path,
        len(settings.accounts),
        len(settings.warnings),
    )
    return settings


def _settings(raw: dict[str, Any], cx: Context, config_path: Path) -> Settings:
    cx.check_keys(raw, (), TOP)
    rules = cx.file_path(raw, (), "rules")
    state, cluster = state_settings(raw, cx)
    cx.tokens_dir = (state.parent if isinstance(state, Path) else cx.config_dir) / "tokens"
    timezone = ZoneInfo(DEFAULT_TIMEZONE)
    tz_name = cx.get(raw, (), "timezone", "str")
    if tz_name is not None:
        try:
            timezone = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            cx.error(("timezone",), f"unknown time zone '{tz_name}'")
    log_format = cx.choice(raw, (), "log_format", LOG_FORMATS) or "text"

    metrics = MetricsSettings(listen=DEFAULT_LISTEN)
    metrics_table = cx.subtable(raw, (), "metrics")
    if metrics_table is not None:
        cx.check_keys(metrics_table, ("metrics",), METRICS)
        listen = cx.get(metrics_table, ("metrics",), "listen", "str")
        if listen is not None:
            m = _LISTEN.fullmatch(listen)
            if listen and not (m and int(m.group(2)) <= 65535):
                cx.error(("metrics", "listen"), f"expected 'host:port' or '' to disable, got '{listen}'")
            else:
                metrics = MetricsSettings(listen=listen)

    limits = _limits(raw, cx)

    accounts: dict[str, AccountSettings] = {}
    accounts_table = cx.get(raw, (), "accounts", "accounts")
    seen: dict[str, str] = {}
    for name, table in (accounts_table or {}).items():
        path = ("accounts", name)
        if not isinstance(table, dict):
            cx.error(path, f"expected a table, got {type_name(table)}")
            continue
        if not name.strip():
            cx.error(path, "an account name must not be empty", key=True)
            continue
        if control_problem(name):
            cx.error(path, f"an account name {control_problem(name)}", key=True)  # it names logs, metrics
            continue
        if name.lower() in seen:
            cx.error(
                path,
                f"differs from accounts.{seen[name.lower()]} only in case, which the "
                "environment overrides cannot tell apart",
                key=True,
            )
        seen[name.lower()] = name
        account = _account(name, table, cx)
        if account is not None:
            accounts[name] = account
    if not accounts_table and not cx.errors:
        cx.warnings.append(f"{cx.shown}: no accounts are configured")

    return Settings(
        rules=rules or cx.resolve(DEFAULT_RULES),
        state=state,
        cluster=cluster,
        config_path=config_path,
        timezone=timezone,
        metrics=metrics,
        accounts=accounts,
        limits=limits,
        log_format=cast(LogFormat, log_format),
        warnings=tuple(escape(w) for w in sorted(cx.warnings, key=cx.order)),
    )


def _limits(raw: dict[str, Any], cx: Context) -> LimitsSettings:
    """`[limits]`, each key within its range; a missing key keeps its default (LimitsSettings)."""
    defaults = LimitsSettings()
    table = cx.subtable(raw, (), "limits")
    if table is None:
        return defaults
    p: KeyPath = ("limits",)
    cx.check_keys(table, p, LIMITS)
    created = cx.integer(table, p, "mailboxes_created_per_run", 0, 100_000)
    sends = cx.integer(table, p, "forwards_per_address_per_hour", 1, 100_000)
    part = cx.integer(table, p, "part_text_bytes", *TEXT_BYTES)
    message = cx.integer(table, p, "message_text_bytes", *TEXT_BYTES)
    seconds = cx.get(table, p, "evaluation_seconds", "number")
    low, high = EVALUATION_SECONDS
    if seconds is not None and not (math.isfinite(seconds) and low <= seconds <= high):
        cx.error((*p, "evaluation_seconds"), f"must be from {low} to {high} seconds, got {seconds}")
        seconds = None
    return LimitsSettings(
        mailboxes_created_per_run=defaults.mailboxes_created_per_run if created is None else created,
        forwards_per_address_per_hour=defaults.forwards_per_address_per_hour if sends is None else sends,
        part_text_bytes=defaults.part_text_bytes if part is None else part,
        message_text_bytes=defaults.message_text_bytes if message is None else message,
        evaluation_seconds=defaults.evaluation_seconds if seconds is None else float(seconds),
    )


def _account(name: str, t: dict[str, Any], cx: Context) -> AccountSettings | None:
    p: KeyPath = ("accounts", name)
    cx.check_keys(t, p, ACCOUNT)
    preset: dict[str, Any] = {}
    provider = cx.get(t, p, "provider", "str")
    if provider is not None:
        if provider.lower() in PROVIDERS:
            provider = provider.lower()
            preset = PROVIDERS[provider]
        else:
            known = ", ".join(sorted(PROVIDERS))
            cx.error((*p, "provider"), f"unknown provider '{provider}' (known: {known})")
            provider = None

    host = cx.clean((*p, "host"), cx.text(t, p, "host"))
    if host is None and "host" not in t:
        host = preset.get("host")
        if host is None and provider is None and "provider" not in t:
            cx.error((*p, "host"), f"required (or set provider to one of {', '.join(sorted(PROVIDERS))})")
    tls, port = _tls_and_port(t, p, cx, preset, IMAP_PORTS, _IMAP_PORT_TLS)
    username = cx.clean((*p, "username"), cx.text(t, p, "username"))
    if "username" not in t:
        cx.error((*p, "username"), "required")
    auth, oauth2 = account_auth(name, t, p, cx, provider)
    password = _secret(t, p, cx, required=True) if auth == "password" else None
    problem = None if password is None else line_break_problem(password.reveal())
    if password is not None and problem is not None:
        # Never the value: say where it came from. IMAP LOGIN (quoted or literal) cannot carry it.
        origin = "" if password.source == "password" else f" from {password.source}"
        cx.error(next(((*p, k) for k in SECRET_KEYS if k in t), p), f"the password{origin} {problem}")
        password = None
    allow_insecure = cx.get(t, p, "allow_insecure", "bool") or False
    if tls == "none" and not allow_insecure:
        cx.warn(
            (*p, "tls"),
            f"'none' would send the {'token' if oauth2 else 'password'} unencrypted: "
            "login will be refused unless allow_insecure = true",
        )

    ca_file = cx.file_path(t, p, "ca_file")
    if ca_file is not None and not ca_file.exists():
        cx.warn((*p, "ca_file"), f"{ca_file} does not exist")
    watch = [name for name in cx.get(t, p, "watch", "strlist") or [] if cx.mailbox((*p, "watch"), name)]
    archive, trash = (
        cx.mailbox((*p, key), cx.text(t, p, key)) if key in t else preset.get(key)
        for key in ("archive", "trash")
    )
    max_connections = cx.integer(t, p, "max_connections", *MAX_CONNECTIONS)
    cap = PROVIDER_MAX_CONNECTIONS.get(provider or "")
    if max_connections is not None and cap is not None and max_connections > cap:
        cx.error(
            (*p, "max_connections"),
            f"{provider} allows at most {cap} simultaneous IMAP connections "
            f"per account, your other mail clients included; got {max_connections}",
        )
        max_connections = None
    timing = timing_settings(t, p, cx)  # poll_interval, idle_renew_seconds, idle_timeout_seconds
    notify = cx.choice(t, p, "notify", NOTIFY_MODES) or "auto"

    create_mailboxes = cx.get(t, p, "create_mailboxes", "bool")
    if create_mailboxes is None:
        create_mailboxes = True  # language.md §4: created unless the account says false
    smtp: SmtpSettings | None = None
    smtp_table = cx.subtable(t, p, "smtp")
    if smtp_table is not None or ("smtp" not in t and preset):
        smtp = _smtp(smtp_table or {}, p, cx, preset, username, password, auth == "oauth2")

    if host is None or username is None or tls is None or port is None or not (password or oauth2):
        return None
    return AccountSettings(
        name=name,
        host=host,
        port=port,
        tls=tls,
        username=username,
        password=password,
        ca_file=ca_file,
        watch=tuple(watch),
        archive=archive,
        trash=trash,
        create_mailboxes=create_mailboxes,
        max_connections=max_connections or preset.get("max_connections") or DEFAULT_MAX_CONNECTIONS,
        allow_insecure=allow_insecure,
        provider=provider,
        **timing,
        notify=cast(NotifyMode, notify),
        smtp=smtp,
        auth=auth or "password",
        oauth2=oauth2,
    )


def _smtp(
    t: dict[str, Any],
    account: KeyPath,
    cx: Context,
    preset: dict[str, Any],
    account_username: str | None,
    account_password: Secret | None,
    oauth2: bool = False,
) -> SmtpSettings | None:
    p: KeyPath = (*account, "smtp")
    cx.check_keys(t, p, SMTP)
    smtp_preset: dict[str, Any] = preset.get("smtp", {})
    host = cx.clean((*p, "host"), cx.text(t, p, "host"))
    if host is None and "host" not in t:
        host = smtp_preset.get("host")
        if host is None:
            cx.error((*p, "host"), "required (or set provider on the account)")
    tls, port = _tls_and_port(t, p, cx, smtp_preset, SMTP_PORTS, _SMTP_PORT_TLS)
    username = cx.clean((*p, "username"), cx.text(t, p, "username"))
    password = _secret(t, p, cx, required=False)
    use_token = oauth2 and not any(k in t for k in SECRET_KEYS)  # AUTH XOAUTH2 with the account's token
    if password is None and not use_token and not any(k in t for k in SECRET_KEYS):
        if "username" in t:
            cx.error(
                p,
                "username is set but no password, password_file or password_env",
                at=(*p, "username"),
                key=True,
            )
        elif preset:
            # A provider's SMTP server takes the same credentials as its IMAP server.
            username, password = account_username, account_password
    elif username is None and "username" not in t:
        username = account_username
    allow_insecure = cx.get(t, p, "allow_insecure", "bool") or False
    if tls == "none" and not allow_insecure:
        cx.warn(
            (*p, "tls"),
            "'none' sends mail unencrypted: forward and redirect will refuse to send "
            "unless allow_insecure = true",
        )
    sender = cx.clean((*p, "from"), cx.text(t, p, "from"))
    if sender is not None and "@" not in sender:
        cx.error((*p, "from"), f"expected an e-mail address, got '{sender}'")
        sender = None
    if sender is None and "from" not in t:
        sender = next((u for u in (username, account_username) if u and "@" in u), None)
        if sender is None and account_username is not None:
            cx.error((*p, "from"), "required (the username is not an e-mail address)")
    if host is None or tls is None or port is None or sender is None:
        return None
    return SmtpSettings(
        host=host,
        port=port,
        tls=tls,
        username=username,
        password=password,
        from_=sender,
        allow_insecure=allow_insecure,
        oauth2=use_token,
    )


def _tls_and_port(
    t: dict[str, Any],
    p: KeyPath,
    cx: Context,
    preset: dict[str, Any],
    default_ports: dict[str, int],
    port_tls: dict[int, str],
) -> tuple[TlsMode | None, int | None]:
    """`tls` (default the preset's, else implicit) and `port` (default the preset's when its tls
    is the one in use, else the protocol's port for that tls)."""
    tls = cx.choice(t, p, "tls", TLS_MODES)
    if tls is None:
        if "tls" in t:
            return None, cx.integer(t, p, "port", 1, 65535)
        tls = preset.get("tls", "implicit")
    port = cx.integer(t, p, "port", 1, 65535)
    if port is None and "port" not in t:
        port = preset["port"] if preset.get("tls") == tls and "port" in preset else default_ports[tls]
    elif port is not None and port_tls.get(port, tls) not in (tls, "starttls" if tls == "none" else tls):
        cx.warn((*p, "port"), f"port {port} usually means tls = '{port_tls[port]}', but tls is '{tls}'")
    return cast(TlsMode, tls), port


def _secret(t: dict[str, Any], p: KeyPath, cx: Context, required: bool) -> Secret | None:
    """The one password of a table, from `password`, `password_file` or `password_env`."""
    given = [k for k in SECRET_KEYS if k in t]
    if len(given) > 1:
        cx.error(
            p,
            f"set only one of password, password_file, password_env (found {', '.join(given)})",
            at=max(((*p, k) for k in given), key=lambda kp: cx.order(cx.where(kp) + ":")),
            key=True,
        )
        return None
    if not given:
        if required:
            cx.error(p, "no password: set password, password_file or password_env")
        return None
    key = given[0]
    kp = (*p, key)
    origin = cx.origins.get(kp, "")
    value: str | None
    if key == "password":
        value = cx.get(t, p, key, "str")
        source = origin if origin.startswith("$") else "password"
    else:  # password_file, password_env
        found = file_or_env_value(t, p, cx, key)
        if found is None:
            return None
        value, source = found
    if value == "":
        cx.error(kp, f"the password from {source} is empty" if key != "password" else "must not be empty")
        return None
    return None if value is None else Secret(value, source)
