"""What the suite needs from the machine: missing locally is a skip that says how to get it;
under CI=true (where `make test` installed everything) it is a failure."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest


def unavailable(why: str) -> NoReturn:
    """Skip (locally) or fail (CI) because `why`; the message says how to get what is missing."""
    message = f"{why}; run `make test`, which installs the system packages the suite needs"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_tool(name: str, package: str) -> str:
    """The path of a command from Debian package `package`, or unavailable()."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        unavailable(f"{name} not found (Debian/Ubuntu package `{package}`)")
    return path
