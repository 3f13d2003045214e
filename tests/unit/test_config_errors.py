"""Every configuration problem, with its exact message and line; warnings; the key-line scanner."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailrules.config import Settings, load_config
from mailrules.config.locate import key_lines, key_places
from mailrules.errors import ConfigError

ACCOUNT = '[accounts.a]\nhost = "h"\nusername = "u@example.org"\npassword = "p"\n'


def path_of(tmp_path: Path) -> Path:
    return tmp_path / "mailrules.toml"


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = path_of(tmp_path)
    path.write_text(text, encoding="utf-8")
    return load_config(path, env=env or {})


def rendered(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    """The whole error text, with the path replaced by `F`."""
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text, env)
    return str(exc.value).replace(str(path_of(tmp_path)), "F")


def errors(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """The first line of each problem (its source line and caret, indented, left out)."""
    return [line for line in rendered(tmp_path, text, env).splitlines() if not line.startswith("    ")]


def warnings(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    return [w.replace(str(path_of(tmp_path)), "F") for w in load(tmp_path, text, env).warnings]


# -- TOML syntax -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('rules = "x"\nstate = \n', "F:2:9: error: invalid TOML: invalid value"),
        ('[accounts.a]\nhost = "h\n', "F:2:10: error: invalid TOML: illegal character '\\n'"),
        ("port = 1\nport = 2\n", "F:2:9: error: invalid TOML: cannot overwrite a value"),
        ("x = {a = 1\n", "F:1:11: error: invalid TOML: unclosed inline table"),
        ("[accounts\n", "F:1:10: error: invalid TOML: expected ']' at the end of a table declaration"),
    ],
)
def test_toml_syntax_errors_are_path_line_col(tmp_path: Path, text: str, message: str) -> None:
    assert errors(tmp_path, text) == [message]


def test_unreadable_or_binary_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.toml", env={})
    assert str(exc.value) == (
        f"{tmp_path / 'nope.toml'}: error: cannot read the configuration: No such file or directory"
    )
    path_of(tmp_path).write_bytes(b"rules = 'caf\xe9'\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path_of(tmp_path), env={})
    assert str(exc.value) == (
        f"{path_of(tmp_path)}:1:13: error: the configuration is not valid UTF-8 text (byte e9)\n"
        "    rules = 'caf\ufffd'\n"
        "                ^"
    )


# -- the whole text: the rule errors' format --------------------------------------------------------


def test_a_problem_shows_its_line_and_a_caret_under_the_key_or_the_value(tmp_path: Path) -> None:
    text = """\
rule = "rules.d"
[accounts.work]
host = "h"
username = "u@example.org"
password = "p"
tls = "ssl"
smtp = { host = "s", form = "x@y" }
watch = [
  "INBOX",
  "",
]
[accounts.other]
host = "h"
username = "u"
"""
    # Unknown keys and tables at the key, wrong values at the value (a value over several lines
    # at its first character); the environment's problems last, on one line naming the variable.
    assert (
        rendered(tmp_path, text, {"MAILRULES_ACCOUNTS__WORK__PORT": "imaps"})
        == """\
F:1:1: error: rule: unknown key (did you mean 'rules'?)
    rule = "rules.d"
    ^^^^
F:6:7: error: accounts.work.tls: expected one of 'implicit', 'starttls', 'none', got 'ssl'
    tls = "ssl"
          ^^^^^
F:7:22: error: accounts.work.smtp.form: unknown key (did you mean 'from'?)
    smtp = { host = "s", form = "x@y" }
                         ^^^^
F:8:9: error: accounts.work.watch: a mailbox name must not be empty
    watch = [
            ^
F:12:2: error: accounts.other: no password: set password, password_file or password_env
    [accounts.other]
     ^^^^^^^^^^^^^^
$MAILRULES_ACCOUNTS__WORK__PORT: error: accounts.work.port: expected an integer, got 'imaps'"""
    )


def test_a_toml_syntax_error_shows_its_line_and_a_caret(tmp_path: Path) -> None:
    assert rendered(tmp_path, 'rules = "x"\nstate = \n') == (
        "F:2:9: error: invalid TOML: invalid value\n    state = \n            ^"
    )
    # CRLF line ends: the same lines and columns
    crlf = '[accounts.a]\r\nhost = 5\r\nusername = "u@example.org"\r\npassword = "p"\r\n'
    assert rendered(tmp_path, crlf) == (
        "F:2:8: error: accounts.a.host: expected a string, got an integer\n    host = 5\n           ^"
    )


def test_a_line_that_may_hold_a_secret_is_never_shown(tmp_path: Path) -> None:
    text = """\
database = "postgresql://user:hunter2@db/mailrules"
[accounts.a]
host = "h"
username = "u@example.org"
password = 1234
smtp = { host = "s", password = "hunter3", form = "x" }
"""
    assert rendered(tmp_path, text) == (
        "F:1:1: error: database: unknown key\n"
        "F:5:12: error: accounts.a.password: expected a string, got an integer\n"
        "F:6:44: error: accounts.a.smtp.form: unknown key (did you mean 'from'?)"
    )
    # Files tomllib refuses: the statement around the error decides, over several lines too.
    assert rendered(tmp_path, '[accounts.a]\nhost = "h"\npassword = "hunter2\n') == (
        "F:3:20: error: invalid TOML: illegal character '\\n'"
    )
    assert rendered(tmp_path, '[accounts.a]\nhost = "h"\npassword = """\nhunter2\x01\n"""\n') == (
        "F:4:8: error: invalid TOML: illegal character '\\x01'"
    )
    assert rendered(tmp_path, '[accounts.a]\noauth2 = { client_secret = "cs-123\x01" }\n') == (
        "F:2:35: error: invalid TOML: illegal character '\\x01'"
    )


def test_a_shown_line_has_its_control_characters_escaped_and_a_long_one_is_cut(tmp_path: Path) -> None:
    assert rendered(tmp_path, 'host = "a\x1b[2Jb"\n') == (
        "F:1:10: error: invalid TOML: illegal character '\\x1b'\n    host = \"a\\x1b[2Jb\"\n             ^^^^"
    )
    head, line, caret = rendered(tmp_path, "x = 1" + "0" * 5000 + "\n").splitlines()
    assert head == "F:1:5: error: invalid TOML: a number with more than 4300 digits"
    assert line == "    x = 1" + "0" * 155 + "..."
    assert caret == "        ^"


# -- unknown keys ----------------------------------------------------------------------------------


def test_unknown_keys_name_the_key_and_its_line(tmp_path: Path) -> None:
    text = f"""\
rule = "rules.d"
[metric]
listen = ""
{ACCOUNT}prot = 994
colour = "blue"
smtp = {{ host = "s", form = "x@y" }}
options.debug = true

[accounts.a.imap]
[accounts.b."odd key"]
"""
    assert errors(tmp_path, text) == [
        "F:1:1: error: rule: unknown key (did you mean 'rules'?)",
        "F:2:2: error: metric: unknown key (did you mean 'metrics'?)",
        "F:8:1: error: accounts.a.prot: unknown key (did you mean 'port'?)",
        "F:9:1: error: accounts.a.colour: unknown key",
        "F:10:22: error: accounts.a.smtp.form: unknown key (did you mean 'from'?)",
        "F:11:1: error: accounts.a.options: unknown key",
        "F:13:2: error: accounts.a.imap: unknown key",
        'F:14:2: error: accounts.b."odd key": unknown key',
        "F:14:2: error: accounts.b.host: required "
        "(or set provider to one of fastmail, gmail, google, microsoft, outlook, yahoo)",
        "F:14:2: error: accounts.b.username: required",
        "F:14:2: error: accounts.b: no password: set password, password_file or password_env",
    ]


def test_brief_example_message(tmp_path: Path) -> None:
    text = "\n" * 9 + '[accounts.work]\nhost = "h"\nusername = "u"\npassword = "p"\nprot = 993\n'
    assert errors(tmp_path, text) == ["F:14:1: error: accounts.work.prot: unknown key (did you mean 'port'?)"]


# -- types and values ------------------------------------------------------------------------------


def test_wrong_types(tmp_path: Path) -> None:
    text = f"""\
rules = 1
timezone = 2
{ACCOUNT}port = "993"
create_mailboxes = "yes"
watch = "INBOX"
max_connections = 2.5
poll_interval = true
smtp = "smtp.example.org"
archive = ["A"]
[accounts.b]
host = "h"
username = "u"
password = 1234
watch = ["INBOX", 7]
"""
    assert errors(tmp_path, text) == [
        "F:1:9: error: rules: expected a string (a path), got an integer",
        "F:2:12: error: timezone: expected a string, got an integer",
        "F:7:8: error: accounts.a.port: expected an integer, got a string",
        "F:8:20: error: accounts.a.create_mailboxes: expected a boolean, got a string",
        "F:9:9: error: accounts.a.watch: expected an array of strings, got a string",
        "F:10:19: error: accounts.a.max_connections: expected an integer, got a float",
        "F:11:17: error: accounts.a.poll_interval: expected a number, got a boolean",
        "F:12:8: error: accounts.a.smtp: expected a table, got a string",
        "F:13:11: error: accounts.a.archive: expected a string, got an array",
        "F:17:12: error: accounts.b.password: expected a string, got an integer",
        "F:18:9: error: accounts.b.watch: expected an array of strings, got an array containing an integer",
    ]
    assert "1234" not in "\n".join(errors(tmp_path, text))


def test_wrong_table_types(tmp_path: Path) -> None:
    assert errors(tmp_path, "metrics = 5\naccounts = 6\n") == [
        "F:1:11: error: metrics: expected a table, got an integer",
        "F:2:12: error: accounts: expected a table of accounts, got an integer",
    ]
    assert errors(tmp_path, "accounts.a = 5\n") == [
        "F:1:14: error: accounts.a: expected a table, got an integer"
    ]


def test_bad_values(tmp_path: Path) -> None:
    text = f"""\
state = "mysql://user:hunter2@db/mailrules"
timezone = "Europe/Pariss"
log_format = "xml"
[metrics]
listen = "9464"
{ACCOUNT}tls = "ssl"
port = 0
max_connections = 51
poll_interval = 0
watch = ["INBOX", ""]
[accounts.b]
host = ""
username = ""
password = ""
port = 65536
max_connections = 0
poll_interval = -1.5
ca_file = ""
"""
    message = errors(tmp_path, text)
    assert message == [
        "F:1:9: error: state: a URL must start with postgresql://, got 'mysql'://",
        "F:2:12: error: timezone: unknown time zone 'Europe/Pariss'",
        "F:3:14: error: log_format: expected one of 'text', 'json', got 'xml'",
        "F:5:10: error: metrics.listen: expected 'host:port' or '' to disable, got '9464'",
        "F:10:7: error: accounts.a.tls: expected one of 'implicit', 'starttls', 'none', got 'ssl'",
        "F:11:8: error: accounts.a.port: must be between 1 and 65535, got 0",
        "F:12:19: error: accounts.a.max_connections: must be between 1 and 50, got 51",
        "F:13:17: error: accounts.a.poll_interval: must be a positive number of seconds, got 0",
        "F:14:9: error: accounts.a.watch: a mailbox name must not be empty",
        "F:16:8: error: accounts.b.host: must not be empty",
        "F:17:12: error: accounts.b.username: must not be empty",
        "F:18:12: error: accounts.b.password: must not be empty",
        "F:19:8: error: accounts.b.port: must be between 1 and 65535, got 65536",
        "F:20:19: error: accounts.b.max_connections: must be between 1 and 50, got 0",
        "F:21:17: error: accounts.b.poll_interval: must be a positive number of seconds, got -1.5",
        "F:22:11: error: accounts.b.ca_file: must not be empty",
    ]
    assert "hunter2" not in "\n".join(message)


@pytest.mark.parametrize("listen", ["host:99999", "a:b", "127.0.0.1", "[::1]", "::1:80x"])
def test_bad_listen(tmp_path: Path, listen: str) -> None:
    assert errors(tmp_path, f'[metrics]\nlisten = "{listen}"\n' + ACCOUNT) == [
        f"F:2:10: error: metrics.listen: expected 'host:port' or '' to disable, got '{listen}'"
    ]


def test_account_names_differing_only_in_case(tmp_path: Path) -> None:
    text = ACCOUNT + ACCOUNT.replace("accounts.a", "accounts.A")
    assert errors(tmp_path, text) == [
        "F:5:2: error: accounts.A: differs from accounts.a only in case, which the environment overrides "
        "cannot tell apart"
    ]


# -- secrets ---------------------------------------------------------------------------------------


def test_secret_problems(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    text = """\
[accounts.none]
host = "h"
username = "u"
[accounts.two]
host = "h"
username = "u"
password_env = "X"
password = "p"
[accounts.env]
host = "h"
username = "u"
password_env = "NOT_SET"
[accounts.file]
host = "h"
username = "u"
password_file = "no/such/file"
[accounts.empty]
host = "h"
username = "u"
password_file = "empty"
[accounts.emptyenv]
host = "h"
username = "u"
password_env = "EMPTY"
"""
    assert errors(tmp_path, text, {"EMPTY": ""}) == [
        "F:1:2: error: accounts.none: no password: set password, password_file or password_env",
        "F:8:1: error: accounts.two: set only one of password, password_file, password_env "
        "(found password, password_env)",
        "F:12:16: error: accounts.env.password_env: the environment variable NOT_SET is not set",
        f"F:16:17: error: accounts.file.password_file: cannot read {tmp_path / 'no/such/file'}: "
        "No such file or directory",
        f"F:20:17: error: accounts.empty.password_file: the password from password_file "
        f"{tmp_path / 'empty'} is empty",
        "F:24:16: error: accounts.emptyenv.password_env: the password from $EMPTY is empty",
    ]


def test_smtp_problems(tmp_path: Path) -> None:
    text = """\
[accounts.a]
host = "h"
username = "robot"
password = "p"
[accounts.a.smtp]
port = 587
username = "x"
"""
    assert errors(tmp_path, text) == [
        "F:5:2: error: accounts.a.smtp.host: required (or set provider on the account)",
        "F:5:2: error: accounts.a.smtp.from: required (the username is not an e-mail address)",
        "F:7:1: error: accounts.a.smtp: username is set but no password, password_file or password_env",
    ]


def test_smtp_from_must_be_an_address_and_names_not_empty(tmp_path: Path) -> None:
    text = ACCOUNT + '[accounts.a.smtp]\nhost = "s"\nfrom = "robot"\n[accounts.""]\nhost = "h"\n'
    assert errors(tmp_path, text) == [
        "F:7:8: error: accounts.a.smtp.from: expected an e-mail address, got 'robot'",
        'F:8:2: error: accounts."": an account name must not be empty',
    ]


def test_all_problems_are_collected_in_one_error(tmp_path: Path) -> None:
    text = 'timezone = "Nowhere/City"\n[accounts.a]\nport = "x"\n'
    assert errors(tmp_path, text, {"MAILRULES_METRICS__LISTEN": "bad"}) == [
        "F:1:12: error: timezone: unknown time zone 'Nowhere/City'",
        "F:2:2: error: accounts.a.host: required "
        "(or set provider to one of fastmail, gmail, google, microsoft, outlook, yahoo)",
        "F:2:2: error: accounts.a.username: required",
        "F:2:2: error: accounts.a: no password: set password, password_file or password_env",
        "F:3:8: error: accounts.a.port: expected an integer, got a string",
        "$MAILRULES_METRICS__LISTEN: error: metrics.listen: expected 'host:port' or '' to disable, got 'bad'",
    ]


# -- warnings --------------------------------------------------------------------------------------


def test_tls_none_without_allow_insecure_is_accepted_with_a_warning(tmp_path: Path) -> None:
    text = ACCOUNT + 'tls = "none"\nport = 143\n'
    s = load(tmp_path, text)
    assert s.accounts["a"].tls == "none" and not s.accounts["a"].allow_insecure
    assert warnings(tmp_path, text) == [
        "F:5: accounts.a.tls: 'none' would send the password unencrypted: login will be refused "
        "unless allow_insecure = true"
    ]
    assert warnings(tmp_path, text + "allow_insecure = true\n") == []


def test_smtp_tls_none_warns_unless_allowed(tmp_path: Path) -> None:
    relay = ACCOUNT + '[accounts.a.smtp]\nhost = "relay"\ntls = "none"\n'
    # SmtpParams refuses any clear-text send without allow_insecure, password or not
    assert warnings(tmp_path, relay) == [
        "F:7: accounts.a.smtp.tls: 'none' sends mail unencrypted: forward and redirect will refuse to "
        "send unless allow_insecure = true"
    ]
    assert warnings(tmp_path, relay + "allow_insecure = true\n") == []


def test_port_and_tls_mismatch_warns(tmp_path: Path) -> None:
    text = ACCOUNT + 'port = 143\n[accounts.a.smtp]\nhost = "s"\nport = 587\n'
    assert warnings(tmp_path, text) == [
        "F:5: accounts.a.port: port 143 usually means tls = 'starttls', but tls is 'implicit'",
        "F:8: accounts.a.smtp.port: port 587 usually means tls = 'starttls', but tls is 'implicit'",
    ]


def test_missing_ca_file_and_no_accounts_warn(tmp_path: Path) -> None:
    assert warnings(tmp_path, ACCOUNT + 'ca_file = "ca.pem"\n') == [
        f"F:5: accounts.a.ca_file: {tmp_path / 'ca.pem'} does not exist"
    ]
    assert warnings(tmp_path, "") == ["F: no accounts are configured"]


# -- the key-line scanner --------------------------------------------------------------------------


def test_key_lines_handles_tricky_toml() -> None:
    text = '''\
# comment = 1
a = """
b = 2
"""
c = [
  "d = 3",
  { e = 4 },
]
"f.g" . 'h' = { i = { j = 5 }, k = "}" }
[ t . "u v" ]
w = 'x'  # y = 6
[[arr]]
z = 1979-05-27 07:32:00
late = 1
'''
    assert key_lines(text) == {
        ("a",): 2,
        ("c",): 5,
        ("f.g",): 9,
        ("f.g", "h"): 9,
        ("f.g", "h", "i"): 9,
        ("f.g", "h", "i", "j"): 9,
        ("f.g", "h", "k"): 9,
        ("t",): 10,
        ("t", "u v"): 10,
        ("t", "u v", "w"): 11,
        ("arr",): 12,
        ("arr", "z"): 13,
        ("arr", "late"): 14,
    }


def test_key_places_span_keys_their_dotted_prefixes_and_values() -> None:
    text = """\
"f.g" . 'h' = { i = { j = 5 }, k = "}" }
[ t . "u v" ]
w = 'x'  # y = 6
options.debug = true
"""
    spans = {
        path: (str(p.key), p.key.end_column, p.value and (p.value.line, p.value.column, p.value.end_column))
        for path, p in key_places(text, "F").items()
    }
    assert spans == {
        ("f.g",): ("F:1:1", 6, None),
        ("f.g", "h"): ("F:1:1", 12, (1, 15, 41)),
        ("f.g", "h", "i"): ("F:1:17", 18, (1, 21, 30)),
        ("f.g", "h", "i", "j"): ("F:1:23", 24, (1, 27, 28)),
        ("f.g", "h", "k"): ("F:1:32", 33, (1, 36, 39)),
        ("t",): ("F:2:3", 4, None),
        ("t", "u v"): ("F:2:3", 12, None),
        ("t", "u v", "w"): ("F:3:1", 2, (3, 5, 8)),
        ("t", "u v", "options"): ("F:4:1", 8, None),
        ("t", "u v", "options", "debug"): ("F:4:1", 14, (4, 17, 21)),
    }


def test_key_lines_never_raises_on_odd_input() -> None:
    for text in ['a = "unterminated', "[", "= 1", '"k', "x = [1, 2", "a.\n", "{", "a = {b = "]:
        assert isinstance(key_lines(text), dict)
