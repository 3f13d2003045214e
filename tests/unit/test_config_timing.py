"""An account's watchdog settings: idle_renew_seconds and idle_timeout_seconds (docs/operations.md,
"Silent connections"), their defaults, bounds and messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailrules.config import load_config
from mailrules.config.schema import DEFAULT_IDLE_RENEW, DEFAULT_IDLE_TIMEOUT
from mailrules.errors import ConfigError

ACCOUNT = '[accounts.a]\nhost = "h"\nusername = "u@example.org"\npassword = "p"\n'
RANGE = "must be a number of seconds from 1 to 1740"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailrules.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_nine_minutes_and_thirty_seconds(tmp_path: Path) -> None:
    account = load_config(_write(tmp_path, ACCOUNT), env={}).accounts["a"]
    assert (account.idle_renew_seconds, account.idle_timeout_seconds) == (540.0, 30.0)
    assert (DEFAULT_IDLE_RENEW, DEFAULT_IDLE_TIMEOUT) == (540.0, 30.0)
    assert account.poll_interval == 60.0


def test_values_are_read_and_shown(tmp_path: Path) -> None:
    text = ACCOUNT + "idle_renew_seconds = 120\nidle_timeout_seconds = 2.5\npoll_interval = 5\n"
    settings = load_config(_write(tmp_path, text), env={})
    account = settings.accounts["a"]
    got = (account.idle_renew_seconds, account.idle_timeout_seconds, account.poll_interval)
    assert got == (120.0, 2.5, 5.0)
    shown = settings.redacted_dict()["accounts"]["a"]
    assert (shown["idle_renew_seconds"], shown["idle_timeout_seconds"]) == (120.0, 2.5)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("idle_renew_seconds = 0", f"accounts.a.idle_renew_seconds: {RANGE}, got 0"),
        ("idle_renew_seconds = 1800", f"accounts.a.idle_renew_seconds: {RANGE}, got 1800"),
        ("idle_timeout_seconds = -3", f"accounts.a.idle_timeout_seconds: {RANGE}, got -3"),
        ("idle_timeout_seconds = nan", f"accounts.a.idle_timeout_seconds: {RANGE}, got nan"),
        ('idle_timeout_seconds = "30"', "accounts.a.idle_timeout_seconds: expected a number, got a string"),
        ("poll_interval = 0", "accounts.a.poll_interval: must be a positive number of seconds, got 0"),
    ],
)
def test_bad_values_are_refused_with_their_line(tmp_path: Path, line: str, message: str) -> None:
    path = _write(tmp_path, ACCOUNT + line + "\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert f"{path}:5:" in str(exc.value)
    assert message in str(exc.value)
