"""`mailrules doctor`'s report: one row per check, per account, as a table or JSON; `ok` is the exit code."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["OK", "WARN", "FAIL", "INFO", "SKIP"]


@dataclass
class Check:
    """One row: what was checked, how it went, how long it took, and what to do about a failure."""

    check: str
    status: Status
    result: str
    ms: float | None = None
    hint: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class AccountReport:
    """Every check of one account, in the order they ran."""

    name: str
    target: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != "FAIL" for c in self.checks)


@dataclass
class Report:
    """The whole diagnosis: configuration and rules first, then one section per account."""

    general: list[Check] = field(default_factory=list)
    accounts: list[AccountReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No check failed: `mailrules doctor` exits 0, else 1."""
        return all(c.status != "FAIL" for c in self.general) and all(a.ok for a in self.accounts)


def format_report(report: Report) -> str:
    """Readable tables: status, check, time, result, and an indented hint under a row that needs one."""
    lines: list[str] = []
    for title, checks in [("mailrules doctor", report.general)] + [
        (f"account {a.name!r}: {a.target}", a.checks) for a in report.accounts
    ]:
        lines.append(title)
        width = max((len(c.check) for c in checks), default=5)
        for c in checks:
            ms = f"{c.ms:8.1f} ms" if c.ms is not None else " " * 11
            lines.append(f"  {c.status:<4}  {c.check:<{width}}  {ms}  {c.result}")
            if c.hint:
                lines.append(f"  {'':<4}  {'':<{width}}  {'':11}  hint: {c.hint}")
        lines.append("")
    fails = sum(c.status == "FAIL" for c in report.general + [c for a in report.accounts for c in a.checks])
    lines.append("everything needed works" if report.ok else f"{fails} check(s) failed")
    return "\n".join(lines)


def format_json(report: Report) -> str:
    """The same as data: {"ok", "general": [...], "accounts": {name: {"target", "ok", "checks"}}}."""
    data = {
        "ok": report.ok,
        "general": [dataclasses.asdict(c) for c in report.general],
        "accounts": {
            a.name: {"target": a.target, "ok": a.ok, "checks": [dataclasses.asdict(c) for c in a.checks]}
            for a in report.accounts
        },
    }
    return json.dumps(data, indent=2, default=str)
