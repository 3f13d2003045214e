"""The dataclasses' generated methods, kept compiled in the cache directory: the same classes, made faster."""

from __future__ import annotations

import dataclasses
import marshal
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailrules import classcache

pytestmark = pytest.mark.skipif(
    not classcache._supported(dataclasses._create_fn),  # type: ignore[attr-defined]
    reason="the table replaces CPython 3.11's dataclasses._create_fn only",
)


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    classcache.uninstall()
    yield tmp_path / "mailrules"
    classcache.uninstall()


def _make() -> tuple[type, type]:
    """Two classes with every generated method: frozen slotted with a default, and a plain one."""

    @dataclasses.dataclass(frozen=True, slots=True)
    class Point:
        x: int
        y: int = 2
        tags: tuple[str, ...] = ()

    @dataclasses.dataclass(order=True)
    class Box:
        name: str
        items: list[int] = dataclasses.field(default_factory=list)

    return Point, Box


def _behaviour(point: type, box: type) -> list[object]:
    p, q = point(1), point(1, 2, ("a",))
    b = box("n")
    b.items.append(3)
    try:
        p.x = 5
        frozen = "assigned"
    except dataclasses.FrozenInstanceError as exc:
        frozen = str(exc)
    return [
        repr(p),
        repr(q),
        p == point(1, 2),
        p == q,
        hash(p) == hash(point(1)),
        frozen,
        repr(b),
        box("a") < box("b"),
        b == box("n", [3]),
        vars(point)["__init__"].__qualname__,
        vars(point)["__init__"].__code__.co_filename,
    ]


def test_the_classes_behave_as_dataclasses_makes_them(cache_home: Path) -> None:
    expected = _behaviour(*_make())
    assert classcache.install()
    made = _make()  # compiled here, kept in the table
    assert _behaviour(*made) == expected
    assert classcache.save()
    assert _behaviour(*_make()) == expected  # from the table, in this process
    classcache.uninstall()
    assert classcache.install()  # another process's start: the file read
    again = _make()
    assert _behaviour(*again) == expected
    assert not classcache.save()  # nothing compiled that the file lacked: nothing written


def test_the_table_holds_code_by_its_text(cache_home: Path) -> None:
    assert classcache.install()
    _make()
    assert classcache.save()
    path = classcache.cache_path()
    assert path is not None and Path(path).parent == cache_home
    table = marshal.loads(Path(path).read_bytes())
    signature = "def __init__(self,x:_type_x,y:_type_y=_dflt_y,tags:_type_tags=_dflt_tags)"
    init = next(t for t in table if signature in t)
    assert table[init].co_filename == "<string>"
    assert Path(path).stat().st_mode & 0o077 == 0


def test_a_damaged_or_foreign_table_is_not_used(cache_home: Path) -> None:
    expected = _behaviour(*_make())
    path = classcache.cache_path()
    assert path is not None
    for damage in (b"\x00not marshal", marshal.dumps(["a list"]), marshal.dumps({"text": 3})):
        Path(path).write_bytes(damage)
        os.chmod(path, 0o600)
        classcache.uninstall()
        assert classcache.install()
        assert _behaviour(*_make()) == expected
        assert classcache.save()  # compiled, so written again whole
    classcache.uninstall()
    os.chmod(path, 0o666)  # writable by others: holds code, never read
    assert classcache.install()
    assert _behaviour(*_make()) == expected
    assert classcache.save()


def test_another_create_fn_is_left_alone(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def other(*args: object, **kwargs: object) -> object:
        raise AssertionError("not called")

    monkeypatch.setattr(dataclasses, "_create_fn", other)
    assert not classcache.install()
    assert dataclasses._create_fn is other  # type: ignore[attr-defined]
    assert not classcache.installed()


def test_without_a_cache_directory_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)  # writable by others: no cache directory in it
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared))
    (shared / "mailrules").mkdir()
    os.chmod(shared / "mailrules", 0o777)
    classcache.uninstall()
    original = dataclasses._create_fn  # type: ignore[attr-defined]
    assert not classcache.install()
    assert dataclasses._create_fn is original  # type: ignore[attr-defined]
    assert not classcache.save()


def test_a_save_past_the_bound_keeps_what_the_process_used(
    cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = classcache.cache_path()
    assert path is not None
    stale = {f"def stale{i}(): pass": compile("pass", "<string>", "exec") for i in range(5)}
    Path(path).write_bytes(marshal.dumps(stale))
    os.chmod(path, 0o600)
    monkeypatch.setattr(classcache, "MAX_ENTRIES", 4)
    assert classcache.install()
    _make()
    assert classcache.save()
    table = marshal.loads(Path(path).read_bytes())
    assert not any(t.startswith("def stale") for t in table) and len(table) > 4


def test_a_command_process_writes_the_table_and_the_next_one_reads_it(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text('rule "a" { when seen then stop }\n')
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    stamps = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "mailrules", "check", str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        tables = list((tmp_path / "xdg" / "mailrules").glob("dataclass-code-*.marshal"))
        assert len(tables) == 1
        st = tables[0].stat()
        stamps.append((st.st_ino, st.st_mtime_ns))
        assert len(marshal.loads(tables[0].read_bytes())) > 100
    assert stamps[0] == stamps[1]  # the second found every method in it: nothing written


def test_a_table_that_could_not_be_written_is_written_by_the_next_save(
    cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert classcache.install()
    _make()
    monkeypatch.setattr(classcache, "write_atomic", lambda path, data: False)
    assert not classcache.save()
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home.parent))
    assert classcache.save()
    path = classcache.cache_path()
    assert path is not None and len(marshal.loads(Path(path).read_bytes())) >= 4
