"""Parsed rule files and check results kept in the cache directory: equal to a parse, never unsafe."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailrules.dsl import codekey, loader, parse_cache
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.loader import LoadResult, clear_cache, load_rule_set
from mailrules.source import Diagnostic, Span

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dsl" / "ok"

RULES = """\
rule "lists" in "INBOX", "Lists" every 10 minutes {
    when list matches /^<?([a-z0-9-]+)\\./ and not (seen or flagged)
    then move to "Lists/{match.1|lower}"; mark read
}
rule "old" {
    when (size > 2 KB or has attachment) and older than 30 days and received before 2024-01-31
    then archive to "Archive/{year}"
}
rule "tags" for account "work" {
    when header "X-Tag" is any ["a", "b"] or from domain is "d.org" or attachment name matches /\\.pdf$/
    then tag "$L", flag; copy to "Seen"
}
group "nightly" every day at 03:00 {
    rule "n1" { when from is "x@y.org" then delete }
    rule "n2" { when all then stop }
}
"""
#: A rule set whose check finds a warning: the second rule never sees a message.
SHADOWED = """\
rule "all" { when all then move to "A" }
rule "never" { when seen then move to "B" }
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    clear_cache()
    yield tmp_path / "xdg" / "mailrules"
    clear_cache()


def _rules(tmp_path: Path, **files: str) -> Path:
    root = tmp_path / "rules.d"
    root.mkdir(exist_ok=True)
    for name, text in files.items():
        (root / f"{name}.rules").write_text(text, encoding="utf-8")
    return root


def _no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(text: str, path: str) -> Any:
        raise AssertionError(f"parsed {path}")

    monkeypatch.setattr(loader, "parse_text", refuse)


def _again(root: Path) -> LoadResult:
    clear_cache()  # a new process: only the cache directory remembers
    return load_rule_set(root)


def test_a_second_process_reads_every_file_and_the_checks_back(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _rules(tmp_path, a=RULES, b=SHADOWED)
    first = load_rule_set(root)
    assert first.parsed == (str(root / "a.rules"), str(root / "b.rules")) and first.from_disk == ()
    assert [d.severity for d in first.diagnostics] == ["warning"]
    assert len(list(cache.glob("parsed-*.marshal"))) == 1
    _no_parse(monkeypatch)
    monkeypatch.setattr(loader, "check_rule_set", lambda *a: pytest.fail("checked again"))
    second = _again(root)
    assert second.parsed == () and second.from_disk == first.parsed
    assert second.rule_set == first.rule_set and second.diagnostics == first.diagnostics
    assert second.sources == first.sources
    assert all(
        type(r.span) is Span and r.span.file == str(root / "a.rules") for r in second.rule_set.files[0].rules
    )


def test_the_specification_examples_read_back_equal(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "spec"
    shutil.copytree(FIXTURES, root)
    first = load_rule_set(root)
    second = _again(root)
    assert second.from_disk == first.parsed and second.rule_set == first.rule_set
    assert second.diagnostics == first.diagnostics


def test_a_changed_file_is_parsed_and_checked_the_others_read(tmp_path: Path, cache: Path) -> None:
    root = _rules(tmp_path, a=RULES, b=SHADOWED)
    load_rule_set(root)
    (root / "b.rules").write_text('rule "only" { when seen then move to "B" }\n', encoding="utf-8")
    result = _again(root)
    assert result.parsed == (str(root / "b.rules"),) and result.from_disk == (str(root / "a.rules"),)
    assert result.diagnostics == []  # checked again: the warning is gone
    assert _again(root).from_disk == (str(root / "a.rules"), str(root / "b.rules"))


def test_a_file_with_a_syntax_error_is_never_kept(tmp_path: Path, cache: Path) -> None:
    root = _rules(tmp_path, a=RULES, b='rule "x" { when then }\n')
    first = load_rule_set(root)
    assert not first.ok
    second = _again(root)
    assert second.parsed == (str(root / "b.rules"),) and second.diagnostics == first.diagnostics


def test_test_blocks_are_checked_in_every_process(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "spec"
    shutil.copytree(FIXTURES, root)
    load_rule_set(root)
    checks: list[object] = []

    def counting(*args: Any) -> list[Diagnostic]:
        checks.append(args)
        return check_rule_set(*args)

    monkeypatch.setattr(loader, "check_rule_set", counting)
    _again(root)
    assert len(checks) == 1  # the message files named by `given` may have changed


@pytest.mark.parametrize("damage", [b"", b"garbage", b"\xe3\x01\x00\x00\x00", None])
def test_a_damaged_file_is_ignored_and_written_again(
    tmp_path: Path, cache: Path, damage: bytes | None
) -> None:
    root = _rules(tmp_path, a=RULES)
    first = load_rule_set(root)
    (path,) = cache.glob("parsed-*.marshal")
    if damage is None:  # well-formed, but naming a class outside the AST's modules
        import marshal

        path.write_bytes(marshal.dumps((1, (("os:system", ()),), {str(root / "a.rules"): (b"x", [0])}, None)))
    else:
        path.write_bytes(damage)
    second = _again(root)
    assert second.parsed == (str(root / "a.rules"),) and second.rule_set == first.rule_set
    assert _again(root).from_disk == (str(root / "a.rules"),)


def test_a_file_others_can_write_is_not_read(tmp_path: Path, cache: Path) -> None:
    root = _rules(tmp_path, a=RULES)
    load_rule_set(root)
    (path,) = cache.glob("parsed-*.marshal")
    os.chmod(path, 0o664)
    assert _again(root).parsed == (str(root / "a.rules"),)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the file to another user")
def test_a_file_of_another_user_is_not_read(tmp_path: Path, cache: Path) -> None:
    root = _rules(tmp_path, a=RULES)
    load_rule_set(root)
    (path,) = cache.glob("parsed-*.marshal")
    os.chown(path, 65534, 65534)
    assert _again(root).parsed == (str(root / "a.rules"),)


def test_other_code_reads_another_file_and_removes_the_old_one(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _rules(tmp_path, a=RULES)
    load_rule_set(root)
    (old,) = cache.glob("parsed-*.marshal")
    monkeypatch.setattr(parse_cache, "code_digest", lambda: "f" * 64)  # e.g. the grammar changed
    assert _again(root).parsed == (str(root / "a.rules"),)
    (new,) = cache.glob("parsed-*.marshal")
    assert new != old and new.name.endswith("-" + "f" * 16 + ".marshal")


def test_the_code_digest_follows_the_grammar(monkeypatch: pytest.MonkeyPatch) -> None:
    first = codekey.code_digest()
    codekey.code_digest.cache_clear()
    real = codekey.grammar_text
    monkeypatch.setattr(codekey, "grammar_text", lambda: real() + "\n// changed\n")
    try:
        assert first is not None and codekey.code_digest() not in (None, first)
    finally:
        codekey.code_digest.cache_clear()


def test_no_cache_directory_parses_every_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    root = _rules(tmp_path, a=RULES)
    clear_cache()
    assert load_rule_set(root).parsed == (str(root / "a.rules"),)
    assert _again(root).parsed == (str(root / "a.rules"),)
    clear_cache()


def test_a_warm_process_does_not_import_the_parser(tmp_path: Path) -> None:
    root = _rules(tmp_path, a=RULES, b=SHADOWED)
    script = (
        "import sys; from mailrules.dsl.loader import load_rule_set; r = load_rule_set(sys.argv[1]); "
        "print(len(r.rule_set.rules), len(r.diagnostics), 'lark' in sys.modules, 'regex' in sys.modules)"
    )
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", script, str(root)], env=env, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    assert run() == "7 1 True True"
    assert run() == "7 1 False False"


def test_values_outside_the_format_are_refused() -> None:
    import datetime as dt
    from zoneinfo import ZoneInfo

    codec = parse_cache._Codec()
    for value in (object(), [1], {"a": 1}, b"x", dt.datetime(2026, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))):
        with pytest.raises(parse_cache.Unsupported):
            codec.encode(value, "f")
    fixed = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    for ok in (fixed, dt.date(2026, 2, 3), dt.time(3, 0), (1, "a", None, True, 2.5), Span("g", 1, 2, 3, 4)):
        assert codec.decode(codec.encode(ok, "f"), "f") == ok
