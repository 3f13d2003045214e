"""The house style's import rules, held by a test: each third-party library stays in its corner."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mailrules"

# library -> the only places (relative to mailrules/) allowed to import it
CORNERS = {
    "imapclient": ("imap/",),
    "lark": ("dsl/",),
    "apscheduler": ("scheduler.py",),
    "prometheus_client": ("metrics.py",),
    "regex": ("userregex.py",),
    "psycopg": ("state/",),
    "psycopg_pool": ("state/",),
    "authlib": ("oauth/client.py",),
    "requests": ("oauth/client.py",),
}
# pure packages: no I/O libraries
PURE = ("dsl/", "compile/")
IO_MODULES = {"socket", "ssl", "sqlite3", "smtplib", "imaplib", "imapclient", "http", "urllib", "subprocess"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _modules() -> list[tuple[str, list[str]]]:
    return [
        (p.relative_to(PACKAGE).as_posix(), _imports(p))
        for p in sorted(PACKAGE.rglob("*.py"))
    ]


def test_third_party_libraries_stay_in_their_corner() -> None:
    offenders = []
    for rel, names in _modules():
        for name in names:
            top = name.split(".")[0]
            allowed = CORNERS.get(top)
            if allowed is not None and not rel.startswith(allowed):
                offenders.append(f"{rel} imports {name}")
    assert offenders == []


def test_nothing_imports_cli_or_daemon() -> None:
    offenders = []
    for rel, names in _modules():
        for name in names:
            if name in ("mailrules.cli",) and rel != "__main__.py":
                offenders.append(f"{rel} imports {name}")
            if name == "mailrules.daemon" and rel not in ("cli.py",):
                offenders.append(f"{rel} imports {name}")
    assert offenders == []


def test_language_and_planner_do_no_io() -> None:
    offenders = []
    for rel, names in _modules():
        if rel.startswith(PURE):
            offenders += [f"{rel} imports {n}" for n in names if n.split(".")[0] in IO_MODULES]
    assert offenders == []


def test_every_module_has_a_docstring() -> None:
    missing = [
        rel
        for rel, _ in _modules()
        if not ast.get_docstring(ast.parse((PACKAGE / rel).read_text(encoding="utf-8")))
        and (PACKAGE / rel).read_text(encoding="utf-8").strip()
    ]
    assert missing == []
