"""Regex diagnostics (dsl/regex_lint.py): POSIX classes, possessive quantifiers, set operators."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailrules.dsl import ast
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.parser import parse_text
from mailrules.dsl.regex_lint import lint_pattern
from mailrules.source import render_all

ROOT = Path(__file__).resolve().parents[2]
# pytest collects inside its own catch_warnings, which drops the filter mailrules installs at
# import; the subprocess test below checks the real process.
pytestmark = pytest.mark.filterwarnings("ignore:Possible:FutureWarning")


def rendered(text: str) -> str:
    rule_file, diags = parse_text(text, "r.rules")
    assert rule_file is not None and not diags, diags
    found = check_rule_set(ast.RuleSet((rule_file,), {"r.rules": text}))
    return render_all(found, {"r.rules": text})


def test_a_posix_class_is_an_error_at_its_column() -> None:
    text = 'rule "r" {\n    when subject matches /order [[:digit:]]+/\n    then flag\n}\n'
    assert rendered(text) == (
        "r.rules:2:34: error: '[:digit:]' is a POSIX class, which Python's regular expressions do "
        "not have (Python reads its characters as members of the set); write \\d or [0-9]\n"
        "        when subject matches /order [[:digit:]]+/\n"
        "                                     ^^^^^^^^^"
    )


def test_a_possessive_quantifier_is_a_warning_at_its_column() -> None:
    # the escaped slash counts as written: the caret is under `*+`
    text = 'rule "r" { when subject matches /a\\/b.*+c/ then flag }\n'
    assert rendered(text) == (
        "r.rules:1:39: warning: '*+' is a possessive quantifier in Python: it never gives back what "
        "it matched, where POSIX and Sieve read '*' then '+'; write '*\\+' for a literal '+', or the "
        "atomic group '(?>...*)' to keep it possessive\n"
        '    rule "r" { when subject matches /a\\/b.*+c/ then flag }\n'
        "                                          ^^"
    )


@pytest.mark.parametrize(
    ("pattern", "found"),
    [
        ("[[:digit:]]", [(1, 9, "error", "write \\d or [0-9]")]),
        ("[^[:alpha:]_]", [(2, 9, "error", "write [a-zA-Z]")]),
        ("a[x[:space:]]", [(3, 9, "error", "write \\s")]),
        ("[[:nonsense:]]", [(1, 12, "error", "write the characters it stands for")]),
        ("[[=e=]]", [(1, 5, "error", "POSIX class")]),
        (".*+", [(1, 2, "warning", "'*+' is a possessive")]),
        ("a++", [(1, 2, "warning", "'++'")]),
        ("a?+", [(1, 2, "warning", "'?+'")]),
        ("a{2,3}+b", [(1, 6, "warning", "'{2,3}+'")]),
        ("(?:ab)*+", [(6, 2, "warning", "'*+'")]),
        ("[[a]", [(1, 1, "warning", "nested set")]),
        ("[a--z]", [(2, 2, "warning", "set difference")]),
        ("[a&&b]", [(2, 2, "warning", "set intersection")]),
        ("[a~~b]", [(2, 2, "warning", "symmetric difference")]),
        ("[a||b]", [(2, 2, "warning", "set union")]),
    ],
)
def test_findings(pattern: str, found: list[tuple[int, int, str, str]]) -> None:
    got = lint_pattern(pattern)
    assert [(f.offset, f.length, f.severity) for f in got] == [x[:3] for x in found]
    for f, (_, _, _, fragment) in zip(got, found, strict=True):
        assert fragment in f.message


@pytest.mark.parametrize(
    "pattern",
    [
        r"a*?b", r"a+?", r"\++", r"\[[:digit:]", r"[\[]:x:]", r"[]a]", r"[a-z]+", r"a{x}+", r"(?P<n>a)+",
        r"(?#[[:digit:]])", r"[:digit:]", r"[+*]+", r"x{,}+", r"a-+", r"[-]+", r"\d{3}\s?\d",
    ],
)  # fmt: skip
def test_no_finding(pattern: str) -> None:
    assert lint_pattern(pattern) == []


def test_verbose_comments_are_not_read() -> None:
    assert lint_pattern("a # [[:digit:]] .*+", verbose=True) == []
    assert lint_pattern("a # [[:digit:]]", verbose=False) != []
    # an inline (?x) counts as the flag: the checker reads the compiled flags
    assert "POSIX" not in rendered('rule "r" { when subject matches /(?x) a # [[:digit:]]/ then flag }\n')


def test_attachment_name_regexes_are_checked_too() -> None:
    text = 'rule "r" { when attachment name matches /[[:digit:]]\\.pdf$/ then flag }\n'
    assert "POSIX class" in rendered(text)


def test_python_never_prints_its_future_warning(tmp_path: Path) -> None:
    """`check`, `explain` and the runtime compile the pattern; nothing reaches stderr unplaced."""
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "a.rules").write_text(
        'rule "r" { when subject matches /[[a]x/ or subject matches /[a&&b]y/ then flag }\n', encoding="utf-8"
    )
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('default')\n"
        "from mailrules.cli import main\n"
        "main(['check', sys.argv[1]])\n"
    )
    for command in (code, code.replace("'check'", "'explain'")):
        done = subprocess.run(
            [sys.executable, "-c", command, str(rules)], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert "FutureWarning" not in done.stderr, done.stderr
        assert "Possible" not in done.stderr + done.stdout
        wanted = "SEARCH" if "explain" in command else "1 rule, 0 tests: 0 errors, 2 warnings"
        assert wanted in done.stdout
    # the checker said it instead, at the place
    done = subprocess.run(
        [sys.executable, "-c", code, str(rules)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert "a.rules:1:35: warning: '[' at the start of a set" in done.stderr
    assert "a.rules:1:63: warning: '&&' in a set" in done.stderr
