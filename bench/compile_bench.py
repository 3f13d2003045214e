"""Benchmark (CPU time): parse, check, plan and load of a generated 10,000-rule set, and `mailrules check`.

Every figure is the median of `--repeat` runs in CPU time (time.process_time in-process, the
child's rusage for the CLI), so a busy machine slows it less than wall time would. In-process
stages keep the previous stage's result alive (as the daemon keeps its rules while it reloads).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mailrules.dsl import ast, loader
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.parser import get_parser, parse_text

TEMPLATES = (
    'rule "r{i}" {{\n    when from contains "user{i}@example.org" and not seen\n'
    '    then move to "Folder/{i}"\n}}\n',
    'rule "r{i}" in "INBOX", "Lists" every 10 minutes {{\n    when subject matches /^\\[list-{i}\\] (.*)/\n'
    '    then move to "Lists/{{match.1}}"; mark read\n}}\n',
    'rule "r{i}" {{\n    when (size > {i} KB or has attachment) and older than {i} days\n'
    "    then archive\n}}\n",
    'rule "r{i}" for account "work" {{\n'
    '    when header "X-Tag" is any ["a{i}", "b{i}"] or from domain is "d{i}.org"\n'
    '    then tag "$L{i}", flag\n}}\n',
)


def generate(n: int, first: int = 0) -> str:
    return "".join(TEMPLATES[i % len(TEMPLATES)].format(i=i) for i in range(first, first + n))


def write_rules_dir(root: Path, n: int, files: int) -> list[Path]:
    """`files` rule files of n/files rules each (names unique across the set)."""
    per = n // files
    paths = []
    for k in range(files):
        path = root / f"{k:02d}-bench.rules"
        path.write_text(generate(per, k * per), encoding="utf-8")
        paths.append(path)
    return paths


def cpu(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float], Any]:
    """Median CPU seconds of `repeat` calls, every run's seconds, and the last result.

    Each run starts after a full collection and ends, inside the timing, with a collection of
    the two young generations (what the stage made and has not collected yet, not the older
    heap): a stage that pauses the cyclic GC pays here for the collections it put off.
    """
    runs = []
    result = None
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        result = fn()
        gc.collect(1)
        runs.append(time.process_time() - t0)
    return statistics.median(runs), runs, result


def cli_cpu(
    args: list[str], repeat: int, before: Callable[[], None] = lambda: None
) -> tuple[float, list[float]]:
    """Median CPU seconds (user + system, from the child's rusage) of a command, from exec to exit;
    `before` runs before each (outside the timing)."""
    runs = []
    for _ in range(repeat):
        before()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} exited {proc.returncode}")
        runs.append(usage.ru_utime + usage.ru_stime)
    return statistics.median(runs), runs


def show(label: str, median: float, runs: list[float], n: int | None = None) -> None:
    rate = f" ({n / median:,.0f} rules/s)" if n and median > 0 else ""
    each = " / ".join(f"{r:.3f}" for r in runs)
    print(f"{label:<44} {median:7.3f} s{rate}   [{each}]")


def clear_cache() -> None:
    clear = getattr(loader, "clear_cache", None)
    if clear is not None:
        clear()


def clear_disk() -> None:
    """Forget the parse cache of the cache directory (the grammar tables and regexes stay)."""
    for path in Path(os.environ["XDG_CACHE_HOME"], "mailrules").glob("parsed-*"):
        path.unlink()


def measure(n: int, files: int, repeat: int, cli: bool, only_parse: bool = False) -> dict[str, list[float]]:
    """Every stage's CPU seconds, `repeat` runs each, by label (in the order measured)."""
    out: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="mr-compile-cache-") as cache:
        # A cache directory of the bench's own (inherited by `mailrules check`): the grammar's tables
        # are in it after the first get_parser; the parse cache is emptied where a stage says cold.
        os.environ["XDG_CACHE_HOME"] = cache
        return _measure(n, files, repeat, cli, only_parse, out)


def _measure(
    n: int, files: int, repeat: int, cli: bool, only_parse: bool, out: dict[str, list[float]]
) -> dict[str, list[float]]:
    text = generate(n)
    t0 = time.process_time()
    get_parser()
    out["grammar load (first get_parser, in-process)"] = [time.process_time() - t0]

    _, out[f"parse_text, {n} rules, one file"], (rule_file, diags) = cpu(
        lambda: parse_text(text, "bench.rules"), repeat
    )
    assert rule_file is not None and not diags and len(rule_file.rules) == n, diags[:3]
    if only_parse:
        return out

    rule_set = ast.RuleSet((rule_file,), {"bench.rules": text})
    _, out["check_rule_set"], problems = cpu(lambda: check_rule_set(rule_set, {"bench.rules": text}), repeat)
    errors = [d for d in problems if d.severity == "error"]
    assert not errors, errors[:3]

    try:
        plan = importlib.import_module("mailrules.compile.plan")
        dialect = importlib.import_module("mailrules.compile.dialect").Dialect.named("dovecot")
        now = dt.datetime.now(dt.UTC)

        def plan_all() -> None:
            for r in rule_file.rules:
                plan.plan_condition(r.condition, dialect, now, dt.UTC)

        _, out["plan (Dovecot dialect)"], _ = cpu(plan_all, repeat)
    except (ImportError, AttributeError) as err:
        print(f"plan: skipped ({err})")

    with tempfile.TemporaryDirectory(prefix="mr-compile-bench-") as tmp:
        root = Path(tmp)
        paths = write_rules_dir(root, n, files)

        def cold() -> loader.LoadResult:
            clear_cache()
            clear_disk()
            return loader.load_rule_set(root)

        _, out[f"load_rule_set, {files} files, cold"], result = cpu(cold, repeat)
        assert result.ok and len(result.rule_set.rules) == n, result.render()[:500]

        def from_disk() -> loader.LoadResult:
            clear_cache()  # as a new process: only the cache directory remembers
            return loader.load_rule_set(root)

        _, out[f"load_rule_set, {files} files, from the cache dir"], result = cpu(from_disk, repeat)
        assert result.ok and len(result.rule_set.rules) == n, result.render()[:500]

        def warm() -> loader.LoadResult:
            return loader.load_rule_set(root)

        _, out["load_rule_set again, no file changed"], _ = cpu(warm, repeat)

        def one_changed() -> loader.LoadResult:
            with paths[0].open("a", encoding="utf-8") as f:
                f.write("# touched\n")
            return loader.load_rule_set(root)

        _, out[f"load_rule_set again, 1 of {files} files changed"], _ = cpu(one_changed, repeat)
        if cli:
            check = [sys.executable, "-m", "mailrules", "check", str(root)]
            _, out["`mailrules check DIR` (process, CPU)"] = cli_cpu(check, repeat, clear_disk)
            _, out["`mailrules check DIR`, cache dir filled"] = cli_cpu(check, repeat)
            _, out["  of which: python + import mailrules.cli"] = cli_cpu(
                [sys.executable, "-c", "import mailrules.cli"], repeat
            )
    return out


def compare(other: str, args: list[str], repeat: int) -> None:
    """Each tree measured once per round, `repeat` rounds, alternating: medians and new/old ratio."""
    here = str(Path(__file__).resolve().parents[1])
    trees = {"old": str(Path(other).resolve()), "new": here}
    runs: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    for _ in range(repeat):
        for name, tree in trees.items():
            env = dict(os.environ, PYTHONPATH=tree)
            cmd = [sys.executable, __file__, *args, "--repeat", "1", "--json"]
            done = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{name} ({tree}) failed:\n{done.stderr}")
            for label, values in json.loads(done.stdout.splitlines()[-1]).items():
                runs[name].setdefault(label, []).extend(values)
    print(f"old: {trees['old']}\nnew: {trees['new']}\n{repeat} rounds, CPU seconds, median [runs]")
    print(f"{'':<44} {'old':>8} {'new':>8} {'new/old':>8}")
    for label, new in runs["new"].items():
        old = runs["old"].get(label)
        if old is None:
            continue
        a, b = statistics.median(old), statistics.median(new)
        ratio = f"{b / a:8.2f}" if a > 0 else f"{'':>8}"
        print(f"{label:<44} {a:8.3f} {b:8.3f} {ratio}")
        print(f"{'':<44} [{' / '.join(f'{x:.3f}' for x in old)}] [{' / '.join(f'{x:.3f}' for x in new)}]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("rules", nargs="?", type=int, default=10_000, help="number of rules (default 10,000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure; the median is shown")
    ap.add_argument("--files", type=int, default=10, help="files the rule set is split into for load/CLI")
    ap.add_argument("--no-cli", action="store_true", help="skip `mailrules check` in a subprocess")
    ap.add_argument("--only-parse", action="store_true", help="only parse_text (for profilers)")
    ap.add_argument("--json", action="store_true", help="print every run of every stage as JSON")
    ap.add_argument(
        "--against",
        metavar="TREE",
        help="also measure the mailrules package of another checkout (e.g. `git archive` of an older "
        "commit), alternating rounds; prints both and the ratio",
    )
    opts = ap.parse_args()
    if opts.against:
        args = [str(opts.rules), "--files", str(opts.files)] + (["--no-cli"] if opts.no_cli else [])
        compare(opts.against, args, opts.repeat)
        return
    out = measure(opts.rules, opts.files, opts.repeat, not opts.no_cli, opts.only_parse)
    if opts.json:
        print(json.dumps(out))
        return
    for label, runs in out.items():
        n = opts.rules if label.startswith(("parse", "load", "`mailrules")) else None
        show(label, statistics.median(runs), runs, n)


if __name__ == "__main__":
    main()
