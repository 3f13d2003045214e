"""One row of what `mailrules doctor` says about the state (state/health.py, state/pg_health.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Finding:
    """One row of the report: `status` is OK, INFO, WARN or FAIL (as the doctor report's Check)."""

    check: str
    status: Literal["OK", "INFO", "WARN", "FAIL"]
    result: str
    hint: str = ""
