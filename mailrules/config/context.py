"""The loader's context: where each configuration key came from, typed reads of a table's keys,
and the problems and warnings found so far."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from mailrules.config.env import dotted, suggestion
from mailrules.config.locate import KeyPath, Place
from mailrules.config.names import control_problem, mailbox_problem
from mailrules.config.problems import Problem, problem_at
from mailrules.config.schema import Kind, kind_name, matches_kind, type_name


class Context:
    """Where each key came from, and the problems found so far: what every reader of a table
    (loader.py, cluster.py, oauth2.py, timing.py) reports to and reads its typed values through."""

    def __init__(self, shown: str, config_dir: Path, env: Mapping[str, str]) -> None:
        self.shown = shown
        self.config_dir = config_dir
        self.env = env
        self.origins: dict[KeyPath, str] = {}
        self.places: dict[KeyPath, Place] = {}
        self.errors: list[Problem] = []
        self.warnings: list[str] = []
        self.tokens_dir = config_dir / "tokens"  # OAuth2 token stores' default: beside the state

    def where(self, path: KeyPath) -> str:
        """`file:line` or `$VARIABLE` of a key, else of the nearest enclosing table, else the file."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.origins:
                return self.origins[path[:n]]
        return self.shown

    def order(self, message: str) -> tuple[int, int]:
        """Sort key of a message: the file's in line order, then the environment's."""
        if message.startswith(self.shown + ":"):
            line = message[len(self.shown) + 1 :].partition(":")[0]
            return (0, int(line) if line.isdigit() else 0)
        return (1, 0)

    def error(self, path: KeyPath, message: str, at: KeyPath | None = None, *, key: bool = False) -> None:
        """A problem with `path`, shown at `at` (default `path`): its value, or its key when `key`."""
        text = f"{dotted(path)}: {message}"
        problem = problem_at(at or path, text, self.origins, self.places, self.shown, key=key)
        if problem not in self.errors:
            self.errors.append(problem)

    def warn(self, path: KeyPath, message: str) -> None:
        self.warnings.append(f"{self.where(path)}: {dotted(path)}: {message}")

    def check_keys(self, table: dict[str, Any], path: KeyPath, schema: dict[str, Kind]) -> None:
        for key in table:
            if key not in schema:
                self.error((*path, key), f"unknown key{suggestion(key, schema)}", key=True)

    def get(self, table: dict[str, Any], path: KeyPath, key: str, kind: Kind) -> Any:
        """The value of `key` when present and of the right type; None (after an error) otherwise."""
        if key not in table:
            return None
        value = table[key]
        if matches_kind(value, kind):
            return value
        got = type_name(value)
        if kind == "strlist" and isinstance(value, list):
            odd = next(v for v in value if not isinstance(v, str))
            got = f"an array containing {type_name(odd)}"
        self.error((*path, key), f"expected {kind_name(kind)}, got {got}")
        return None

    def text(self, table: dict[str, Any], path: KeyPath, key: str) -> str | None:
        """A string key that must not be empty."""
        value = self.get(table, path, key, "str")
        if value == "":
            self.error((*path, key), "must not be empty")
            return None
        return cast("str | None", value)

    def choice(self, table: dict[str, Any], path: KeyPath, key: str, allowed: tuple[str, ...]) -> str | None:
        value = self.get(table, path, key, "str")
        if value is not None and value not in allowed:
            listed = ", ".join(f"'{a}'" for a in allowed)
            self.error((*path, key), f"expected one of {listed}, got '{value}'")
            return None
        return cast("str | None", value)

    def integer(self, table: dict[str, Any], path: KeyPath, key: str, low: int, high: int) -> int | None:
        value = self.get(table, path, key, "int")
        if value is not None and not low <= value <= high:
            self.error((*path, key), f"must be between {low} and {high}, got {value}")
            return None
        return cast("int | None", value)

    def file_path(self, table: dict[str, Any], path: KeyPath, key: str) -> Path | None:
        """A path key, resolved against the configuration file's directory."""
        value = self.get(table, path, key, "path")
        if value == "":
            self.error((*path, key), "must not be empty")
            return None
        if value is not None and "\x00" in value:
            self.error((*path, key), "a path must not contain NUL")
            return None
        return None if value is None else self.resolve(value)

    def clean(self, path: KeyPath, value: str | None) -> str | None:
        """`value` (a host, username or address) unless it holds a control character (an error)."""
        problem = None if value is None else control_problem(value)
        if problem is not None:
            self.error(path, f"{value!r} {problem}")
            return None
        return value

    def mailbox(self, path: KeyPath, name: str | None) -> str | None:
        """`name` unless it is no mailbox name: empty, a control character, a LIST wildcard (an error)."""
        problem = None if name is None else mailbox_problem(name)
        if problem is not None:
            self.error(path, problem)
            return None
        return name

    def resolve(self, value: str) -> Path:
        return self.config_dir / Path(value).expanduser()

    def subtable(self, table: dict[str, Any], path: KeyPath, key: str) -> dict[str, Any] | None:
        value = self.get(table, path, key, "table")
        return cast("dict[str, Any] | None", value)
