"""What the suite needs from the machine: missing locally is a skip that says how to get it;
under CI=true (where `make test` installed everything) it is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


def pytest_without_server(
    tmp_path: Path, fixture: str, env: dict[str, str], ci: str, *, also: tuple[str, ...] = ()
) -> str:
    """Run one test needing the integration `fixture` (and the fixtures it uses, `also`) in a fresh
    pytest, with `env` pointing the server's launcher at nothing and CI set to `ci`; its output."""
    root = Path(__file__).resolve().parents[1]
    test = tmp_path / "test_missing.py"
    test.write_text(
        f"from tests.integration.conftest import {', '.join((fixture, *also))}  # noqa: F401\n\n\n"
        f"def test_needs_{fixture}({fixture}):\n    pass\n"
    )
    run_env = {**os.environ, **env, "CI": ci, "PYTHONPATH": str(root)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-rs",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(tmp_path),
        str(test),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=run_env, cwd=tmp_path, timeout=60)
    return result.stdout
