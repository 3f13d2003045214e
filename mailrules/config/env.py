"""Environment overrides: `MAILRULES_ACCOUNTS__WORK__PORT=1993` sets `accounts.work.port`."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mailrules.config.locate import KeyPath, too_deep
from mailrules.config.problems import Problem
from mailrules.config.schema import (
    ACCOUNT,
    CLIENT_SECRET_KEYS,
    CLUSTER,
    HIDDEN_KEYS,
    LIMITS,
    METRICS,
    OAUTH2,
    OPTIONAL_KEYS,
    REFRESH_TOKEN_KEYS,
    SECRET_KEYS,
    SMTP,
    TOP,
    Kind,
)

PREFIX = "MAILRULES_"
ENV_CONFIG = "MAILRULES_CONFIG"
# Names under the prefix that are not configuration keys.
RESERVED = frozenset({ENV_CONFIG})

_TABLES: dict[str, dict[str, Kind]] = {
    "metrics": METRICS, "smtp": SMTP, "limits": LIMITS, "oauth2": OAUTH2, "cluster": CLUSTER,
}  # fmt: skip
# One value given several ways: the environment's way replaces the file's.
_SECRET_GROUPS = (SECRET_KEYS, CLIENT_SECRET_KEYS, REFRESH_TOKEN_KEYS)
_BARE = re.compile(r"[A-Za-z0-9_-]+")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def dotted(path: KeyPath) -> str:
    """A key path as TOML writes it: `accounts.work.port`, `accounts."my work".port`."""
    return ".".join(
        p if _BARE.fullmatch(p) else '"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in path
    )


def suggestion(key: str, known: Iterable[str]) -> str:
    """` (did you mean 'port'?)` when `key` looks like a typo of a known key, else ``."""
    import difflib  # only for a configuration with an unknown key

    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


#: A secret or `*_FILE` value is a line; past this it is not one (or it is /dev/zero).
MAX_VALUE_FILE_BYTES = 64 * 1024


class ValueFileError(ValueError):
    """Why a value file cannot be read: `No such file or directory`, `not valid UTF-8 text`..."""


def read_value_file(path: Path) -> str:
    """The text of a secret or `*_FILE` value file, without one trailing newline; raise ValueFileError."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_VALUE_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueFileError(exc.strerror or str(exc)) from None
    except ValueError:
        raise ValueFileError("the path contains a NUL") from None
    if len(data) > MAX_VALUE_FILE_BYTES:
        raise ValueFileError(f"larger than {MAX_VALUE_FILE_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueFileError("not valid UTF-8 text") from None
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def config_path_from_env(env: Mapping[str, str]) -> str | None:
    """`$MAILRULES_CONFIG` (the name matched case-insensitively), or None."""
    if env.get(ENV_CONFIG):
        return env[ENV_CONFIG]
    for name, value in env.items():
        if name.upper() == ENV_CONFIG and value:
            return value
    return None


def apply_env(
    raw: dict[str, Any],
    origins: dict[KeyPath, str],
    env: Mapping[str, str],
    config_dir: Path,
    errors: list[Problem],
) -> None:
    """Merge every `MAILRULES_*` variable of `env` into `raw`, recording `$NAME` as each key's origin.

    A secret key set from the environment replaces whichever secret key the file gave for the
    same table, so `MAILRULES_ACCOUNTS__WORK__PASSWORD` works over a file's `password_file`.
    """
    from_env: set[KeyPath] = set()
    for name in sorted(env):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in RESERVED:
            continue
        where = f"${name}"
        parts = [p.lower() for p in name[len(PREFIX) :].split("__")]
        if "" in parts or "___" in name:
            message = "malformed name: levels are separated by exactly two underscores"
            errors.append(Problem(message, where=where))
            continue
        target = _resolve(parts, raw, where, errors)
        if target is None:
            continue
        path, kind, via_file = target
        text = env[name]
        if via_file:
            file = config_dir / Path(text).expanduser()
            try:
                text = read_value_file(file)
            except ValueFileError as exc:
                errors.append(Problem(f"{dotted(path)}: cannot read {file}: {exc}", where=where))
                continue
        if text == "" and path[-1] in OPTIONAL_KEYS:
            _unset(raw, path)
            continue
        value = _parse(text, kind, path[-1] in HIDDEN_KEYS)
        if isinstance(value, _Bad):
            errors.append(Problem(f"{dotted(path)}: {value.message}", where=where))
            continue
        if _set(raw, origins, path, value, where):
            from_env.add(path)
    for path in from_env:
        for group in _SECRET_GROUPS:
            if path[-1] not in group:
                continue
            table = _table(raw, path[:-1])
            for key in group:
                if table is not None and (*path[:-1], key) not in from_env:
                    table.pop(key, None)


def _resolve(
    parts: list[str], raw: dict[str, Any], where: str, errors: list[Problem]
) -> tuple[KeyPath, Kind, bool] | None:
    """The key path and kind a variable's name designates, or None after recording why not."""
    schema: dict[str, Kind] = TOP
    path: list[str] = []
    i = 0
    while i < len(parts):
        key = parts[i]
        last = i == len(parts) - 1
        if schema is TOP and key == "accounts":
            if last:
                errors.append(
                    Problem(
                        f"accounts is a table; set one account's key, e.g. ${PREFIX}ACCOUNTS__WORK__HOST",
                        where=where,
                    )
                )
                return None
            path += ["accounts", _account_name(parts[i + 1], raw)]
            schema = ACCOUNT
            i += 2
            if i == len(parts):
                errors.append(
                    Problem(
                        f"{dotted(tuple(path))} is a table; set one of its keys, e.g. {where}__HOST",
                        where=where,
                    )
                )
                return None
            continue
        kind = schema.get(key)
        via_file = False
        if kind is None and key.endswith("_file") and schema.get(key[:-5]) not in (None, "table", "accounts"):
            key, kind, via_file = key[:-5], schema[key[:-5]], True
        if kind is None:
            message = f"{dotted((*path, key))}: unknown key{suggestion(key, schema)}"
            errors.append(Problem(message, where=where))
            return None
        path.append(key)
        if kind == "table":
            if last:
                errors.append(
                    Problem(
                        f"{dotted(tuple(path))} is a table; set one of its keys, "
                        f"e.g. {where}__{next(iter(_TABLES[key])).upper()}",
                        where=where,
                    )
                )
                return None
            schema = _TABLES[key]
            i += 1
            continue
        if not last:
            errors.append(Problem(f"{dotted(tuple(path))} is not a table", where=where))
            return None
        return tuple(path), kind, via_file
    return None


def _account_name(lowered: str, raw: dict[str, Any]) -> str:
    """The file's spelling of an account whose name the environment gives lower-cased."""
    accounts = raw.get("accounts")
    if isinstance(accounts, dict):
        if lowered in accounts:
            return lowered
        for name in accounts:
            if name.lower() == lowered:
                return str(name)
    return lowered


class _Bad:
    def __init__(self, message: str) -> None:
        self.message = message


def _parse(text: str, kind: Kind, secret: bool) -> object:
    shown = "the value" if secret else repr(text)
    if kind in ("str", "path"):
        return text
    if kind == "int":
        try:
            return int(text.strip(), 10)
        except ValueError:
            return _Bad(f"expected an integer, got {shown}")
    if kind == "number":
        try:
            return float(text.strip())
        except ValueError:
            return _Bad(f"expected a number, got {shown}")
    if kind == "bool":
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        return _Bad(f"expected a boolean (true/false, 1/0, yes/no), got {shown}")
    # strlist: a TOML array literal, or comma-separated words
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            # Nested arrays are never valid here; refusing them first keeps tomllib from recursing.
            value = None if too_deep(stripped, 1) else tomllib.loads(f"v = {stripped}")["v"]
        except ValueError:  # TOMLDecodeError, or a number past Python's digit limit
            value = None
        if value is None:
            return _Bad(f"expected a TOML array of strings or comma-separated values, got {shown}")
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return _Bad(f"expected an array of strings, got {shown}")
        return value
    return [item.strip() for item in stripped.split(",") if item.strip()]


def _table(raw: dict[str, Any], path: KeyPath) -> dict[str, Any] | None:
    node: object = raw
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, dict) else None


def _set(raw: dict[str, Any], origins: dict[KeyPath, str], path: KeyPath, value: object, where: str) -> bool:
    node = raw
    for n, key in enumerate(path[:-1]):
        child = node.setdefault(key, {})
        origins.setdefault(path[: n + 1], where)
        if not isinstance(child, dict):
            return False  # the file's own value is reported as the wrong type
        node = child
    node[path[-1]] = value
    origins[path] = where
    return True


def _unset(raw: dict[str, Any], path: KeyPath) -> None:
    table = _table(raw, path[:-1])
    if table is not None:
        table.pop(path[-1], None)
