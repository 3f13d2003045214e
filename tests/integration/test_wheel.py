"""The wheel ships the grammar: build it, install it into a fresh venv, check the example rules."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_installs_and_checks_examples(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = dist.glob("mailrules-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "mailrules/grammar/mailrules.lark" in names
        assert (
            z.read("mailrules/grammar/mailrules.lark") == (ROOT / "grammar" / "mailrules.lark").read_bytes()
        )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, text=True)
    # Run from a directory where the source tree cannot be imported by accident.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for cmd in (["check", str(ROOT / "rules.d")], ["test", str(ROOT / "rules.d")]):
        done = subprocess.run(
            [str(venv / "bin" / "mailrules"), *cmd], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import mailrules, sys; sys.stdout.write(mailrules.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), where
