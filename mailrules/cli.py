"""Thin command line: check, explain, test, run, log, undo, doctor, auth, version."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from mailrules import __version__
from mailrules.cliexit import finish, whole_process
from mailrules.errors import ConfigError, StateError, StateLocked, StateOpenError

if TYPE_CHECKING:
    from mailrules.config import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TEMPFAIL = 75  # sysexits EX_TEMPFAIL: the state is in use by another process; try again later
EXIT_CONFIG = 78


def _fail_config(exc: ConfigError) -> NoReturn:
    click.echo(f"mailrules: configuration error:\n{exc}", err=True)
    sys.exit(EXIT_CONFIG)


def _fail_state(exc: StateError, stopped: str = "") -> NoReturn:
    """The state cannot be used: 75 when another process holds it, 78 when it cannot be opened,
    1 when it failed during the work (`stopped` says what that means)."""
    if isinstance(exc, StateLocked | StateOpenError):
        click.echo(f"mailrules: {exc}", err=True)
        sys.exit(EXIT_TEMPFAIL if isinstance(exc, StateLocked) else EXIT_CONFIG)
    click.echo(f"mailrules: {exc}{stopped}", err=True)
    sys.exit(EXIT_FAILED)


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


def _timezone(config: str | None) -> dt.tzinfo:
    """The configured time zone when a configuration is named (for calendar days), else UTC."""
    if config is None:
        return dt.UTC
    from mailrules.config import load_config

    try:
        return load_config(config).timezone
    except ConfigError as exc:
        _fail_config(exc)


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


entry = whole_process(main)  # the `mailrules` command and `python -m mailrules`: a process of its own


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

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    found = f"{count(errors, 'error')}, {count(warnings, 'warning')}"
    click.echo(f"{count(n_rules, 'rule')}, {count(n_tests, 'test')}: {found}")
    finish(EXIT_FAILED if errors or (strict and warnings) else EXIT_OK)


@main.command()
@click.argument("path", required=False)
@click.option("--config", "config", help="Take the rules directory from this configuration file.")
@click.option(
    "--server",
    type=click.Choice(["dovecot", "gmail", "microsoft", "rfc3501"]),
    default="dovecot",
    show_default=True,
    help="The server dialect to plan for.",
)
@click.option("--rule", "rule_name", help="Only this rule.")
def explain(path: str | None, config: str | None, server: str, rule_name: str | None) -> None:
    """Show, for every rule, the SEARCH sent to the server and what is checked locally."""
    from mailrules.commands.explain import explain_rule_set
    from mailrules.compile.dialect import Dialect

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
    click.echo(explain_rule_set(rules, Dialect.named(server), now=now, tz=_timezone(config)))


@main.command("test")
@click.argument("path", required=False)
@click.option("--config", "config", help="Take the rules directory from this configuration file.")
def test_cmd(path: str | None, config: str | None) -> None:
    """Run every `test` block of the rule files offline; exit 1 on any failure."""
    from mailrules.commands.rule_tests import format_outcomes, run_tests
    from mailrules.dsl.ast import RuleSet

    rule_set, code = _load(_rules_path(path, config))
    if rule_set is None:
        sys.exit(code)
    assert isinstance(rule_set, RuleSet)
    outcomes = run_tests(rule_set, tz=_timezone(config))
    click.echo(format_outcomes(outcomes))
    sys.exit(EXIT_FAILED if any(not o.passed for o in outcomes) else EXIT_OK)


def _settings(config: str | None) -> Settings:
    from mailrules.config import load_config

    try:
        settings = load_config(config)
    except ConfigError as exc:
        _fail_config(exc)
    for w in settings.warnings:
        click.echo(f"mailrules: warning: {w}", err=True)
    return settings


def _setup_logging(fmt: str, verbose: bool) -> None:
    from mailrules.logs import setup_logging

    setup_logging(fmt, logging.DEBUG if verbose else logging.INFO)


_config_option = click.option(
    "--config",
    "config",
    envvar="MAILRULES_CONFIG",
    help="Configuration file (default: $MAILRULES_CONFIG, else /etc/mailrules/mailrules.toml).",
)
_log_option = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log line format (default: config).",
)


@main.command()
@_config_option
@click.option("--account", "accounts", multiple=True, help="Only this account (repeatable).")
@click.option(
    "--rule", "rule_names", multiple=True, help="Only this rule or group (repeatable); runs `manually` too."
)
@click.option("--dry-run", is_flag=True, help="Print what would happen; change nothing.")
@click.option("--force", is_flag=True, help="Act even where a rule's `limit` would be exceeded.")
@click.option("--print-metrics", is_flag=True, help="After the summary, print the run's metrics.")
@_log_option
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def run(
    config: str | None,
    accounts: tuple[str, ...],
    rule_names: tuple[str, ...],
    dry_run: bool,
    force: bool,
    print_metrics: bool,
    log_format: str | None,
    verbose: bool,
) -> None:
    """Apply the rules to the messages already in their mailboxes (back-fill), then exit."""
    from mailrules.accounts import mailboxes_of, session_factory
    from mailrules.commands.run import format_summary, open_store, run_rules, select_rules
    from mailrules.dsl.ast import RuleSet
    from mailrules.errors import MailrulesError
    from mailrules.oauth.accounts import TokenManagers

    settings = _settings(config)
    _setup_logging(log_format or settings.log_format, verbose)
    unknown = [a for a in accounts if a not in settings.accounts]
    if unknown:
        click.echo(f"mailrules: no account named {', '.join(unknown)} in {settings.config_path}", err=True)
        sys.exit(EXIT_USAGE)
    rule_set, code = _load(settings.rules)
    if rule_set is None:
        sys.exit(code)
    assert isinstance(rule_set, RuleSet)
    try:
        rules = select_rules(rule_set.rules, rule_names)
    except MailrulesError as exc:
        click.echo(f"mailrules: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    metrics = None
    if print_metrics:
        from mailrules.daemon.metrics import Metrics

        metrics = Metrics()
        names = [r.name for r in rule_set.rules]
        metrics.init({n: mailboxes_of(rule_set.rules, n) for n in settings.accounts}, names)
    oauth = TokenManagers(metrics.oauth if metrics is not None else None)
    if metrics is not None:
        metrics.oauth.init(n for n, a in settings.accounts.items() if a.oauth2 is not None)
    connect = session_factory(oauth) if metrics is None else metrics.instrument(session_factory(oauth))
    try:
        # a dry run changes no mail and no checkpoint: it may run beside a daemon
        # beside daemons sharing a PostgreSQL state, the accounts are taken from them meanwhile
        claim = None if dry_run else list(accounts or settings.accounts)
        with open_store(settings, lock=None if dry_run else "mailrules run", claim=claim) as state:
            result = run_rules(
                settings,
                rules,
                accounts=accounts,
                dry_run=dry_run,
                force=force,
                state=state,
                connect=connect,
                observer=metrics,
                oauth=oauth,
            )
    except StateError as exc:
        _fail_state(exc, "; the run stopped there (the log says what it did)")
    click.echo(format_summary(result, dry_run))
    if metrics is not None:
        click.echo(metrics.exposition().decode("utf-8"), nl=False)
    for name in result.login_required:  # refused or missing OAuth2 tokens: the configuration's to fix
        click.echo(f"mailrules: account {name}: login required: run `mailrules auth login {name}`", err=True)
    finish(EXIT_CONFIG if result.login_required else EXIT_OK if result.ok else EXIT_FAILED)


@main.command("log")
@_config_option
@click.option("--rule", help="Only actions of this rule.")
@click.option("--message-id", "message_id", help="Only actions on this Message-ID (with or without <>).")
@click.option("--run", "run_id", help="Only actions of this run.")
@click.option("--account", help="Only this account.")
@click.option("-n", "--limit", default=50, show_default=True, help="At most this many lines.")
@click.option(
    "--pending",
    is_flag=True,
    help="Forwards, redirects and copies in doubt: announced, never confirmed (a crash mid-send).",
)
def log_cmd(
    config: str | None,
    rule: str | None,
    message_id: str | None,
    run_id: str | None,
    account: str | None,
    limit: int,
    pending: bool,
) -> None:
    """Which rule did what to which message, newest first (from the journal)."""
    settings = _settings(config)
    if message_id is not None and not message_id.startswith("<"):
        message_id = f"<{message_id}>"
    try:
        _print_log(settings, rule, message_id, run_id, account, limit, pending)
    except StateError as exc:
        _fail_state(exc)


def _print_log(
    settings: Settings,
    rule: str | None,
    message_id: str | None,
    run_id: str | None,
    account: str | None,
    limit: int,
    pending: bool,
) -> None:
    from mailrules.accounts import format_entry
    from mailrules.commands.run import open_store
    from mailrules.logs import printable

    with open_store(settings) as state:
        if pending:
            intents = state.pending_intents()
            for i in intents:
                key = printable(i.key)
                click.echo(f"{i.created_at:%Y-%m-%d %H:%M:%S} {format_entry(i.entry)}  key={key}")
            click.echo(
                f"{len(intents)} action(s) in doubt: check the recipient's mailbox (the destination of "
                "a copy); they are never repeated"
            )
            return
        if not any((rule, message_id, run_id, account)):
            runs = state.runs(limit=10)
            if runs:
                click.echo("recent runs:")
                for r in runs:
                    dry = " (dry run)" if r.dry_run else ""
                    started = f"{r.started_at:%Y-%m-%d %H:%M:%S %Z}"
                    click.echo(f"  {r.run_id}  {r.trigger}{dry}  {r.entries} actions  started {started}")
        entries = state.find(rule=rule, message_id=message_id, run_id=run_id, account=account, limit=limit)
    for e in entries:
        click.echo(f"{e.at:%Y-%m-%d %H:%M:%S} {e.run_id} {format_entry(e)}")
    if not entries:
        click.echo("no matching actions in the journal")


@main.command()
@_config_option
@click.option("--account", "accounts", multiple=True, help="Only this account (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for each network step.")
def doctor(config: str | None, accounts: tuple[str, ...], as_json: bool, timeout: float) -> None:
    """Check each account: DNS, TCP, TLS, login, capabilities, mailboxes, SMTP; exit 1 on a failure."""
    from mailrules.commands.doctor.checks import run_doctor
    from mailrules.commands.doctor.report import format_json, format_report

    settings = _settings(config)
    unknown = [a for a in accounts if a not in settings.accounts]
    if unknown:
        click.echo(f"mailrules: no account named {', '.join(unknown)} in {settings.config_path}", err=True)
        sys.exit(EXIT_USAGE)
    report = run_doctor(settings, accounts=accounts, timeout=timeout)
    click.echo(format_json(report) if as_json else format_report(report))
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


@main.command()
@_config_option
@click.argument("run_id")
@_log_option
def undo(config: str | None, run_id: str, log_format: str | None) -> None:
    """Move back what run RUN_ID moved and restore the flags it changed."""
    from mailrules.commands.run import open_store, undo_run
    from mailrules.errors import MailrulesError
    from mailrules.logs import printable

    settings = _settings(config)
    _setup_logging(log_format or settings.log_format, False)
    try:
        with open_store(settings, lock="mailrules undo") as state:
            result = undo_run(settings, state, run_id)
    except StateError as exc:
        _fail_state(exc)
    except MailrulesError as exc:
        click.echo(f"mailrules: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"undo {result.run_id} of run {run_id}: {result.undone} change(s) undone")
    for r in result.refused:  # journal rows of an older mailrules may hold a sender's CR/LF
        click.echo(f"  not undone: {printable(r)}")
    for e in result.errors:
        click.echo(f"  error: {printable(e)}")
    sys.exit(EXIT_FAILED if result.errors else EXIT_OK)


@main.command()
@_config_option
@_log_option
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def daemon(config: str | None, log_format: str | None, verbose: bool) -> None:
    """Watch mailboxes (IDLE), run scheduled rules, serve /metrics; SIGHUP reloads the rules."""
    from mailrules.daemon.service import Daemon

    settings = _settings(config)
    _setup_logging(log_format or settings.log_format, verbose)
    try:
        sys.exit(Daemon(settings).run())
    except StateError as exc:
        _fail_state(exc)


@main.group()
def auth() -> None:
    """OAuth2 accounts: log in (first tokens), show their state, log out."""


def _oauth_account(settings: Settings, name: str) -> None:
    if name not in settings.accounts:
        click.echo(f"mailrules: no account named {name} in {settings.config_path}", err=True)
        sys.exit(EXIT_USAGE)
    if settings.accounts[name].oauth2 is None:
        click.echo(
            f'mailrules: account {name} logs in with a password (set auth = "oauth2" to use OAuth2)', err=True
        )
        sys.exit(EXIT_USAGE)


@auth.command("login")
@_config_option
@click.argument("account")
@click.option("--no-browser", is_flag=True, help="Print the sign-in address instead of opening a browser.")
@click.option(
    "--port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the loopback redirect listener (authorization_code; 0: any free port).",
)
def auth_login(config: str | None, account: str, no_browser: bool, port: int) -> None:
    """Get ACCOUNT's first tokens with its flow (browser, device code or client credentials)."""
    import webbrowser

    from mailrules.commands.auth import LoginOptions, login
    from mailrules.errors import MailrulesError
    from mailrules.logs import printable

    settings = _settings(config)
    _oauth_account(settings, account)
    options = LoginOptions(open_url=None if no_browser else webbrowser.open, port=port)
    try:
        login(settings.accounts[account], click.echo, options, settings)  # settings: its state
    except MailrulesError as exc:
        click.echo(f"mailrules: login failed: {printable(str(exc))}", err=True)
        sys.exit(EXIT_FAILED)


@auth.command("status")
@_config_option
@click.argument("account", required=False)
def auth_status(config: str | None, account: str | None) -> None:
    """How each account (or ACCOUNT) logs in; of OAuth2 tokens: expiry, scopes, last refresh."""
    from mailrules.commands.auth import status

    settings = _settings(config)
    if account is not None and account not in settings.accounts:
        click.echo(f"mailrules: no account named {account} in {settings.config_path}", err=True)
        sys.exit(EXIT_USAGE)
    status(settings, [account] if account else [], click.echo)


@auth.command("logout")
@_config_option
@click.argument("account")
def auth_logout(config: str | None, account: str) -> None:
    """Remove ACCOUNT's stored tokens (the next login needs `mailrules auth login`)."""
    from mailrules.commands.auth import logout
    from mailrules.errors import MailrulesError

    settings = _settings(config)
    _oauth_account(settings, account)
    try:
        logout(settings.accounts[account], click.echo, settings)
    except MailrulesError as exc:
        click.echo(f"mailrules: {exc}", err=True)
        sys.exit(EXIT_FAILED)


@main.command("config")
@_config_option
def config_cmd(config: str | None) -> None:
    """Print the configuration as mailrules reads it (file, environment, presets), passwords as ***."""
    import json

    settings = _settings(config)
    click.echo(json.dumps(settings.redacted_dict(), indent=2, ensure_ascii=False))


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"mailrules {__version__}")


if __name__ == "__main__":  # pragma: no cover
    main()
