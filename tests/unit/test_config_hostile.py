"""Configuration files that cannot load (deep, binary, huge, not files) and names that cannot be sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mailrules.cli import EXIT_CONFIG, main
from mailrules.config import Settings, load_config
from mailrules.config.locate import too_deep
from mailrules.config.names import mailbox_problem
from mailrules.config.reading import MAX_CONFIG_BYTES, MAX_NESTING
from mailrules.errors import ConfigError

ACCOUNT = '[accounts.a]\nhost = "h"\nusername = "u@example.org"\npassword = "p"\n'


def path_of(tmp_path: Path) -> Path:
    return tmp_path / "mailrules.toml"


def rendered(tmp_path: Path, text: str | bytes, env: dict[str, str] | None = None) -> str:
    """The whole error text, with the path replaced by `F`."""
    path = path_of(tmp_path)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    with pytest.raises(ConfigError) as exc:
        load_config(path, env=env or {})
    return str(exc.value).replace(str(path), "F")


def errors(tmp_path: Path, text: str | bytes, env: dict[str, str] | None = None) -> list[str]:
    """The first line of each problem (its source line and caret, indented, left out)."""
    return [line for line in rendered(tmp_path, text, env).splitlines() if not line.startswith("    ")]


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path_of(tmp_path).write_text(text, encoding="utf-8")
    return load_config(path_of(tmp_path), env=env or {})


# -- files that do not load ------------------------------------------------------------------------

DEEP = "arrays and inline tables nested more than 100 levels deep"
HUGE = "a number with more than 4300 digits"
NOT_UTF8 = "the configuration is not valid UTF-8 text"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x = " + "[" * 2000 + "]" * 2000 + "\n", f"F:1:105: error: invalid TOML: {DEEP}"),
        ("x = " + "{a = " * 2000 + "1" + "}" * 2000 + "\n", f"F:1:505: error: invalid TOML: {DEEP}"),
        ("a = 1\nx = [\n" + "[{b = \n" * 60 + "1", f"F:52:2: error: invalid TOML: {DEEP}"),
        ("x = 1" + "0" * 5000 + "\n", f"F:1:5: error: invalid TOML: {HUGE}"),
        ("a = 1\nx = [1" + "0" * 5000 + "]\n", f"F:2:6: error: invalid TOML: {HUGE}"),
        (b"rules = 'ok'\nstate = '\xff'\n", f"F:2:10: error: {NOT_UTF8} (byte ff)"),
        (b"\xfe\xff\x00r\x00u", f"F:1:1: error: {NOT_UTF8} (byte fe)"),
    ],
)
def test_what_tomllib_cannot_read_is_one_problem_at_its_position(
    tmp_path: Path, text: str | bytes, message: str
) -> None:
    assert errors(tmp_path, text) == [message]


def test_nesting_up_to_the_limit_is_tomls_business(tmp_path: Path) -> None:
    at_limit = "x = " + "[" * MAX_NESTING + "]" * MAX_NESTING + "\n"
    assert errors(tmp_path, at_limit) == ["F:1:1: error: x: unknown key"]
    # Brackets inside strings and comments are not nesting.
    text = ACCOUNT + 'watch = ["' + "[" * 300 + "\", '{{{{', '''" + "[" * 300 + "'''] # " + "[" * 300 + "\n"
    assert load(tmp_path, text).accounts["a"].watch == ("[" * 300, "{{{{", "[" * 300)
    assert too_deep('x = "\\"[[["\ny = """[[[\n"""\nz = [[1]]', 2) is None
    assert too_deep("z = [[[1]]]", 2) == (1, 7)


def test_a_directory_a_huge_file_a_missing_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path, env={})
    assert str(exc.value) == f"{tmp_path}: error: cannot read the configuration: Is a directory"
    big = "# " + "x" * MAX_CONFIG_BYTES + "\n"
    assert errors(tmp_path, big) == ["F: error: the configuration is larger than 1024 KiB"]
    with pytest.raises(ConfigError) as exc:
        load_config("/dev/zero", env={})
    assert str(exc.value) == "/dev/zero: error: the configuration is larger than 1024 KiB"


def test_a_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    path_of(tmp_path).write_bytes(b"\xef\xbb\xbf" + ACCOUNT.encode())
    assert load_config(path_of(tmp_path), env={}).accounts["a"].host == "h"


def test_secret_files_that_are_not_secrets(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    text = ACCOUNT.replace('password = "p"', 'password_file = "{}"')
    for target, reason in [
        ("/dev/zero", "larger than 64 KiB"),
        (str(tmp_path / "dir"), "Is a directory"),
    ]:
        assert errors(tmp_path, text.format(target)) == [
            f"F:4:17: error: accounts.a.password_file: cannot read {target}: {reason}"
        ]
    assert errors(tmp_path, text.format("a\\u0000b")) == [
        "F:4:17: error: accounts.a.password_file: a path must not contain NUL"
    ]
    env = {"MAILRULES_ACCOUNTS__A__HOST_FILE": "/dev/zero"}
    assert errors(tmp_path, ACCOUNT, env) == [
        "$MAILRULES_ACCOUNTS__A__HOST_FILE: error: accounts.a.host: cannot read /dev/zero: larger than 64 KiB"
    ]


def test_paths_with_nul(tmp_path: Path) -> None:
    text = 'rules = "r\\u0000"\nstate = "s\\u0000"\n' + ACCOUNT + 'ca_file = "c\\u0000"\n'
    assert errors(tmp_path, text) == [
        "F:1:9: error: rules: a path must not contain NUL",
        "F:2:9: error: state: a path must not contain NUL",
        "F:7:11: error: accounts.a.ca_file: a path must not contain NUL",
    ]


FLAT = "$MAILRULES_ACCOUNTS__A__WATCH: error: accounts.a.watch: expected a TOML array of strings"


def test_environment_arrays_are_flat(tmp_path: Path) -> None:
    deep = "[" * 2000 + "]" * 2000
    got = errors(tmp_path, ACCOUNT, {"MAILRULES_ACCOUNTS__A__WATCH": deep})
    assert len(got) == 1
    assert got[0].startswith(FLAT)
    got = errors(tmp_path, ACCOUNT, {"MAILRULES_ACCOUNTS__A__WATCH": "[1" + "0" * 5000 + "]"})
    assert got[0].startswith(FLAT)


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "[" * 2000 + "]" * 2000 + "\n",
        "x = 1" + "0" * 5000 + "\n",
        b"\xff\xfe",
        ACCOUNT + 'watch = ["IN\\r\\nBOX"]\n',
    ],
)
def test_the_command_exits_78_without_a_traceback(tmp_path: Path, text: str | bytes) -> None:
    path = path_of(tmp_path)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == EXIT_CONFIG, result.output
    assert "configuration error" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_config_that_is_a_directory_exits_78(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["check", "--config", str(tmp_path)])
    assert result.exit_code == EXIT_CONFIG
    assert f"{tmp_path}: error: cannot read the configuration: Is a directory" in result.output


# -- names -----------------------------------------------------------------------------------------


def test_mailbox_names_are_checked_everywhere_with_their_key_and_line(tmp_path: Path) -> None:
    text = (
        ACCOUNT
        + 'watch = ["INBOX", "IN\\r\\nBOX", "Lists/*", "50%", "", "a\\u0000b", "del\\u007f", "c1\\u0085", '
        '"tab\\t"]\n'
        'archive = "Arch\\nive"\n'
        'trash = "*"\n'
        "[accounts.b]\n"
        'host = "h"\nusername = "u"\npassword = "p"\narchive = "%"\ntrash = ""\n'
    )
    assert errors(tmp_path, text) == [
        "F:5:9: error: accounts.a.watch: mailbox name 'IN\\r\\nBOX' contains a carriage return (CR)",
        "F:5:9: error: accounts.a.watch: mailbox name 'Lists/*' contains '*', a LIST wildcard, which "
        "cannot be part of a mailbox name",
        "F:5:9: error: accounts.a.watch: mailbox name '50%' contains '%', a LIST wildcard, which cannot "
        "be part of a mailbox name",
        "F:5:9: error: accounts.a.watch: a mailbox name must not be empty",
        "F:5:9: error: accounts.a.watch: mailbox name 'a\\x00b' contains NUL",
        "F:5:9: error: accounts.a.watch: mailbox name 'del\\x7f' contains the control character U+007F",
        "F:5:9: error: accounts.a.watch: mailbox name 'c1\\x85' contains the control character U+0085",
        "F:5:9: error: accounts.a.watch: mailbox name 'tab\\t' contains a tab",
        "F:6:11: error: accounts.a.archive: mailbox name 'Arch\\nive' contains a line feed (LF)",
        "F:7:9: error: accounts.a.trash: mailbox name '*' contains '*', a LIST wildcard, which cannot be "
        "part of a mailbox name",
        "F:12:11: error: accounts.b.archive: mailbox name '%' contains '%', a LIST wildcard, which cannot "
        "be part of a mailbox name",
        "F:13:9: error: accounts.b.trash: must not be empty",
    ]


def test_mailbox_names_from_the_environment(tmp_path: Path) -> None:
    env = {"MAILRULES_ACCOUNTS__A__WATCH": "INBOX, Lists/%", "MAILRULES_ACCOUNTS__A__TRASH": "T\rX"}
    assert errors(tmp_path, ACCOUNT, env) == [
        "$MAILRULES_ACCOUNTS__A__WATCH: error: accounts.a.watch: mailbox name 'Lists/%' contains '%', a LIST "
        "wildcard, which cannot be part of a mailbox name",
        "$MAILRULES_ACCOUNTS__A__TRASH: error: accounts.a.trash: mailbox name 'T\\rX' contains a carriage "
        "return (CR)",
    ]


def test_good_mailbox_names_pass() -> None:
    for name in ("INBOX", "[Gmail]/All Mail", "Boîte/Été", "a&b", "x]y", 'quote"d', "back\\slash"):
        assert mailbox_problem(name) is None


def test_usernames_hosts_and_senders_have_no_control_characters(tmp_path: Path) -> None:
    text = (
        "[accounts.a]\n"
        'host = "imap\\r\\nexample"\n'
        'username = "u\\r\\nX1 DELETE INBOX"\n'
        'password = "p"\n'
        "[accounts.a.smtp]\n"
        'host = "smtp\\u0000"\n'
        'username = "s\\nu"\n'
        'password = "p"\n'
        'from = "me@example.org\\r\\nBcc: x@example.org"\n'
    )
    assert errors(tmp_path, text) == [
        "F:2:8: error: accounts.a.host: 'imap\\r\\nexample' contains a carriage return (CR)",
        "F:3:12: error: accounts.a.username: 'u\\r\\nX1 DELETE INBOX' contains a carriage return (CR)",
        "F:6:8: error: accounts.a.smtp.host: 'smtp\\x00' contains NUL",
        "F:7:12: error: accounts.a.smtp.username: 's\\nu' contains a line feed (LF)",
        "F:9:8: error: accounts.a.smtp.from: 'me@example.org\\r\\nBcc: x@example.org' contains a carriage "
        "return (CR)",
    ]
    env = {"MAILRULES_ACCOUNTS__A__USERNAME": "u\x1b[31m"}
    assert errors(tmp_path, ACCOUNT, env) == [
        "$MAILRULES_ACCOUNTS__A__USERNAME: error: accounts.a.username: 'u\\x1b[31m' contains the control "
        "character U+001B"
    ]


def test_a_password_with_a_line_break_is_refused_without_showing_it(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"s3cret\n\n")
    text = ACCOUNT.replace('password = "p"', 'password = "s3cret\\r\\nX1 DELETE INBOX"')
    text += '[accounts.b]\nhost = "h"\nusername = "u"\npassword_file = "pw"\n'
    text += '[accounts.c]\nhost = "h"\nusername = "u"\npassword_env = "C_PASS"\n'
    got = errors(tmp_path, text, {"C_PASS": "s3cret\x00"})
    assert got == [
        "F:4:12: error: accounts.a.password: the password contains a carriage return (CR)",
        f"F:8:17: error: accounts.b.password_file: the password from password_file {tmp_path / 'pw'} "
        "contains a line feed (LF)",
        "F:12:16: error: accounts.c.password_env: the password from $C_PASS contains NUL",
    ]
    assert "s3cret" not in "\n".join(got)


def test_values_echoed_in_errors_have_their_control_characters_escaped(tmp_path: Path) -> None:
    assert errors(tmp_path, 'timezone = "Europe/\\u001b[2JParis"\n' + ACCOUNT) == [
        "F:1:12: error: timezone: unknown time zone 'Europe/\\x1b[2JParis'"
    ]


def test_account_names_have_no_control_characters(tmp_path: Path) -> None:
    text = ACCOUNT.replace("[accounts.a]", '[accounts."a\\u001b[2Jb"]')
    assert errors(tmp_path, text) == [
        'F:1:2: error: accounts."a\\x1b[2Jb": an account name contains the control character U+001B'
    ]
