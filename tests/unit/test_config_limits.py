"""`[limits]`: the loop-safety keys, their defaults, ranges and environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailrules.config import load_config
from mailrules.engine import loops
from mailrules.errors import ConfigError

ACCOUNT = """
[accounts.a]
host = "imap.example.org"
username = "u@example.org"
password = "pw"
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "mailrules.toml"
    path.write_text(text + ACCOUNT, encoding="utf-8")
    return load_config(path, env=env or {})


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    limits = load(tmp_path, "").limits
    assert limits.mailboxes_created_per_run == loops.MAILBOXES_CREATED_PER_RUN == 50
    assert limits.forwards_per_address_per_hour == loops.FORWARDS_PER_ADDRESS_PER_HOUR == 20


def test_the_keys_are_read_and_shown(tmp_path: Path) -> None:
    text = "[limits]\nmailboxes_created_per_run = 0\nforwards_per_address_per_hour = 5\n"
    settings = load(tmp_path, text)
    assert settings.limits.mailboxes_created_per_run == 0  # never create a mailbox
    assert settings.limits.forwards_per_address_per_hour == 5
    assert settings.redacted_dict()["limits"] == {
        "mailboxes_created_per_run": 0,
        "forwards_per_address_per_hour": 5,
        # the evaluation bounds (tests/unit/test_config_bounds.py), at their defaults
        "part_text_bytes": 1024 * 1024,
        "message_text_bytes": 4 * 1024 * 1024,
        "evaluation_seconds": 2.0,
    }


def test_the_environment_overrides_them(tmp_path: Path) -> None:
    env = {"MAILRULES_LIMITS__FORWARDS_PER_ADDRESS_PER_HOUR": "3"}
    assert load(tmp_path, "", env).limits.forwards_per_address_per_hour == 3


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[limits]\nmailboxes_created_per_run = -1\n", "limits.mailboxes_created_per_run"),
        ("[limits]\nforwards_per_address_per_hour = 0\n", "must be between 1 and 100000, got 0"),
        ('[limits]\nforwards_per_address_per_hour = "20"\n', "limits.forwards_per_address_per_hour"),
        ("[limits]\nforwards_per_adress_per_hour = 20\n", "did you mean 'forwards_per_address_per_hour'"),
    ],
)
def test_wrong_values_are_refused_with_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert fragment in str(info.value)
