"""`auth = "oauth2"` and `[accounts.NAME.oauth2]`: the spec's example, presets, validation, the
environment, and secrets that never show (config.md "OAuth2 accounts")."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import mailrules.config.env as config_env
from mailrules.cli import main
from mailrules.config import Settings, load_config
from mailrules.config.oauth2 import default_token_store
from mailrules.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "config"
SPEC = Path("/work/shared/spec/config.md")
REFRESH = "rt-0123456789-from-elsewhere"
CLIENT_SECRET = "cs-abcdefghij-very-secret"
_HEADLINE = re.compile(r"^(F:\d+)(?::\d+)?: (?:error: )?")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailrules.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    return load_config(write(tmp_path, text), env=env or {})


def errors(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """Each problem's headline as `F:LINE: key: message` (the source line and caret shown under a
    problem of the file are left out)."""
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, text, env)
    lines = str(exc.value).replace(str(tmp_path / "mailrules.toml"), "F").splitlines()
    return [_HEADLINE.sub(r"\1: ", line) for line in lines if line.startswith(("F:", "$"))]


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The spec's OAuth2 example as written, its refresh token file present."""
    real_read = config_env.read_value_file

    def read(path: Path) -> str:
        # The example names /run/secrets/refresh; the test writes nothing outside tmp_path.
        return REFRESH if path == Path("/run/secrets/refresh") else real_read(path)

    monkeypatch.setattr(config_env, "read_value_file", read)
    return load(tmp_path, (FIXTURES / "spec_oauth2_example.toml").read_text(encoding="utf-8"))


@pytest.mark.skipif(not SPEC.exists(), reason="the shared spec is not checked out here")
def test_fixture_is_the_spec_oauth2_example_verbatim() -> None:
    blocks = [b.split("```", 1)[0] for b in SPEC.read_text(encoding="utf-8").split("```toml\n")[1:]]
    assert (FIXTURES / "spec_oauth2_example.toml").read_text(encoding="utf-8") in blocks


def test_spec_example_microsoft_account(example: Settings, tmp_path: Path) -> None:
    office = example.accounts["office"]
    assert example.warnings == ()
    assert (office.host, office.port, office.tls) == ("outlook.office365.com", 993, "implicit")
    assert office.auth == "oauth2" and office.password is None
    o = office.oauth2
    assert o is not None
    assert o.client_id == "0d2c...-app-id"
    assert o.flow == "device_code"
    assert o.tenant == "contoso.onmicrosoft.com"
    base = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0"
    assert (o.token_url, o.authorization_url, o.device_authorization_url) == (
        f"{base}/token",
        f"{base}/authorize",
        f"{base}/devicecode",
    )
    assert o.scopes == (
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
        "offline_access",
    )
    assert o.client_secret is None and o.refresh_token is None  # a public client
    assert o.mechanism == "auto"
    assert o.token_store == tmp_path / "tokens" / "office.json"  # beside state.db
    # SMTP from the preset, AUTH XOAUTH2 with the same token as the account's username
    assert office.smtp is not None
    assert (office.smtp.host, office.smtp.port, office.smtp.tls) == ("smtp.office365.com", 587, "starttls")
    assert office.smtp.oauth2 and office.smtp.username == "me@contoso.com" and office.smtp.password is None


def test_spec_example_lab_account(example: Settings, tmp_path: Path) -> None:
    lab = example.accounts["lab"]
    assert (lab.host, lab.port, lab.tls, lab.allow_insecure) == ("127.0.0.1", 10143, "none", True)
    assert lab.username == "bench@example.org" and lab.auth == "oauth2"
    o = lab.oauth2
    assert o is not None
    assert o.token_url == "http://127.0.0.1:10080/token"
    assert o.client_id == "mailrules-test"
    assert o.scopes == ("imap",)
    assert o.refresh_token is not None and o.refresh_token.reveal() == REFRESH
    assert o.token_store == tmp_path / "tokens" / "lab.json"  # relative to the configuration file
    assert o.mechanism == "auto" and o.flow == "authorization_code"
    assert lab.smtp is None


def test_config_command_shows_no_secret(tmp_path: Path) -> None:
    secret_file = tmp_path / "client_secret"
    secret_file.write_text(CLIENT_SECRET + "\n", encoding="utf-8")
    path = write(
        tmp_path,
        """
[accounts.lab]
host = "127.0.0.1"
username = "u@example.org"
auth = "oauth2"
[accounts.lab.oauth2]
token_url = "https://auth.example.org/token"
client_id = "app"
client_secret_file = "client_secret"
refresh_token_env = "RT"
""",
    )
    result = CliRunner(env={"RT": REFRESH}).invoke(main, ["config", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert CLIENT_SECRET not in result.output and REFRESH not in result.output
    shown = json.loads(result.output)["accounts"]["lab"]
    assert shown["oauth2"]["client_secret"] == "***" and shown["oauth2"]["refresh_token"] == "***"
    assert shown["auth"] == "oauth2" and shown["password"] is None


@pytest.mark.parametrize("provider", ["google", "gmail"])
def test_google_preset(tmp_path: Path, provider: str) -> None:
    a = load(
        tmp_path,
        f"""
state = "var/state.db"
[accounts.g]
provider = "{provider}"
username = "me@gmail.com"
auth = "oauth2"
[accounts.g.oauth2]
client_id = "123.apps.googleusercontent.com"
client_secret = "{CLIENT_SECRET}"
""",
    ).accounts["g"]
    assert (a.host, a.port, a.tls, a.archive) == ("imap.gmail.com", 993, "implicit", None)
    o = a.oauth2
    assert o is not None
    assert o.flow == "authorization_code"
    assert o.token_url == "https://oauth2.googleapis.com/token"
    assert o.authorization_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert o.scopes == ("https://mail.google.com/",)
    assert ("access_type", "offline") in o.authorize_params
    assert o.client_secret is not None and o.client_secret.reveal() == CLIENT_SECRET
    assert o.token_store == tmp_path / "var" / "tokens" / "g.json"  # beside the state
    assert a.smtp is not None and a.smtp.host == "smtp.gmail.com" and a.smtp.oauth2


def test_outlook_takes_oauth2_with_microsofts_endpoints_and_common_tenant(tmp_path: Path) -> None:
    a = load(
        tmp_path,
        """
[accounts.o]
provider = "outlook"
username = "me@outlook.com"
auth = "oauth2"
[accounts.o.oauth2]
client_id = "app"
""",
    ).accounts["o"]
    assert a.oauth2 is not None and a.oauth2.tenant == "common"
    assert a.oauth2.token_url == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    assert "offline_access" in a.oauth2.scopes


def test_app_passwords_keep_working_on_the_same_presets(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        """
[accounts.g]
provider = "google"
username = "me@gmail.com"
password = "app-password"
[accounts.m]
provider = "microsoft"
username = "me@contoso.com"
password = "pw"
""",
    )
    assert all(a.auth == "password" and a.oauth2 is None for a in s.accounts.values())
    assert s.accounts["g"].smtp is not None and not s.accounts["g"].smtp.oauth2


def test_client_credentials_on_microsoft(tmp_path: Path) -> None:
    a = load(
        tmp_path,
        """
[accounts.app]
provider = "microsoft"
username = "shared@contoso.com"
auth = "oauth2"
[accounts.app.oauth2]
client_id = "app"
tenant = "contoso.onmicrosoft.com"
flow = "client_credentials"
client_secret_env = "CS"
""",
        {"CS": CLIENT_SECRET},
    ).accounts["app"]
    assert a.oauth2 is not None
    assert a.oauth2.scopes == ("https://outlook.office365.com/.default",)
    assert a.oauth2.client_secret is not None and a.oauth2.client_secret.source == "$CS"


def test_smtp_table_without_password_uses_the_token(tmp_path: Path) -> None:
    a = load(
        tmp_path,
        """
[accounts.lab]
host = "127.0.0.1"
username = "me@example.org"
auth = "oauth2"
[accounts.lab.oauth2]
token_url = "http://localhost:8080/token"
client_id = "app"
[accounts.lab.smtp]
host = "127.0.0.1"
port = 587
[accounts.relay]
host = "127.0.0.1"
username = "me@example.org"
auth = "oauth2"
[accounts.relay.oauth2]
token_url = "http://localhost:8080/token"
client_id = "app"
[accounts.relay.smtp]
host = "relay.example.org"
username = "bot"
password = "relay-pw"
from = "me@example.org"
""",
    )
    lab, relay = a.accounts["lab"].smtp, a.accounts["relay"].smtp
    assert lab is not None and lab.oauth2 and lab.username == "me@example.org"
    assert relay is not None and not relay.oauth2 and relay.password is not None


T = '[accounts.lab.oauth2]\nclient_id = "x"\ntoken_url = "https://a.example/t"\n'
LAB = """
[accounts.lab]
host = "127.0.0.1"
username = "u@example.org"
auth = "oauth2"
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "",
            [
                'F:5: accounts.lab.oauth2: required with auth = "oauth2": a table with at least client_id '
                "(and token_url unless the provider gives it)"
            ],
        ),
        (
            '[accounts.lab.oauth2]\nclient_id = "x"\n',
            ["F:6: accounts.lab.oauth2.token_url: required (no provider preset gives it)"],
        ),
        (
            '[accounts.lab.oauth2]\ntoken_url = "https://a.example/t"\n',
            [
                "F:6: accounts.lab.oauth2.client_id: required (the application (client) ID of your app "
                "registration)"
            ],
        ),
        (
            '[accounts.lab.oauth2]\nclient_id = "x"\ntoken_url = "http://auth.example/t"\n',
            [
                "F:8: accounts.lab.oauth2.token_url: expected an https URL (http only to 127.0.0.1, ::1 or "
                "localhost), got 'http://auth.example/t'"
            ],
        ),
        (
            T + 'flow = "implicit"\n',
            [
                "F:9: accounts.lab.oauth2.flow: expected one of 'authorization_code', 'device_code', "
                "'client_credentials', got 'implicit'"
            ],
        ),
        (
            T + 'mechanism = "plain"\n',
            [
                "F:9: accounts.lab.oauth2.mechanism: expected one of 'auto', 'xoauth2', 'oauthbearer', "
                "got 'plain'"
            ],
        ),
        (
            T + 'tenant = "c"\n',
            ['F:9: accounts.lab.oauth2.tenant: only for provider "microsoft" (or "outlook")'],
        ),
        (
            T + 'flow = "device_code"\n',
            [
                'F:9: accounts.lab.oauth2.device_authorization_url: required with flow = "device_code" '
                "(no provider preset gives it)"
            ],
        ),
        (
            T + 'flow = "client_credentials"\n',
            [
                'F:9: accounts.lab.oauth2: flow = "client_credentials" needs a client secret: '
                "set client_secret, client_secret_file or client_secret_env"
            ],
        ),
        (
            T + 'scopes = ["a b"]\n',
            [
                "F:9: accounts.lab.oauth2.scopes: 'a b' is not a scope "
                "(one word of printable ASCII, no quote or backslash)"
            ],
        ),
        (
            T + 'client_scret = "x"\n',
            ["F:9: accounts.lab.oauth2.client_scret: unknown key (did you mean 'client_secret'?)"],
        ),
    ],
)
def test_oauth2_errors(tmp_path: Path, extra: str, expected: list[str]) -> None:
    assert errors(tmp_path, LAB + extra) == expected


def test_password_and_oauth2_do_not_mix(tmp_path: Path) -> None:
    assert errors(
        tmp_path,
        LAB + 'password = "pw"\n[accounts.lab.oauth2]\nclient_id = "x"\ntoken_url = "https://a.example/t"\n',
    ) == ['F:6: accounts.lab: auth = "oauth2" logs in with a token: remove the password']
    text = '[accounts.a]\nhost = "h"\nusername = "u"\npassword = "p"\n[accounts.a.oauth2]\nclient_id = "x"\n'
    assert errors(tmp_path, text) == [
        'F:5: accounts.a.oauth2: set auth = "oauth2" on the account to use these settings'
    ]
    assert errors(tmp_path, text.replace('password = "p"', 'auth = "kerberos"')) == [
        "F:4: accounts.a.auth: expected one of 'password', 'oauth2', got 'kerberos'"
    ]


def test_google_refuses_the_device_flow(tmp_path: Path) -> None:
    text = (
        '[accounts.g]\nprovider = "google"\nusername = "me@gmail.com"\nauth = "oauth2"\n'
        '[accounts.g.oauth2]\nclient_id = "x"\nflow = "device_code"\n'
    )
    [line] = errors(tmp_path, text)
    assert line.startswith("F:7: accounts.g.oauth2.flow: Google does not grant the mail scope")


def test_client_credentials_needs_a_real_tenant(tmp_path: Path) -> None:
    text = (
        '[accounts.m]\nprovider = "microsoft"\nusername = "me@contoso.com"\nauth = "oauth2"\n'
        '[accounts.m.oauth2]\nclient_id = "x"\nflow = "client_credentials"\nclient_secret = "s"\n'
    )
    assert errors(tmp_path, text) == [
        "F:5: accounts.m.oauth2.tenant: the client_credentials flow needs your tenant (its domain or ID), "
        "not 'common'"
    ]


def test_secret_errors_never_show_the_value(tmp_path: Path) -> None:
    bad = "secret with spaces"
    lines = errors(
        tmp_path,
        LAB + '[accounts.lab.oauth2]\nclient_id = "x"\ntoken_url = "https://a.example/t"\n'
        'client_secret_env = "CS"\n',
        {"CS": bad},
    )
    assert lines == [
        "F:9: accounts.lab.oauth2.client_secret_env: the client secret from $CS contains "
        "spaces or control characters"
    ]
    lines = errors(
        tmp_path,
        LAB + '[accounts.lab.oauth2]\nclient_id = "x"\ntoken_url = "https://a.example/t"\n',
        {"MAILRULES_ACCOUNTS__LAB__OAUTH2__CLIENT_SECRET": bad},
    )
    assert all(bad not in line for line in lines) and len(lines) == 1


def test_environment_overrides(tmp_path: Path) -> None:
    rt = tmp_path / "rt"
    rt.write_text(REFRESH, encoding="utf-8")
    text = LAB + (
        '[accounts.lab.oauth2]\nclient_id = "x"\ntoken_url = "https://a.example/t"\n'
        'client_secret = "from-file"\n'
    )
    s = load(
        tmp_path,
        text,
        {
            "MAILRULES_ACCOUNTS__LAB__OAUTH2__CLIENT_ID": "from-env",
            "MAILRULES_ACCOUNTS__LAB__OAUTH2__CLIENT_SECRET_ENV": "CS",  # replaces the file's client_secret
            "CS": CLIENT_SECRET,
            "MAILRULES_ACCOUNTS__LAB__OAUTH2__REFRESH_TOKEN_FILE": str(rt),
            "MAILRULES_ACCOUNTS__LAB__OAUTH2__SCOPES": "imap,smtp",
            "MAILRULES_ACCOUNTS__LAB__OAUTH2__MECHANISM": "xoauth2",
        },
    )
    o = s.accounts["lab"].oauth2
    assert o is not None
    assert o.client_id == "from-env" and o.mechanism == "xoauth2" and o.scopes == ("imap", "smtp")
    assert o.client_secret is not None and o.client_secret.reveal() == CLIENT_SECRET
    assert o.refresh_token is not None and o.refresh_token.reveal() == REFRESH


def test_tls_none_warns_about_the_token(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        LAB + 'tls = "none"\n[accounts.lab.oauth2]\nclient_id = "x"\ntoken_url = "https://a.example/t"\n',
    )
    assert any("would send the token unencrypted" in w for w in s.warnings)


def test_default_token_store_names() -> None:
    d = Path("/var/lib/mailrules/tokens")
    assert default_token_store(d, "office") == d / "office.json"
    odd = default_token_store(d, "a/b")
    assert odd.parent == d and odd.name.startswith("a_b-") and odd != default_token_store(d, "a_b")
    assert default_token_store(d, "..").parent == d
