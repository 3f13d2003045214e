"""`state =` (a SQLite file or a PostgreSQL URL), `state_password_file` and `[cluster]`, validated.

A URL's password never appears in a message or in the settings' text: it is split off into a
Secret (`PostgresUrl.password`), and errors quote the URL without it.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from mailrules.config import env as _env
from mailrules.config.locate import KeyPath
from mailrules.config.model import ClusterSettings, PostgresUrl, Secret
from mailrules.config.names import control_problem
from mailrules.config.schema import CLUSTER, DEFAULT_LEASE_SECONDS, DEFAULT_STATE, LEASE_SECONDS, Kind

SCHEMES = ("postgresql", "postgres")
#: PostgreSQL's application_name keeps 63 bytes; the replica's name goes into it.
REPLICA_MAX = 48


class Context(Protocol):
    """What the loader's context offers this module (mailrules/config/context.py `Context`)."""

    env: Mapping[str, str]
    config_dir: Path

    def error(self, path: KeyPath, message: str, at: KeyPath | None = None) -> None: ...
    def warn(self, path: KeyPath, message: str) -> None: ...
    def check_keys(self, table: dict[str, Any], path: KeyPath, schema: dict[str, Kind]) -> None: ...
    def get(self, table: dict[str, Any], path: KeyPath, key: str, kind: Kind) -> Any: ...
    def text(self, table: dict[str, Any], path: KeyPath, key: str) -> str | None: ...
    def file_path(self, table: dict[str, Any], path: KeyPath, key: str) -> Path | None: ...
    def subtable(self, table: dict[str, Any], path: KeyPath, key: str) -> dict[str, Any] | None: ...
    def resolve(self, value: str) -> Path: ...


def split_url(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password) of a `postgresql://` URL; the password may be
    in the user part (percent-encoded) or a `password=` parameter."""
    parts = urlsplit(url)
    password: str | None = None
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        user, _, secret = userinfo.partition(":")
        password, netloc = unquote(secret), f"{user}@{hostport}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k != "password"]
    if len(kept) != len(query):
        password = next(v for k, v in query if k == "password")
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(kept), parts.fragment)), password


def state_settings(raw: dict[str, Any], cx: Context) -> tuple[Path | PostgresUrl, ClusterSettings]:
    """The state (a resolved SQLite path, or a PostgreSQL URL with its password apart) and the
    `[cluster]` settings; problems are reported on `cx` (the defaults stand in for bad values)."""
    text = cx.text(raw, (), "state")
    state: Path | PostgresUrl = cx.resolve(DEFAULT_STATE)
    if text is not None and "\x00" in text:
        cx.error(("state",), "a path must not contain NUL")
    elif text is not None and "://" in text:
        url = _url(text, raw, cx)
        if url is not None:
            state = url
    elif text is not None:
        state = cx.resolve(text)
    if isinstance(state, Path) and "state_password_file" in raw:
        cx.error(("state_password_file",), 'applies only to a PostgreSQL state (state = "postgresql://...")')
    cluster = _cluster(raw, cx)
    if isinstance(state, Path) and "cluster" in raw:
        cx.warn(("cluster",), "applies only to a PostgreSQL state: with SQLite one daemon runs alone")
    return state, cluster


def _url(text: str, raw: dict[str, Any], cx: Context) -> PostgresUrl | None:
    bare, in_url = split_url(text)
    scheme = bare.partition("://")[0]
    if scheme not in SCHEMES:
        # Never echo the URL as given: it may hold a password.
        cx.error(("state",), f"a URL must start with postgresql://, got {scheme!r}://")
        return None
    problem = control_problem(text)
    if problem is not None:
        cx.error(("state",), f"the URL {problem}")
        return None
    password: Secret | None = None if in_url is None else Secret(in_url, "the state URL")
    if "state_password_file" in raw:
        file = cx.file_path(raw, (), "state_password_file")
        if file is None:
            return None
        if in_url is not None:
            cx.error(("state_password_file",), "the URL in `state` holds a password already: give one")
            return None
        try:
            value = _env.read_value_file(file)
        except _env.ValueFileError as exc:
            cx.error(("state_password_file",), f"cannot read {file}: {exc}")
            return None
        if not value:
            cx.error(("state_password_file",), f"the password from {file} is empty")
            return None
        password = Secret(value, f"state_password_file {file}")
    return PostgresUrl(bare, password)


def _cluster(raw: dict[str, Any], cx: Context) -> ClusterSettings:
    default = ClusterSettings(replica=_host_name(), lease_seconds=DEFAULT_LEASE_SECONDS)
    table = cx.subtable(raw, (), "cluster")
    if table is None:
        return default
    p: KeyPath = ("cluster",)
    cx.check_keys(table, p, CLUSTER)
    replica = cx.text(table, p, "replica")
    if replica is not None:
        problem = control_problem(replica)
        if problem is not None:
            cx.error((*p, "replica"), f"the name {problem}")
            replica = None
        elif len(replica.encode()) > REPLICA_MAX:
            cx.error((*p, "replica"), f"at most {REPLICA_MAX} bytes, got {len(replica.encode())}")
            replica = None
    seconds = cx.get(table, p, "lease_seconds", "number")
    low, high = LEASE_SECONDS
    if seconds is not None and not (math.isfinite(seconds) and low <= seconds <= high):
        cx.error((*p, "lease_seconds"), f"must be from {low} to {high} seconds, got {seconds}")
        seconds = None
    return ClusterSettings(
        replica=default.replica if replica is None else replica,
        lease_seconds=default.lease_seconds if seconds is None else float(seconds),
    )


def _host_name() -> str:
    """The default replica name: the host name (a Kubernetes pod's name), cut to REPLICA_MAX."""
    name = socket.gethostname() or "mailrules"
    return name.encode()[:REPLICA_MAX].decode(errors="ignore")
