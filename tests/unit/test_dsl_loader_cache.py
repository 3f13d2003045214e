"""load_rule_set() again: unchanged files are not parsed again, changed ones are, results stay exact."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailrules.dsl import loader, parser
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.loader import clear_cache, load_rule_set
from mailrules.dsl.parser import parse_text


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's memory of the last load only: no cache directory (test_dsl_parse_cache.py)."""
    blocker = tmp_path_factory.mktemp("no-cache") / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    clear_cache()
    yield
    clear_cache()


@pytest.fixture()
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every parse_text call the loader makes."""
    calls: list[str] = []
    real = parse_text  # what the loader calls (it imports it from the parser)

    def counting(text: str, path: str) -> Any:
        calls.append(path)
        return real(text, path)

    monkeypatch.setattr(loader, "parse_text", counting)
    return calls


def _write(root: Path) -> tuple[Path, Path]:
    a, b = root / "10-a.rules", root / "20-b.rules"
    a.write_text('rule "A" { when from contains "x" then move to "X" }\n')
    b.write_text('rule "B" { when seen then archive }\n')
    return a, b


def test_second_load_of_an_unchanged_set_parses_nothing(tmp_path: Path, parses: list[str]) -> None:
    a, b = _write(tmp_path)
    first = load_rule_set(tmp_path)
    assert parses == [str(a), str(b)] and first.parsed == (str(a), str(b))
    second = load_rule_set(tmp_path)
    assert parses == [str(a), str(b)] and second.parsed == ()
    assert second.rule_set == first.rule_set and second.diagnostics == first.diagnostics
    assert second.sources == first.sources and second.ok


def test_only_the_changed_file_is_parsed_again(tmp_path: Path, parses: list[str]) -> None:
    a, b = _write(tmp_path)
    load_rule_set(tmp_path)
    b.write_text('rule "B" { when seen then flag }\n')
    result = load_rule_set(tmp_path)
    assert parses == [str(a), str(b), str(b)] and result.parsed == (str(b),)
    assert [type(r.actions[0]).__name__ for r in result.rule_set.rules] == ["Move", "SetFlag"]
    assert result.sources[str(b)] == 'rule "B" { when seen then flag }\n'


def test_a_touched_file_with_the_same_bytes_is_not_parsed(tmp_path: Path, parses: list[str]) -> None:
    a, _ = _write(tmp_path)
    load_rule_set(tmp_path)
    a.write_bytes(a.read_bytes())  # a new mtime, the same content
    assert load_rule_set(tmp_path).parsed == () and len(parses) == 2


def test_cross_file_diagnostics_follow_a_change_in_one_file(tmp_path: Path) -> None:
    a, b = _write(tmp_path)
    assert load_rule_set(tmp_path).ok
    b.write_text('rule "a" { then stop }\n')  # now a duplicate of rule "A" in the other file
    result = load_rule_set(tmp_path)
    assert result.parsed == (str(b),)
    assert [e.span.file for e in result.errors] == [str(b)]
    assert "first defined at " + str(a) + ":1:6" in result.errors[0].message
    b.write_text('rule "B" { when seen then archive }\n')
    again = load_rule_set(tmp_path)
    assert again.ok and again.diagnostics == [] and again.parsed == (str(b),)


def test_added_and_removed_files(tmp_path: Path) -> None:
    a, _ = _write(tmp_path)
    load_rule_set(tmp_path)
    c = tmp_path / "30-c.rules"
    c.write_text('rule "C" { then stop }\n')
    result = load_rule_set(tmp_path)
    assert result.parsed == (str(c),) and [r.name for r in result.rule_set.rules] == ["A", "B", "C"]
    a.unlink()
    result = load_rule_set(tmp_path)
    assert result.parsed == () and [r.name for r in result.rule_set.rules] == ["B", "C"]
    assert str(a) not in result.sources
    a.write_text('rule "A" { when from contains "x" then move to "X" }\n')
    assert load_rule_set(tmp_path).parsed == (str(a),)  # forgotten when it was gone


def test_errors_are_remembered_exactly(tmp_path: Path) -> None:
    (tmp_path / "bad.rules").write_bytes(b'rule "x" {\n  when subject contains "caf\xe9"\n  then stop\n}\n')
    (tmp_path / "syntax.rules").write_text('rule "y" { when from then stop }\nrule "z" { then stop }\n')
    first = load_rule_set(tmp_path)
    second = load_rule_set(tmp_path)
    assert second.parsed == () and not second.ok
    assert second.render() == first.render() and second.diagnostics == first.diagnostics
    assert [r.name for r in second.rule_set.rules] == ["x", "z"]  # "y" has a syntax error


def test_tests_are_checked_again_when_no_rule_file_changed(tmp_path: Path, parses: list[str]) -> None:
    """A test's message file is outside the rule files: its check runs on every load."""
    (tmp_path / "mail").mkdir()
    eml = tmp_path / "mail" / "m.eml"
    eml.write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    (tmp_path / "t.rules").write_text('test "t" { given "mail/m.eml" expect keep }\n')
    assert load_rule_set(tmp_path).ok
    eml.unlink()
    result = load_rule_set(tmp_path)
    assert result.parsed == () and len(parses) == 1
    assert [e.message for e in result.errors] == [f"message file not found: {eml}"]


def test_a_result_changed_by_its_caller_does_not_change_the_next(tmp_path: Path) -> None:
    _write(tmp_path)
    first = load_rule_set(tmp_path)
    first.diagnostics.append(first.diagnostics[0] if first.diagnostics else _fake_diag())
    first.sources.clear()
    second = load_rule_set(tmp_path)
    assert second.diagnostics == [] and len(second.sources) == 2 and len(second.rule_set.sources) == 2


def _fake_diag() -> Any:
    from mailrules.source import Diagnostic, Span

    return Diagnostic(Span("x", 1, 1), "added by the caller")


def test_another_directory_with_the_same_file_names_is_parsed(tmp_path: Path, parses: list[str]) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "r.rules").write_text('rule "one" { then stop }\n')
    (two / "r.rules").write_text('rule "two" { then stop }\n')
    assert [r.name for r in load_rule_set(one).rule_set.rules] == ["one"]
    assert [r.name for r in load_rule_set(two).rule_set.rules] == ["two"]
    assert [r.name for r in load_rule_set(one).rule_set.rules] == ["one"]
    assert len(parses) == 3  # only the last rule set is kept


def test_clear_cache_parses_everything_again(tmp_path: Path, parses: list[str]) -> None:
    _write(tmp_path)
    load_rule_set(tmp_path)
    clear_cache()
    assert len(load_rule_set(tmp_path).parsed) == 2 and len(parses) == 4


def test_a_single_file_is_remembered_too(tmp_path: Path, parses: list[str]) -> None:
    a, _ = _write(tmp_path)
    load_rule_set(a)
    assert load_rule_set(a).parsed == () and parses == [str(a)]


def test_garbage_collection_is_paused_during_a_load_and_restored(tmp_path: Path) -> None:
    _write(tmp_path)
    seen: list[bool] = []
    real = check_rule_set

    def spy(*args: Any) -> Any:
        seen.append(gc.isenabled())
        return real(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loader, "check_rule_set", spy)
        assert gc.isenabled()
        load_rule_set(tmp_path)
        assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        with parser.gc_paused():
            pass
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


def test_gc_is_restored_when_the_load_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path)

    def boom(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(loader, "check_rule_set", boom)
    with pytest.raises(RuntimeError):
        load_rule_set(tmp_path)
    assert gc.isenabled()
