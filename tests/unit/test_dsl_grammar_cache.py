"""The grammar's parser tables cached in the user's cache directory, only where that is safe."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import pytest
from lark import Lark

from mailrules.dsl.parser import build_parser, grammar_text, tables_cache_file

SPEC = Path(__file__).resolve().parents[1] / "fixtures" / "dsl" / "ok" / "spec_examples.rules"


def _items(parser: Lark, callbacks: Any, text: str) -> list[Any]:
    callbacks.builder.reset("f.rules", 0)
    return list(cast(list[Any], parser.parse(text)))  # the inline transformer's items, not a Tree


def test_tables_are_written_once_then_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    grammar = grammar_text()
    cache = tables_cache_file(grammar)
    assert cache is not None and Path(cache).parent == tmp_path / "mailrules"
    assert (tmp_path / "mailrules").stat().st_mode & 0o777 == 0o700
    fresh, fresh_cb = build_parser(grammar, cache)
    assert Path(cache).is_file()
    loads: list[object] = []
    real_load = Lark._load

    def spy(self: Lark, *args: Any, **kwargs: Any) -> Any:
        loads.append(self)
        return real_load(self, *args, **kwargs)

    monkeypatch.setattr(Lark, "_load", spy)
    cached, cached_cb = build_parser(grammar, cache)
    assert loads == [cached]
    text = SPEC.read_text(encoding="utf-8")
    items = _items(cached, cached_cb, text)
    assert items and items == _items(fresh, fresh_cb, text)
    assert cached_cb.builder.diagnostics == []


def test_a_damaged_cache_file_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    grammar = grammar_text()
    cache = tables_cache_file(grammar)
    assert cache is not None
    Path(cache).write_bytes(b"not a cache\n")
    parser, callbacks = build_parser(grammar, cache)
    assert _items(parser, callbacks, 'rule "x" { then stop }\n')
    assert Path(cache).stat().st_size > 1000  # written again


def test_no_cache_in_a_directory_others_can_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "mailrules").mkdir(mode=0o700)
    os.chmod(tmp_path / "mailrules", 0o777)
    assert tables_cache_file(grammar_text()) is None


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the directory to another user")
def test_no_cache_in_a_directory_of_another_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "mailrules").mkdir(mode=0o700)
    os.chown(tmp_path / "mailrules", 65534, 65534)
    assert tables_cache_file(grammar_text()) is None


def test_no_cache_when_the_directory_cannot_be_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert tables_cache_file(grammar_text()) is None
    parser, callbacks = build_parser(grammar_text(), None)
    assert _items(parser, callbacks, 'rule "x" { then stop }\n')


def test_a_relative_xdg_cache_home_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    cache = tables_cache_file(grammar_text())
    assert cache is not None and Path(cache).parent == tmp_path / ".cache" / "mailrules"
