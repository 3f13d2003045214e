"""`make demo` is the README's first command: it must run clean, end to end."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mailrules.demo"], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "10 passed, 0 failed" in out
    assert "0 failed actions, 0 errors" in out
    assert "folders before and after:" in out and "Lists/python-dev" in out
    assert "mailrules_actions_total" in out  # the run's metrics are printed
    assert "the SMTP sink received 4 forwarded message(s)" in out
