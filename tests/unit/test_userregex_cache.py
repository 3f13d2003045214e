"""The regex translations kept in the cache directory: read back equal, ignored when unsafe or stale."""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailrules.dsl import userregex
from mailrules.dsl.userregex import compile_user_regex

# (pattern, flags): an ASCII class under IGNORECASE, \w, \d, \s, a literal that becomes (?i:...),
# a negated class, and a case-sensitive class.
ITEMS = (
    ("^([a-z0-9-]+)\\.", ""),
    ("\\w+", ""),
    ("\\d", ""),
    ("\\s", "c"),
    ("k", ""),
    ("[^x]", ""),
    ("[A-F]", "c"),
)


def _forget() -> None:
    for fn in (userregex._disk_file, userregex._disk, userregex._single, compile_user_regex):
        fn.cache_clear()


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _forget()
    yield tmp_path / "mailrules"
    _forget()


def _sources() -> list[str]:
    out = []
    for pattern, flags in ITEMS:
        compiled = compile_user_regex(pattern, flags)
        assert compiled is not None and compiled.compiled is not None
        out.append(compiled.source)
    return out


def _cache_file() -> Path:
    path = userregex._disk_file()
    assert path is not None
    return Path(path)


def _no_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(source: str, flags: int, literal: bool) -> str:
        raise AssertionError(f"translated again: {source!r}")

    monkeypatch.setattr(userregex, "_translate", refuse)


def test_translations_read_back_equal_the_computed_ones(
    cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed = _sources()
    path = _cache_file()
    assert path.parent == cache_home and path.name.startswith("userregex-")
    table = json.loads(path.read_text(encoding="ascii"))
    assert len(table) >= len(ITEMS) - 1  # the case-sensitive literal needs no scan and is not kept
    assert any(caseless for _, caseless in table.values())  # `k` under IGNORECASE is (?i:k)
    _forget()
    _no_scan(monkeypatch)
    assert _sources() == computed


def test_a_corrupt_file_is_ignored_and_replaced(cache_home: Path) -> None:
    computed = _sources()
    path = _cache_file()
    for damage in (b"{not json", b"[1, 2]", b'{"x": "not a pair"}', b"\xff\xfe"):
        path.write_bytes(damage)
        _forget()
        assert _sources() == computed
        assert json.loads(path.read_text(encoding="ascii"))  # written again, whole


def test_a_file_others_can_write_is_not_read(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    computed = _sources()
    path = _cache_file()
    os.chmod(path, 0o666)
    _forget()
    translated: list[str] = []
    real = userregex._translate

    def counting(source: str, flags: int, literal: bool) -> str:
        translated.append(source)
        return real(source, flags, literal)

    monkeypatch.setattr(userregex, "_translate", counting)
    assert _sources() == computed
    assert translated  # computed again, not read


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the file to another user")
def test_a_file_of_another_user_is_not_read(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _sources()
    path = _cache_file()
    table = json.loads(path.read_text(encoding="ascii"))
    path.write_text(json.dumps({k: ["(?!)", False] for k in table}), encoding="ascii")
    os.chown(path, 65534, 65534)
    _forget()
    assert compile_user_regex("\\d", "") is not None
    assert compile_user_regex("\\d", "").search("7") is not None  # type: ignore[union-attr]


def test_no_cache_directory_still_translates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    _forget()
    try:
        assert userregex._disk_file() is None
        regex = compile_user_regex("[a-z]+", "")
        assert regex is not None and regex.search("ABC") is not None
    finally:
        _forget()


def test_the_file_name_changes_with_the_versions(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _cache_file()
    monkeypatch.setattr(userregex, "__version__", "99.0")
    userregex._disk_file.cache_clear()
    second = _cache_file()
    monkeypatch.setattr(unicodedata, "unidata_version", "1.0.0")
    userregex._disk_file.cache_clear()
    third = _cache_file()
    assert len({first, second, third}) == 3


def test_every_code_point_is_every_code_point() -> None:
    text = userregex._every_code_point()
    assert len(text) == 0x110000
    assert all(
        ord(text[i]) == i for i in (0, 0x41, 0xD7FF, 0xD800, 0xDFFF, 0xE000, 0xFFFF, 0x10000, 0x10FFFF)
    )
    assert text == "".join(map(chr, range(0x110000)))
