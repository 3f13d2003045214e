"""The command's process ends early only after its output and logs are written, and only when alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailrules import cliexit

PRELUDE = """
import atexit, logging, sys, threading
from mailrules.cliexit import finish, whole_process
atexit.register(lambda: print("teardown ran"))
logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
"""


def _run(tmp_path: Path, body: str) -> tuple[int, str, str, str]:
    log = tmp_path / "log.txt"
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + body, str(log)], capture_output=True, text=True, check=False
    )
    return done.returncode, done.stdout, done.stderr, log.read_text() if log.exists() else ""


def test_a_whole_process_leaves_after_writing_everything(tmp_path: Path) -> None:
    body = """
def main():
    sys.stdout.write("x" * 100_000 + "\\nsummary\\n")  # more than a pipe's buffer, not flushed yet
    sys.stderr.write("diagnostics\\n")
    logging.getLogger("m").info("logged")
    finish(3)
whole_process(main)()
"""
    code, out, err, log = _run(tmp_path, body)
    assert code == 3 and out.endswith("x\nsummary\n") and len(out) == 100_009
    assert err == "diagnostics\n" and "logged" in log
    assert "teardown ran" not in out  # Python's teardown skipped


def test_a_running_thread_takes_the_ordinary_way_out(tmp_path: Path) -> None:
    body = """
go = threading.Event()
def worker():
    go.wait()
    print("worker done")
t = threading.Thread(target=worker)
t.start()
def main():
    threading.Timer(0.01, go.set).start()
    finish(0)
whole_process(main)()
"""
    code, out, _, _ = _run(tmp_path, body)
    assert code == 0 and "worker done" in out and "teardown ran" in out


def test_called_as_a_library_it_is_sys_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cliexit, "_whole_process", False)
    monkeypatch.setattr(os, "_exit", lambda code: pytest.fail("os._exit under a test runner"))
    with pytest.raises(SystemExit) as exc:
        cliexit.finish(1)
    assert exc.value.code == 1


def test_mailrules_check_prints_its_summary_and_exit_code(tmp_path: Path) -> None:
    (tmp_path / "a.rules").write_text('rule "a" { when all then stop }\nrule "b" { when seen then stop }\n')
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    for _ in range(2):  # parsed, then from the cache directory
        done = subprocess.run(
            [sys.executable, "-m", "mailrules", "check", "--strict", str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.returncode == 1
        assert done.stdout == "2 rules, 0 tests: 0 errors, 1 warning\n"
        assert "never sees a message" in done.stderr


def test_a_run_process_of_its_own_collects_young_objects_less_often(tmp_path: Path) -> None:
    body = """
import gc
from mailrules.cliexit import RUN_GC_THRESHOLD, run_collector
before = gc.get_threshold()
def main():
    run_collector()
    print(before[0], gc.get_threshold() == (RUN_GC_THRESHOLD, *before[1:]))
    finish(0)
whole_process(main)()
"""
    code, out, _, _ = _run(tmp_path, body)
    assert code == 0 and out == "700 True\n"


def test_under_a_test_runner_the_collector_keeps_its_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    monkeypatch.setattr(cliexit, "_whole_process", False)
    before = gc.get_threshold()
    cliexit.run_collector()
    assert gc.get_threshold() == before
