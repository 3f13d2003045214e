"""Environment overrides: MAILRULES_A__B__C, values parsed by the key's type, *_FILE variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailrules.config import Settings, load_config
from mailrules.errors import ConfigError

BASE = """\
timezone = "Europe/Paris"
[metrics]
listen = "127.0.0.1:9464"
[accounts.Work]
host = "imap.example.com"
username = "me@example.com"
password_file = "missing-on-purpose"
watch = ["INBOX"]
archive = "Archive"
"""


def load(tmp_path: Path, env: dict[str, str], text: str = BASE) -> Settings:
    path = tmp_path / "mailrules.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env=env)


def fails(tmp_path: Path, env: dict[str, str], text: str = BASE) -> list[str]:
    """The first line of each problem (the source line and caret of the file's left out)."""
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, env, text)
    return [line for line in str(exc.value).splitlines() if not line.startswith("    ")]


PW = {"MAILRULES_ACCOUNTS__WORK__PASSWORD": "from-env"}


def test_password_override_replaces_the_files_secret_key(tmp_path: Path) -> None:
    s = load(tmp_path, PW)
    work = s.accounts["Work"]  # the file's spelling, matched case-insensitively
    assert work.password is not None
    assert work.password.reveal() == "from-env"
    assert list(s.accounts) == ["Work"]


def test_docker_secret_file_variable(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("from-secret-file\n", encoding="utf-8")
    s = load(tmp_path, {"MAILRULES_ACCOUNTS__WORK__PASSWORD_FILE": str(tmp_path / "secret")})
    password = s.accounts["Work"].password
    assert password is not None
    assert password.reveal() == "from-secret-file"
    assert password.source == f"password_file {tmp_path / 'secret'}"


def test_any_key_can_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "user").write_text("robot@example.com\n", encoding="utf-8")
    (tmp_path / "port").write_text("1993\n", encoding="utf-8")
    env = {
        **PW,
        "MAILRULES_ACCOUNTS__WORK__USERNAME_FILE": "user",  # relative to the config file
        "MAILRULES_ACCOUNTS__WORK__PORT_FILE": str(tmp_path / "port"),
    }
    work = load(tmp_path, env).accounts["Work"]
    assert (work.username, work.port) == ("robot@example.com", 1993)


def test_scalar_overrides_are_parsed_by_type(tmp_path: Path) -> None:
    env = {
        **PW,
        "MAILRULES_METRICS__LISTEN": "",
        "MAILRULES_TIMEZONE": "Asia/Tokyo",
        "mailrules_log_format": "json",  # names are case-insensitive
        "MAILRULES_STATE": "var/state.db",
        "MAILRULES_ACCOUNTS__WORK__PORT": "1993",
        "MAILRULES_ACCOUNTS__WORK__TLS": "starttls",
        "MAILRULES_ACCOUNTS__WORK__CREATE_MAILBOXES": "yes",
        "MAILRULES_ACCOUNTS__WORK__ALLOW_INSECURE": "0",
        "MAILRULES_ACCOUNTS__WORK__MAX_CONNECTIONS": "7",
        "MAILRULES_ACCOUNTS__WORK__POLL_INTERVAL": "2.5",
        "MAILRULES_ACCOUNTS__WORK__ARCHIVE": "",  # empty unsets an optional key
    }
    s = load(tmp_path, env)
    assert (s.metrics.listen, s.timezone.key, s.log_format) == ("", "Asia/Tokyo", "json")
    assert s.state == tmp_path / "var/state.db"
    w = s.accounts["Work"]
    assert (w.port, w.tls, w.create_mailboxes, w.allow_insecure) == (1993, "starttls", True, False)
    assert (w.max_connections, w.poll_interval, w.archive) == (7, 2.5, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("INBOX, Lists/rust ,Lists/python", ("INBOX", "Lists/rust", "Lists/python")),
        ('["INBOX", "a,b"]', ("INBOX", "a,b")),
        ("", ()),
        ("Sent", ("Sent",)),
    ],
)
def test_list_override(tmp_path: Path, value: str, expected: tuple[str, ...]) -> None:
    s = load(tmp_path, {**PW, "MAILRULES_ACCOUNTS__WORK__WATCH": value})
    assert s.accounts["Work"].watch == expected


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("Yes", True),
        ("false", False),
        ("0", False),
        ("no", False),
    ],
)
def test_bool_words(tmp_path: Path, word: str, value: bool) -> None:
    s = load(tmp_path, {**PW, "MAILRULES_ACCOUNTS__WORK__CREATE_MAILBOXES": word})
    assert s.accounts["Work"].create_mailboxes is value


def test_override_creates_a_new_account(tmp_path: Path) -> None:
    env = {
        **PW,
        "MAILRULES_ACCOUNTS__LAB__HOST": "127.0.0.1",
        "MAILRULES_ACCOUNTS__LAB__USERNAME": "bench",
        "MAILRULES_ACCOUNTS__LAB__PASSWORD": "bench",
        "MAILRULES_ACCOUNTS__LAB__SMTP__HOST": "127.0.0.1",
        "MAILRULES_ACCOUNTS__LAB__SMTP__FROM": "bench@example.org",
    }
    s = load(tmp_path, env)
    assert list(s.accounts) == ["Work", "lab"]
    lab = s.accounts["lab"]
    assert lab.password is not None
    assert (lab.host, lab.port, lab.username, lab.password.reveal()) == ("127.0.0.1", 993, "bench", "bench")
    assert lab.smtp is not None and (lab.smtp.host, lab.smtp.from_, lab.smtp.password) == (
        "127.0.0.1",
        "bench@example.org",
        None,
    )


def test_smtp_password_override(tmp_path: Path) -> None:
    text = BASE + '[accounts.Work.smtp]\nhost = "smtp"\npassword_env = "UNSET"\n'
    s = load(tmp_path, {**PW, "MAILRULES_ACCOUNTS__WORK__SMTP__PASSWORD": "smtp-pw"}, text)
    smtp = s.accounts["Work"].smtp
    assert smtp is not None and smtp.password is not None and smtp.password.reveal() == "smtp-pw"
    assert smtp.username == "me@example.com"


def test_other_variables_are_ignored(tmp_path: Path) -> None:
    s = load(tmp_path, {**PW, "HOME": "/root", "MAILRULESX": "1", "MAILRULES_CONFIG": "/elsewhere"})
    assert s.accounts["Work"].host == "imap.example.com"


def test_override_errors(tmp_path: Path) -> None:
    env = {
        **PW,
        "MAILRULES_ACCOUNTS__WORK__PORT": "imaps",
        "MAILRULES_ACCOUNTS__WORK__CREATE_MAILBOXES": "maybe",
        "MAILRULES_ACCOUNTS__WORK__POLL_INTERVAL": "soon",
        "MAILRULES_ACCOUNTS__WORK__WATCH": "[1, 2]",
        "MAILRULES_ACCOUNTS__WORK__PROT": "1",
        "MAILRULES_METRICS__LISTN": "x",
        "MAILRULES_METRICS": "x",
        "MAILRULES_ACCOUNTS": "x",
        "MAILRULES_ACCOUNTS__WORK": "x",
        "MAILRULES_ACCOUNTS__WORK__SMTP": "x",
        "MAILRULES_TIMEZONE__X": "x",
        "MAILRULES_ACCOUNTS___WORK__HOST": "x",
        "MAILRULES_ACCOUNTS__WORK__HOST_FILE": "/nonexistent/host",
    }
    assert fails(tmp_path, env) == [
        "$MAILRULES_ACCOUNTS: error: accounts is a table; set one account's key, "
        "e.g. $MAILRULES_ACCOUNTS__WORK__HOST",
        "$MAILRULES_ACCOUNTS__WORK: error: accounts.Work is a table; set one of its keys, "
        "e.g. $MAILRULES_ACCOUNTS__WORK__HOST",
        "$MAILRULES_ACCOUNTS__WORK__CREATE_MAILBOXES: error: accounts.Work.create_mailboxes: "
        "expected a boolean (true/false, 1/0, yes/no), got 'maybe'",
        "$MAILRULES_ACCOUNTS__WORK__HOST_FILE: error: accounts.Work.host: "
        "cannot read /nonexistent/host: No such file or directory",
        "$MAILRULES_ACCOUNTS__WORK__POLL_INTERVAL: error: accounts.Work.poll_interval: "
        "expected a number, got 'soon'",
        "$MAILRULES_ACCOUNTS__WORK__PORT: error: accounts.Work.port: expected an integer, got 'imaps'",
        "$MAILRULES_ACCOUNTS__WORK__PROT: error: accounts.Work.prot: unknown key (did you mean 'port'?)",
        "$MAILRULES_ACCOUNTS__WORK__SMTP: error: accounts.Work.smtp is a table; set one of its keys, "
        "e.g. $MAILRULES_ACCOUNTS__WORK__SMTP__HOST",
        "$MAILRULES_ACCOUNTS__WORK__WATCH: error: accounts.Work.watch: expected an array of strings, "
        "got '[1, 2]'",
        "$MAILRULES_ACCOUNTS___WORK__HOST: error: malformed name: levels are separated by exactly two "
        "underscores",
        "$MAILRULES_METRICS: error: metrics is a table; set one of its keys, e.g. $MAILRULES_METRICS__LISTEN",
        "$MAILRULES_METRICS__LISTN: error: metrics.listn: unknown key (did you mean 'listen'?)",
        "$MAILRULES_TIMEZONE__X: error: timezone is not a table",
    ]


def test_override_values_are_validated_like_the_files(tmp_path: Path) -> None:
    env = {**PW, "MAILRULES_ACCOUNTS__WORK__MAX_CONNECTIONS": "99", "MAILRULES_TIMEZONE": "Mars/Olympus"}
    assert fails(tmp_path, env) == [
        "$MAILRULES_TIMEZONE: error: timezone: unknown time zone 'Mars/Olympus'",
        "$MAILRULES_ACCOUNTS__WORK__MAX_CONNECTIONS: error: accounts.Work.max_connections: "
        "must be between 1 and 50, got 99",
    ]


def test_two_secret_overrides_for_one_account_conflict(tmp_path: Path) -> None:
    env = {**PW, "MAILRULES_ACCOUNTS__WORK__PASSWORD_ENV": "X"}
    assert fails(tmp_path, env) == [
        "$MAILRULES_ACCOUNTS__WORK__PASSWORD: error: accounts.Work: set only one of password, password_file, "
        "password_env (found password, password_env)",
    ]


def test_new_account_missing_keys_points_at_the_variable(tmp_path: Path) -> None:
    assert fails(tmp_path, {**PW, "MAILRULES_ACCOUNTS__NEW__USERNAME": "x"}) == [
        "$MAILRULES_ACCOUNTS__NEW__USERNAME: error: accounts.new.host: required "
        "(or set provider to one of fastmail, gmail, google, microsoft, outlook, yahoo)",
        "$MAILRULES_ACCOUNTS__NEW__USERNAME: error: accounts.new: no password: set password, password_file "
        "or password_env",
    ]
