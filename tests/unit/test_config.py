"""Loading the configuration: the spec's example, defaults, presets, secrets and redaction."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import mailrules.config.env as config_env
from mailrules.config import (
    DEFAULT_CONFIG_PATH,
    PROVIDERS,
    AccountSettings,
    MetricsSettings,
    Secret,
    Settings,
    SmtpSettings,
    load_config,
)
from mailrules.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "config"
SPEC = Path("/work/shared/spec/config.md")

MINIMAL = """
[accounts.a]
host = "imap.example.org"
username = "u@example.org"
password = "pw"
"""


def write(tmp_path: Path, text: str, name: str = "mailrules.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _revealed(secret: Secret | None) -> str:
    assert secret is not None
    return secret.reveal()


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The spec's example, as written, with its secret file present and its env variable set."""
    secret = tmp_path / "imap_password"
    secret.write_text("imap-s3cret\n", encoding="utf-8")
    real_read = config_env.read_value_file

    def read(path: Path) -> str:
        # The example names /run/secrets/imap_password; the test does not write outside tmp_path.
        return real_read(secret if path == Path("/run/secrets/imap_password") else path)

    monkeypatch.setattr(config_env, "read_value_file", read)
    path = write(tmp_path, (FIXTURES / "spec_example.toml").read_text(encoding="utf-8"))
    return load_config(path, env={"SMTP_PASSWORD": "smtp-s3cret"})


@pytest.mark.skipif(not SPEC.exists(), reason="the shared spec is not checked out here")
def test_fixture_is_the_spec_example_verbatim() -> None:
    spec = SPEC.read_text(encoding="utf-8")
    block = spec.split("```toml\n", 1)[1].split("```", 1)[0]
    assert (FIXTURES / "spec_example.toml").read_text(encoding="utf-8") == block


def test_spec_example_top_level(example: Settings, tmp_path: Path) -> None:
    assert example.config_path == tmp_path / "mailrules.toml"
    assert example.rules == tmp_path / "rules.d"
    assert example.state == tmp_path / "state.db"
    assert example.timezone == ZoneInfo("Europe/Paris")
    assert example.metrics == MetricsSettings(listen="127.0.0.1:9464")
    assert example.metrics.address == ("127.0.0.1", 9464)
    assert example.log_format == "text"
    assert list(example.accounts) == ["work", "lab"]
    expected_warnings = (
        ()
        if Path("/etc/ssl/my-ca.pem").exists()
        else (f"{tmp_path / 'mailrules.toml'}:14: accounts.work.ca_file: /etc/ssl/my-ca.pem does not exist",)
    )
    assert example.warnings == expected_warnings


def test_spec_example_work_account(example: Settings) -> None:
    work = example.accounts["work"]
    assert work == AccountSettings(
        name="work",
        host="imap.example.com",
        port=993,
        tls="implicit",
        username="me@example.com",
        password=Secret("imap-s3cret"),
        ca_file=Path("/etc/ssl/my-ca.pem"),
        watch=("INBOX",),
        archive="Archive",
        trash="Trash",
        create_mailboxes=True,
        max_connections=5,
        allow_insecure=False,
        provider=None,
        poll_interval=60.0,
        smtp=SmtpSettings(
            host="smtp.example.com",
            port=587,
            tls="starttls",
            username="me@example.com",
            password=Secret("smtp-s3cret"),
            from_="me@example.com",
            allow_insecure=False,
        ),
    )
    assert work.password is not None
    assert work.password.reveal() == "imap-s3cret"  # one trailing newline stripped
    assert work.password.source == "password_file /run/secrets/imap_password"
    assert work.smtp is not None and work.smtp.password is not None
    assert work.smtp.password.reveal() == "smtp-s3cret"
    assert work.smtp.password.source == "$SMTP_PASSWORD"


def test_spec_example_lab_account(example: Settings) -> None:
    lab = example.accounts["lab"]
    assert (lab.host, lab.port, lab.tls, lab.allow_insecure) == ("127.0.0.1", 10143, "none", True)
    assert lab.password is not None
    assert (lab.username, lab.password.reveal()) == ("bench", "bench")
    assert lab.smtp is None and lab.ca_file is None and lab.watch == ()
    assert (lab.archive, lab.trash, lab.create_mailboxes, lab.max_connections) == (None, None, True, 5)


def test_spec_example_comments_port_defaults(tmp_path: Path) -> None:
    """ "default: 993 for implicit, 143 for starttls/none" and the SMTP ports 465/587/25."""
    text = ""
    for tls in ("implicit", "starttls", "none"):
        text += f"""
[accounts.{tls}]
host = "h"
tls = "{tls}"
allow_insecure = true
username = "u@example.org"
password = "p"
[accounts.{tls}.smtp]
host = "s"
tls = "{tls}"
allow_insecure = true
"""
    s = load_config(write(tmp_path, text), env={})
    assert {n: a.port for n, a in s.accounts.items()} == {"implicit": 993, "starttls": 143, "none": 143}
    ports = {n: a.smtp.port for n, a in s.accounts.items() if a.smtp}
    assert ports == {"implicit": 465, "starttls": 587, "none": 25}
    assert s.warnings == ()


def test_defaults(tmp_path: Path) -> None:
    s = load_config(write(tmp_path, MINIMAL), env={})
    assert s.rules == tmp_path / "rules.d"
    assert s.state == tmp_path / "state.db"
    assert s.timezone == ZoneInfo("UTC")
    assert s.metrics.listen == "127.0.0.1:9464"
    assert s.log_format == "text"
    assert s.warnings == ()
    a = s.accounts["a"]
    assert (a.port, a.tls, a.ca_file, a.watch, a.archive, a.trash) == (993, "implicit", None, (), None, None)
    assert (a.create_mailboxes, a.max_connections, a.allow_insecure) == (True, 5, False)
    assert (a.provider, a.poll_interval, a.smtp) == (None, 60.0, None)


def test_metrics_can_be_disabled_or_bound_anywhere(tmp_path: Path) -> None:
    s = load_config(write(tmp_path, '[metrics]\nlisten = ""\n' + MINIMAL), env={})
    assert s.metrics.listen == "" and s.metrics.address is None
    s = load_config(write(tmp_path, '[metrics]\nlisten = ":9100"\n' + MINIMAL), env={})
    assert s.metrics.address == ("0.0.0.0", 9100)
    s = load_config(write(tmp_path, '[metrics]\nlisten = "[::1]:9100"\n' + MINIMAL), env={})
    assert s.metrics.address == ("::1", 9100)


def test_other_values(tmp_path: Path) -> None:
    text = (
        'timezone = "America/New_York"\nlog_format = "json"\n'
        + MINIMAL
        + ("poll_interval = 5\nmax_connections = 50\nwatch = []\n")
    )
    s = load_config(write(tmp_path, text), env={})
    assert s.timezone.key == "America/New_York" and s.log_format == "json"
    a = s.accounts["a"]
    assert (a.poll_interval, a.max_connections, a.watch) == (5.0, 50, ())
    assert isinstance(a.poll_interval, float)


def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "secrets").mkdir()
    (conf / "secrets" / "pw").write_text("from-file", encoding="utf-8")
    (conf / "ca.pem").write_text("-----", encoding="utf-8")
    write(
        conf,
        """
rules = "my-rules"
state = "../var/state.db"
[accounts.a]
host = "h"
username = "u@example.org"
password_file = "secrets/pw"
ca_file = "ca.pem"
""",
    )
    monkeypatch.chdir(tmp_path)  # a relative --config path, from elsewhere
    s = load_config("etc/mailrules.toml", env={})
    assert s.config_path == conf / "mailrules.toml"
    assert s.rules == conf / "my-rules"
    assert s.state == conf / "../var/state.db"
    assert s.accounts["a"].ca_file == conf / "ca.pem"
    password = s.accounts["a"].password
    assert password is not None
    assert password.reveal() == "from-file"
    assert s.warnings == ()


def test_config_path_from_argument_env_or_default(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    assert load_config(env={"MAILRULES_CONFIG": str(path)}).config_path == path
    other = write(tmp_path, MINIMAL, "other.toml")
    assert load_config(other, env={"MAILRULES_CONFIG": str(path)}).config_path == other
    assert str(DEFAULT_CONFIG_PATH) == "/etc/mailrules/mailrules.toml"
    if not DEFAULT_CONFIG_PATH.exists():
        with pytest.raises(ConfigError) as exc:
            load_config(env={})
        assert str(exc.value) == (
            "/etc/mailrules/mailrules.toml: error: cannot read the configuration: No such file or directory"
        )


# -- secrets ---------------------------------------------------------------------------------------


def test_password_sources(tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"line1\r\n")
    (tmp_path / "pw2").write_bytes(b"keeps spaces  \n")  # a second line break is an error
    text = """
[accounts.a]
host = "h"
username = "u"
password = "direct"
[accounts.b]
host = "h"
username = "u"
password_file = "pw"
[accounts.c]
host = "h"
username = "u"
password_file = "pw2"
[accounts.d]
host = "h"
username = "u"
password_env = "D_PASS"
"""
    s = load_config(write(tmp_path, text), env={"D_PASS": "from-env"})
    got = {n: _revealed(a.password) for n, a in s.accounts.items()}
    assert got == {"a": "direct", "b": "line1", "c": "keeps spaces  ", "d": "from-env"}


def test_smtp_may_be_unauthenticated(tmp_path: Path) -> None:
    text = MINIMAL + '[accounts.a.smtp]\nhost = "relay.local"\ntls = "none"\n'
    smtp = load_config(write(tmp_path, text), env={}).accounts["a"].smtp
    assert smtp == SmtpSettings(
        host="relay.local", port=25, tls="none", username=None, password=None, from_="u@example.org"
    )


def test_smtp_password_without_username_uses_the_account_username(tmp_path: Path) -> None:
    text = MINIMAL + '[accounts.a.smtp]\nhost = "s"\npassword = "x"\nfrom = "me@example.org"\n'
    smtp = load_config(write(tmp_path, text), env={}).accounts["a"].smtp
    assert smtp is not None and smtp.username == "u@example.org" and smtp.from_ == "me@example.org"


def test_secret_behaves() -> None:
    s = Secret("hunter2", "password")
    assert s.reveal() == "hunter2"
    assert repr(s) == str(s) == f"{s}" == "Secret('***')"
    assert s == Secret("hunter2") and s != Secret("hunter3")
    assert s != "hunter2" and "hunter2" != s  # noqa: SIM300
    assert hash(s) == hash(Secret("hunter2"))
    assert "hunter2" not in repr([s]) + repr({"k": s})


LEAKY = {
    "a": "pw-direct-123",
    "b": "pw-file-456",
    "c": "pw-env-789",
    "smtp": "pw-smtp-000",
    "override": "pw-override-111",
}


def _leaky_config(tmp_path: Path, extra: str = "") -> tuple[Path, dict[str, str]]:
    (tmp_path / "pw").write_text(LEAKY["b"] + "\n", encoding="utf-8")
    text = f"""
[accounts.a]
host = "h"
username = "u@example.org"
password = "{LEAKY["a"]}"
[accounts.a.smtp]
host = "s"
password = "{LEAKY["smtp"]}"
[accounts.b]
host = "h"
username = "u"
password_file = "pw"
[accounts.c]
host = "h"
username = "u"
password_env = "C_PASS"
{extra}"""
    env = {"C_PASS": LEAKY["c"], "MAILRULES_ACCOUNTS__B__PASSWORD": LEAKY["override"]}
    return write(tmp_path, text), env


def _assert_no_secret(text: str) -> None:
    for value in LEAKY.values():
        assert value not in text


def test_secrets_never_in_repr_str_dict_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path, env = _leaky_config(tmp_path)
    s = load_config(path, env=env)
    password = s.accounts["b"].password
    assert password is not None
    assert password.reveal() == LEAKY["override"]
    assert password.source == "$MAILRULES_ACCOUNTS__B__PASSWORD"
    _assert_no_secret(repr(s))
    _assert_no_secret(str(s))
    _assert_no_secret(repr(s.accounts) + repr(s.accounts["a"].smtp))
    dumped = json.dumps(s.redacted_dict())
    _assert_no_secret(dumped)
    assert s.redacted_dict()["accounts"]["a"]["password"] == "***"
    assert s.redacted_dict()["accounts"]["a"]["smtp"]["password"] == "***"
    _assert_no_secret(caplog.text)


def test_secrets_never_in_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path, env = _leaky_config(tmp_path, extra=f'prot = 1\npassword = "{LEAKY["c"]}"\n')
    env["MAILRULES_ACCOUNTS__A__PORT"] = "not-a-port"
    with pytest.raises(ConfigError) as exc:
        load_config(path, env=env)
    message = str(exc.value)
    assert message.splitlines() == [
        f"{path}:17:1: error: accounts.c.prot: unknown key (did you mean 'port'?)",
        "    prot = 1",
        "    ^^^^",
        f"{path}:18:1: error: accounts.c: set only one of password, password_file, password_env "
        "(found password, password_env)",  # the line is not shown: it sets a password
        "$MAILRULES_ACCOUNTS__A__PORT: error: accounts.a.port: expected an integer, got 'not-a-port'",
    ]
    _assert_no_secret(message)
    _assert_no_secret(repr(exc.value))
    _assert_no_secret(caplog.text)


def test_unreadable_secret_names_account_and_path_only(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    path = write(tmp_path, '[accounts.a]\nhost = "h"\nusername = "u"\npassword_file = "dir"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert str(exc.value) == (
        f"{path}:4:17: error: accounts.a.password_file: cannot read {tmp_path / 'dir'}: Is a directory\n"
        '    password_file = "dir"\n'
        "                    ^^^^^"
    )


def test_public_names() -> None:
    assert sorted(PROVIDERS) == ["fastmail", "gmail", "google", "microsoft", "outlook", "yahoo"]
