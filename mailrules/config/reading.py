"""Reading the configuration file safely: size, UTF-8, nesting, tomllib's errors at their place."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from mailrules.config.locate import position, too_deep
from mailrules.config.problems import Problem, file_error, render
from mailrules.errors import ConfigError

#: A configuration file is a few KB; anything past this is not one (or is /dev/zero).
MAX_CONFIG_BYTES = 1024 * 1024
#: Arrays and inline tables nested deeper are refused before tomllib, which recurses once per
#: level and would die of RecursionError (a traceback, exit 1) somewhere near 400, depending on
#: how deep the caller's stack already is. A real configuration nests 2 or 3 levels.
MAX_NESTING = 100
# Python refuses to convert integers of more than 4300 digits (sys.int_info.default_max_str_digits).
_HUGE_NUMBER = re.compile(r"(?:0[xXoObB])?[0-9A-Fa-f][0-9A-Fa-f_]{4299,}")

_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_END = re.compile(r"\s*\(at end of document\)\s*$")


def read_toml(path: Path, shown: str) -> tuple[str, dict[str, Any]]:
    """The text of the configuration file at `path` and its parsed tables; raise ConfigError.

    Whatever the file is (missing, a directory, not UTF-8, huge, nested 2,000 levels deep, a
    number of 5,000 digits), the error is `shown:line:col: error: invalid TOML: ...` with the
    line and a caret where a position is known, else one line `shown: error: ...`; never a
    traceback. A UTF-8 byte order mark is skipped.
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise _whole(shown, f"cannot read the configuration: {exc.strerror or exc}") from None
    except ValueError:  # a NUL in the path
        raise _whole(shown, "cannot read the configuration: the path contains a NUL") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise _whole(shown, f"the configuration is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # Shown with U+FFFD for the bytes that are no UTF-8; the caret under the first of them.
        shown_text = exc.object.decode("utf-8", "replace")
        line, col = position(shown_text, len(exc.object[: exc.start].decode("utf-8", "replace")))
        bad = exc.object[exc.start : exc.end].hex(" ")
        message = f"the configuration is not valid UTF-8 text (byte {bad})"
        raise ConfigError(file_error(shown, shown_text, line, col, message)) from None
    return text, parse_toml(text, shown)


def parse_toml(text: str, shown: str) -> dict[str, Any]:
    """tomllib.loads, with every way it can fail (not only TOMLDecodeError) as a ConfigError."""
    deep = too_deep(text, MAX_NESTING)
    if deep is not None:
        line, col = deep
        message = f"invalid TOML: arrays and inline tables nested more than {MAX_NESTING} levels deep"
        raise ConfigError(file_error(shown, text, line, col, message))
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(format_toml_error(shown, text, exc)) from None
    except RecursionError:  # not past MAX_NESTING, yet the caller's stack was already deep
        raise _whole(shown, "invalid TOML: nested too deeply to read") from None
    except ValueError as exc:  # int() past Python's digit limit
        what = "a number with more than 4300 digits" if "digits" in str(exc) else str(exc)
        what = f"invalid TOML: {what}"
        m = _HUGE_NUMBER.search(text)
        if m is None:
            raise _whole(shown, what) from None
        line, col = position(text, m.start())
        raise ConfigError(file_error(shown, text, line, col, what)) from None


def format_toml_error(path: str, text: str, exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's "Invalid value (at line 3, column 7)" as `path:3:7: error: invalid TOML: invalid
    value`, the line and a caret."""
    message = str(exc)
    m = _TOML_POS.search(message)
    if m:
        line, col = int(m.group(1)), int(m.group(2))
        message = message[: m.start()]
    else:
        line = text.count("\n") + 1
        col = len(text) - (text.rfind("\n") + 1) + 1
        message = _TOML_END.sub("", message)
    message = message[:1].lower() + message[1:]
    return file_error(path, text, line, col, f"invalid TOML: {message}")


def _whole(shown: str, message: str) -> ConfigError:
    """A problem of the file as a whole (no line to show): `path: error: message`."""
    return ConfigError(render([Problem(message, where=shown)], ""))
