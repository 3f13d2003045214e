"""Thin command line: check, explain, test, run, log, undo, doctor, version."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import NoReturn

import click

from mailrules import __version__
from mailrules.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78


def _fail_config(exc: ConfigError) -> NoReturn:
    click.echo(f"mailrules: configuration error:\n{exc}", err=True)
    sys.exit(EXIT_CONFIG)


def _rules_path(path: str | None, config: str | None) -> Path:
    """PATH as given; else the config's `rules` when a config is named; else ./rules.d."""
    if path is not None:
        return Path(path)
    if config is not None:
        from mailrules.config import load_config

        try:
            return load_config(config).rules
        except ConfigError as exc:
            _fail_config(exc)
    return Path("rules.d")


def _load(path: Path, strict: bool = False) -> tuple[object, int]:
    """Load and check a rule set; print diagnostics; return (rule_set or None, exit code)."""
    from mailrules.dsl.loader import load_rule_set

    result = load_rule_set(path)
    if result.diagnostics:
        click.echo(result.render(), err=True)
    if not result.ok or (strict and result.warnings):
        return None, EXIT_FAILED
    return result.rule_set, EXIT_OK


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mailrules")
def main() -> None:
    """mailrules: filtering rules for IMAP mailboxes, run on arrival and on schedule."""


@main.command()
@click.argument("path", required=False)
@click.option("--config", "config", help="Take the rules directory from this configuration file.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1).")
def check(path: str | None, config: str | None, strict: bool) -> None:
    """Parse and check the rule files in PATH (default: rules.d)."""
    from mailrules.dsl.loader import load_rule_set

    result = load_rule_set(_rules_path(path, config))
    if result.diagnostics:
        click.echo(result.render(), err=True)
    n_rules = len(result.rule_set.rules)
    n_tests = len(result.rule_set.tests)
    errors, warnings = len(result.errors), len(result.warnings)
    click.echo(f"{n_rules} rules, {n_tests} tests: {errors} errors, {warnings} warnings")
    sys.exit(EXIT_FAILED if errors or (strict and warnings) else EXIT_OK)


@main.command()
@click.argument("path", required=False)
@click.option("--config", "config", help="Take the rules directory from this configuration file.")
@click.option(
    "--server",
    type=click.Choice(["dovecot", "gmail", "rfc3501"]),
    default="dovecot",
    show_default=True,
    help="The server dialect to plan for.",
)
@click.option("--rule", "rule_name", help="Only this rule.")
def explain(path: str | None, config: str | None, server: str, rule_name: str | None) -> None:
    """Show, for every rule, the SEARCH sent to the server and what is checked locally."""
    from mailrules.compile.dialect import Dialect
    from mailrules.explain import explain_rule_set

    rule_set, code = _load(_rules_path(path, config))
    if rule_set is None:
        sys.exit(code)
    from mailrules.dsl.ast import RuleSet

    assert isinstance(rule_set, RuleSet)
    rules = rule_set.rules
    if rule_name is not None:
        rules = tuple(r for r in rules if r.name.casefold() == rule_name.casefold())
        if not rules:
            click.echo(f"mailrules: no rule named {rule_name!r}", err=True)
            sys.exit(EXIT_USAGE)
    now = dt.datetime.now(dt.UTC)
    click.echo(explain_rule_set(rules, Dialect.named(server), now=now, tz=dt.UTC))


@main.command("test")
@click.argument("path", required=False)
@click.option("--config", "config", help="Take the rules directory from this configuration file.")
def test_cmd(path: str | None, config: str | None) -> None:
    """Run every `test` block of the rule files offline; exit 1 on any failure."""
    from mailrules.dsl.ast import RuleSet
    from mailrules.testing import format_outcomes, run_tests

    rule_set, code = _load(_rules_path(path, config))
    if rule_set is None:
        sys.exit(code)
    assert isinstance(rule_set, RuleSet)
    outcomes = run_tests(rule_set)
    click.echo(format_outcomes(outcomes))
    sys.exit(EXIT_FAILED if any(not o.passed for o in outcomes) else EXIT_OK)


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"mailrules {__version__}")


if __name__ == "__main__":  # pragma: no cover
    main()
