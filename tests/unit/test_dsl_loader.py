"""load_rule_set(): directories in lexical order, single files, unreadable input as diagnostics."""

from __future__ import annotations

from pathlib import Path

from mailrules.dsl.loader import load_rule_set

OK = Path(__file__).resolve().parents[1] / "fixtures" / "dsl" / "ok"


def test_spec_examples_load_clean() -> None:
    result = load_rule_set(OK)
    assert result.ok and result.diagnostics == [], result.render()
    assert len(result.rule_set.rules) == 6 and len(result.rule_set.tests) == 2
    assert result.rule_set.rule("LISTS") is not None
    assert str(OK / "spec_examples.rules") in result.sources


def test_directory_lexical_order_and_cross_file_duplicates(tmp_path: Path) -> None:
    (tmp_path / "20-b.rules").write_text('rule "B" { then stop }\nrule "dup" { then flag }\n')
    (tmp_path / "10-a.rules").write_text('rule "A" { then stop }\nrule "Dup" { then flag }\n')
    (tmp_path / "notes.txt").write_text("not a rule file {")
    result = load_rule_set(tmp_path)
    assert [r.name for r in result.rule_set.rules] == ["A", "Dup", "B", "dup"]
    assert [e.span.file for e in result.errors] == [str(tmp_path / "20-b.rules")]
    assert "first defined at " + str(tmp_path / "10-a.rules") + ":2:6" in result.errors[0].message


def test_single_file(tmp_path: Path) -> None:
    path = tmp_path / "one.rules"
    path.write_text('rule "x" { when seen then archive }\n')
    result = load_rule_set(str(path))
    assert result.ok and [r.name for r in result.rule_set.rules] == ["x"]


def test_missing_path_is_a_diagnostic(tmp_path: Path) -> None:
    result = load_rule_set(tmp_path / "nope")
    assert not result.ok and result.rule_set.rules == ()
    assert result.render().endswith("error: no such rule file or directory")


def test_empty_directory_is_a_warning(tmp_path: Path) -> None:
    result = load_rule_set(tmp_path)
    assert result.ok and result.render() == f"{tmp_path}:1:1: warning: no *.rules files in this directory"


def test_invalid_utf8_points_at_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "bad.rules"
    path.write_bytes(b'rule "x" {\n  when subject contains "caf\xe9"\n  then stop\n}\n')
    result = load_rule_set(path)
    assert len(result.errors) == 1
    text = result.render()
    assert text.startswith(f"{path}:2:29: error: invalid UTF-8 (byte e9)")
    assert "^" in text


def test_nul_bytes_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "nul.rules"
    path.write_bytes(b'\xef\xbb\xbfrule "x" { then stop }\nrule "y" { then \x00 stop }\n')
    result = load_rule_set(path)
    assert [r.name for r in result.rule_set.rules] == ["x"]
    assert [(e.span.line, e.span.column) for e in result.errors] == [(2, 17)]
    assert "NUL character" in result.errors[0].message


def test_render_orders_errors_and_warnings_by_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text(
        'rule "w" { when seen and unseen then flag }\nrule "e" { when subject matches /(/ then flag }\n'
    )
    result = load_rule_set(tmp_path)
    assert [d.severity for d in result.diagnostics] == ["warning", "error"]
    assert len(result.warnings) == 1 and len(result.errors) == 1 and not result.ok
    lines = [ln for ln in result.render().splitlines() if not ln.startswith(" ")]
    assert lines[0].endswith('rule "w" can never match: it asks for a message both seen and not seen')
    assert ":2:33: error: invalid regular expression" in lines[1]


def test_given_path_is_relative_to_the_rule_file(tmp_path: Path) -> None:
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "m.eml").write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    (tmp_path / "t.rules").write_text('test "t" { given "mail/m.eml" expect keep }\n')
    assert load_rule_set(tmp_path).ok
