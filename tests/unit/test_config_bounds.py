"""`[limits]`: the keys that bound one message's evaluation, their defaults, ranges and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailrules.bounds import DEFAULT_BOUNDS, Bounds
from mailrules.config import load_config
from mailrules.config.model import Settings
from mailrules.errors import ConfigError

ACCOUNT = """
[accounts.a]
host = "imap.example.org"
username = "u@example.org"
password = "pw"
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "mailrules.toml"
    path.write_text(text + ACCOUNT, encoding="utf-8")
    return load_config(path, env=env or {})


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    bounds = load(tmp_path, "").limits.bounds
    assert bounds == DEFAULT_BOUNDS == Bounds(1024 * 1024, 4 * 1024 * 1024, 2.0)


def test_the_keys_are_read_overridden_and_shown(tmp_path: Path) -> None:
    text = "[limits]\npart_text_bytes = 2048\nmessage_text_bytes = 65536\nevaluation_seconds = 1\n"
    settings = load(tmp_path, text, {"MAILRULES_LIMITS__EVALUATION_SECONDS": "0.5"})
    assert settings.limits.bounds == Bounds(2048, 65536, 0.5)
    shown = settings.redacted_dict()["limits"]
    assert (shown["part_text_bytes"], shown["message_text_bytes"], shown["evaluation_seconds"]) == (
        2048,
        65536,
        0.5,
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[limits]\npart_text_bytes = 10\n", "limits.part_text_bytes: must be between 1024 and 1073741824"),
        ("[limits]\nmessage_text_bytes = 2.5\n", "limits.message_text_bytes: expected an integer"),
        ("[limits]\nevaluation_seconds = 0\n", "limits.evaluation_seconds: must be from 0.01 to 3600.0"),
        ("[limits]\nevaluation_seconds = inf\n", "limits.evaluation_seconds"),
        ('[limits]\nevaluation_seconds = "2"\n', "limits.evaluation_seconds: expected a number"),
        ("[limits]\nevaluation_second = 2\n", "did you mean 'evaluation_seconds'"),
    ],
)
def test_wrong_values_are_refused_with_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert fragment in str(info.value)
