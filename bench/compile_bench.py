"""Benchmark (CPU time): parse + check (+ plan) of a generated 10,000-rule set."""

from __future__ import annotations

import datetime as dt
import importlib
import sys
import time

from mailrules.dsl import ast
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.parser import get_parser, parse_text

TEMPLATES = (
    'rule "r{i}" {{\n    when from contains "user{i}@example.org" and not seen\n'
    '    then move to "Folder/{i}"\n}}\n',
    'rule "r{i}" in "INBOX", "Lists" every 10 minutes {{\n    when subject matches /^\\[list-{i}\\] (.*)/\n'
    '    then move to "Lists/{{match.1}}"; mark read\n}}\n',
    'rule "r{i}" {{\n    when (size > {i} KB or has attachment) and older than {i} days\n'
    '    then archive\n}}\n',
    'rule "r{i}" for account "work" {{\n'
    '    when header "X-Tag" is any ["a{i}", "b{i}"] or from domain is "d{i}.org"\n'
    '    then tag "$L{i}", flag\n}}\n',
)


def generate(n: int) -> str:
    return "".join(TEMPLATES[i % len(TEMPLATES)].format(i=i) for i in range(n))


def main(n: int = 10_000) -> None:
    text = generate(n)
    t0 = time.process_time()
    get_parser()
    t1 = time.process_time()
    rule_file, diags = parse_text(text, "bench.rules")
    t2 = time.process_time()
    assert rule_file is not None and not diags, diags[:3]
    rule_set = ast.RuleSet((rule_file,), {"bench.rules": text})
    problems = [d for d in check_rule_set(rule_set, {"bench.rules": text}) if d.severity == "error"]
    t3 = time.process_time()
    assert not problems, problems[:3]
    print(f"grammar load: {t1 - t0:.3f} s")
    print(f"parse {n} rules: {t2 - t1:.3f} s ({n / (t2 - t1):,.0f} rules/s)")
    print(f"check: {t3 - t2:.3f} s")
    try:
        plan = importlib.import_module("mailrules.compile.plan")
        dialect_mod = importlib.import_module("mailrules.compile.dialect")
        dialect = dialect_mod.Dialect.named("dovecot")
        now = dt.datetime.now(dt.UTC)
        t4 = time.process_time()
        for r in rule_file.rules:
            plan.plan_condition(r.condition, dialect, now, dt.UTC)
        t5 = time.process_time()
        print(f"plan: {t5 - t4:.3f} s")
    except (ImportError, AttributeError) as err:
        print(f"plan: skipped ({err})")
    total = t3 - t1
    print(f"parse + check: {total:.3f} s ({n / total:,.0f} rules/s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
