"""Golden error texts: every tests/fixtures/dsl/errors/NAME.rules renders exactly NAME.expected.

To accept new output after a deliberate change: MAILRULES_REGEN_GOLDEN=1 pytest tests/unit/test_dsl_errors.py
(then review the diff). Without it, a missing or different .expected file fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailrules.dsl.loader import load_rule_set

ERRORS = Path(__file__).resolve().parents[1] / "fixtures" / "dsl" / "errors"
CASES = sorted(p.stem for p in ERRORS.glob("*.rules"))
REGEN = os.environ.get("MAILRULES_REGEN_GOLDEN") == "1"


def render_case(name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(ERRORS)  # paths in messages are relative: NAME.rules:line:col
    return load_rule_set(f"{name}.rules").render() + "\n"


@pytest.mark.parametrize("name", CASES)
def test_golden_error_text(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    got = render_case(name, monkeypatch)
    expected_path = ERRORS / f"{name}.expected"
    if REGEN:
        expected_path.write_text(got, encoding="utf-8")
    assert expected_path.exists(), f"no golden file {expected_path.name}; run with MAILRULES_REGEN_GOLDEN=1"
    assert got == expected_path.read_text(encoding="utf-8")


def test_every_golden_file_has_a_case() -> None:
    orphans = {p.stem for p in ERRORS.glob("*.expected")} - set(CASES)
    assert not orphans


@pytest.mark.parametrize("name", CASES)
def test_golden_texts_are_user_words(name: str) -> None:
    text = (
        (ERRORS / f"{name}.expected").read_text(encoding="utf-8")
        if (ERRORS / f"{name}.expected").exists()
        else ""
    )
    for internal in ("__ANON", "ESCAPED_STRING", "Token(", "Tree(", "lark", "Traceback", "WORD", "STRING"):
        assert internal not in text
    for line in text.splitlines():
        if line and not line.startswith(" "):
            assert line.startswith(f"{name}.rules:"), line
            assert ": error: " in line or ": warning: " in line, line
