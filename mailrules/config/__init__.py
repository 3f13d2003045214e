"""Configuration: TOML + environment + `*_FILE` secrets -> frozen, validated `Settings`."""

from __future__ import annotations

from mailrules.config.loader import DEFAULT_CONFIG_PATH, load_config
from mailrules.config.model import AccountSettings, MetricsSettings, Secret, Settings, SmtpSettings
from mailrules.config.schema import PROVIDERS

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "PROVIDERS",
    "AccountSettings",
    "MetricsSettings",
    "Secret",
    "Settings",
    "SmtpSettings",
    "load_config",
]
