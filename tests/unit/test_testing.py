"""Unit tests of the offline `test` block runner and its report."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest

from mailrules.commands.rule_tests import format_outcomes, run_tests
from mailrules.dsl import ast as A
from mailrules.dsl import unparse
from mailrules.source import Span

EML = Path(__file__).resolve().parent.parent / "fixtures" / "eml"
EXAMPLES = Path(__file__).resolve().parents[2] / "rules.d"


def sp(file: str, line: int = 1, col: int = 1) -> Span:
    return Span(file, line, col)


def T(raw: str, s: Span) -> A.Template:
    if "{list}" in raw:
        before = raw.split("{list}")[0]
        return A.Template(raw, (A.TemplateText(before), A.Placeholder("list", 0, s)), s)
    if "{year}" in raw:
        before = raw.split("{year}")[0]
        return A.Template(raw, (A.TemplateText(before), A.Placeholder("year", 0, s)), s)
    return A.Template(raw, (A.TemplateText(raw),), s)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    (tmp_path / "samples").mkdir()
    for name in ("github-pr.eml", "from-mum.eml", "list-python.eml", "bob-big.eml"):
        shutil.copy(EML / name, tmp_path / "samples" / name)
    return tmp_path


def build(rules_dir: Path, tests: list[tuple[str, dict[str, Any], list[A.Action]]]) -> A.RuleSet:
    f = str(rules_dir / "10-mail.rules")
    s = sp(f, 2, 5)
    seen = A.FlagTest("\\Seen", True, s)
    rules = (
        A.Rule(
            "github",
            ("INBOX",),
            (),
            A.OnArrival(s),
            None,
            A.StringTest(A.FieldRef("from", None, s), "contains", "notifications@github.com", s),
            (A.Move(T("GitHub", s), s), A.SetFlag("\\Seen", True, s)),
            s,
        ),
        A.Rule(
            "python",
            ("INBOX",),
            (),
            A.Manually(s),
            None,
            A.StringTest(A.FieldRef("list", None, s), "contains", "python", s),
            (A.Tag("$Py", True, s), A.Stop(s)),
            s,
        ),
        A.Rule(
            "old seen",
            ("INBOX", "Lists"),
            ("work",),
            A.At((), 3, 0, s),
            None,
            A.And((A.AgeTest(True, 1, "years", s), seen), s),
            (A.Archive(T("Archive/{year}", s), s),),
            s,
        ),
        A.Rule(
            "all",
            ("INBOX",),
            (),
            A.OnArrival(s),
            None,
            A.All(s),
            (A.Copy(T("L/{list}", s), s), A.Forward("x@example.org", s)),
            s,
        ),
    )
    blocks = []
    for i, (name, given_kw, expect) in enumerate(tests):
        g = A.Given(
            path=given_kw.get("path", "samples/from-mum.eml"),
            flags=given_kw.get("flags", ()),
            received=given_kw.get("received"),
            mailbox=given_kw.get("mailbox", "INBOX"),
            account=given_kw.get("account"),
            now=given_kw.get("now"),
            span=sp(f, 20 + i, 5),
        )
        blocks.append(A.TestBlock(name, g, tuple(expect), sp(f, 19 + i * 5, 1)))
    return A.RuleSet((A.RuleFile(f, rules, tuple(blocks)),))


S = sp("x.rules")


def test_actions_are_written_canonically() -> None:
    cases: list[tuple[A.Action, str]] = [
        (A.Move(T("GitHub", S), S), 'move to "GitHub"'),
        (A.Copy(T('a"b\\c', S), S), 'copy to "a\\"b\\\\c"'),
        (A.Archive(None, S), "archive"),
        (A.Archive(T("Archive/2023", S), S), 'archive to "Archive/2023"'),
        (A.Delete(False, S), "delete"),
        (A.Delete(True, S), "delete permanently"),
        (A.SetFlag("\\Seen", True, S), "mark read"),
        (A.SetFlag("\\Seen", False, S), "mark unread"),
        (A.SetFlag("\\Flagged", True, S), "flag"),
        (A.SetFlag("\\Flagged", False, S), "unflag"),
        (A.Tag("$X", True, S), 'tag "$X"'),
        (A.Tag("$X", False, S), 'untag "$X"'),
        (A.Forward("a@b", S), 'forward to "a@b"'),
        (A.Redirect("a@b", S), 'redirect to "a@b"'),
        (A.Stop(S), "stop"),
    ]
    for action, text in cases:
        assert unparse.action(action) == text
    assert unparse.action(A.Move(T("L/{year}", S), S), "L/2023") == 'move to "L/2023"'


def test_passing_blocks(rules_dir: Path) -> None:
    s = S
    rs = build(
        rules_dir,
        [
            (
                "github",
                {"path": "samples/github-pr.eml"},
                [A.Move(T("GitHub", s), s), A.SetFlag("\\Seen", True, s)],
            ),
            ("list stops", {"path": "samples/list-python.eml"}, [A.Tag("$Py", True, s), A.Stop(s)]),
            (
                "old mail, work account",
                {
                    "flags": ("\\Seen",),
                    "account": "work",
                    "received": dt.datetime(2020, 5, 1),
                    "now": dt.datetime(2024, 1, 1),
                },
                [A.Archive(T("Archive/2020", s), s)],
            ),
            ("other mailbox: keep", {"mailbox": "Sent"}, []),
        ],
    )
    outcomes = run_tests(rs)
    assert [o.passed for o in outcomes] == [True, True, True, True], format_outcomes(outcomes)
    assert outcomes[2].actual == ['archive to "Archive/2020"']
    assert format_outcomes(outcomes) == "4 passed, 0 failed"


def test_failing_blocks_and_report(rules_dir: Path) -> None:
    s = S
    rs = build(
        rules_dir,
        [
            ("wrong", {"path": "samples/github-pr.eml"}, [A.Move(T("GitHub", s), s)]),
            ("template error", {}, []),
            ("missing", {"path": "samples/nope.eml"}, []),
            ("keep", {"mailbox": "Sent"}, []),
            # received defaults to the Date header: bob-big.eml is from 2023, so it is old
            (
                "received default",
                {
                    "path": "samples/bob-big.eml",
                    "flags": ("\\Seen",),
                    "account": "work",
                    "now": dt.datetime(2025, 1, 1),
                },
                [A.Archive(T("Archive/2023", s), s)],
            ),
        ],
    )
    outcomes = run_tests(rs)
    assert [o.passed for o in outcomes] == [False, False, False, True, True]
    assert outcomes[0].actual == ['move to "GitHub"', "mark read"]
    assert outcomes[1].actual[0].startswith('copy to "L/{list}" (error: ')
    assert outcomes[1].actual[1] == 'forward to "x@example.org"'
    assert outcomes[2].error is not None and "nope.eml" in outcomes[2].error
    assert "No such file" in outcomes[2].error
    f = str(rules_dir / "10-mail.rules")
    report = format_outcomes(outcomes)
    assert report.splitlines()[:3] == [
        f'{f}:19:1: test "wrong" failed',
        '    expected: move to "GitHub"',
        '    actual:   move to "GitHub", mark read',
    ]
    assert f'{f}:29:1: test "missing" failed' in report
    assert "    actual:   (not run)" in report
    assert report.splitlines()[-1] == "2 passed, 3 failed"


def test_unreadable_path_is_a_failure_not_a_traceback(rules_dir: Path) -> None:
    (rules_dir / "samples" / "dir.eml").mkdir()
    rs = build(rules_dir, [("dir", {"path": "samples/dir.eml"}, []), ("nul", {"path": "bad\x00name"}, [])])
    outcomes = run_tests(rs)
    assert [o.passed for o in outcomes] == [False, False]
    assert all(o.error and o.error.startswith("cannot read ") for o in outcomes)


def test_empty_rule_set() -> None:
    assert run_tests(A.RuleSet(())) == []
    assert format_outcomes([]) == "0 passed, 0 failed"


def test_examples_rule_set_passes() -> None:
    loader = pytest.importorskip("mailrules.dsl.loader", reason="the loader has not landed yet")
    result = loader.load_rule_set(EXAMPLES)
    assert result.ok, result.render()
    outcomes = run_tests(result.rule_set)
    assert outcomes and all(o.passed for o in outcomes), format_outcomes(outcomes)
