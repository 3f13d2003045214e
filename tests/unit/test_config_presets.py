"""Provider presets: what each fills in, and explicit keys winning over them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailrules.config import Settings, SmtpSettings, load_config
from mailrules.errors import ConfigError


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "mailrules.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env=env or {})


ACCOUNT = 'username = "me@example.org"\npassword = "pw"\n'


@pytest.mark.parametrize(
    ("provider", "imap", "smtp", "folders"),
    [
        (
            "gmail",
            ("imap.gmail.com", 993, "implicit"),
            ("smtp.gmail.com", 587, "starttls"),
            (None, None),  # the server's SPECIAL-USE \All and \Trash, in the account's language
        ),
        (
            "outlook",
            ("outlook.office365.com", 993, "implicit"),
            ("smtp.office365.com", 587, "starttls"),
            (None, None),
        ),
        (
            "yahoo",
            ("imap.mail.yahoo.com", 993, "implicit"),
            ("smtp.mail.yahoo.com", 465, "implicit"),
            (None, None),
        ),
        (
            "fastmail",
            ("imap.fastmail.com", 993, "implicit"),
            ("smtp.fastmail.com", 465, "implicit"),
            (None, None),
        ),
    ],
)
def test_preset_fills_imap_smtp_and_folders(
    tmp_path: Path,
    provider: str,
    imap: tuple[str, int, str],
    smtp: tuple[str, int, str],
    folders: tuple[str | None, str | None],
) -> None:
    a = load(tmp_path, f'[accounts.a]\nprovider = "{provider}"\n{ACCOUNT}').accounts["a"]
    assert a.provider == provider
    assert (a.host, a.port, a.tls) == imap
    assert (a.archive, a.trash) == folders
    # no [smtp] table: the provider's server, with the account's credentials
    assert a.smtp == SmtpSettings(
        host=smtp[0],
        port=smtp[1],
        tls=smtp[2],  # type: ignore[arg-type]
        username="me@example.org",
        password=a.password,
        from_="me@example.org",
    )


def test_provider_name_is_case_insensitive(tmp_path: Path) -> None:
    assert load(tmp_path, f'[accounts.a]\nprovider = "Gmail"\n{ACCOUNT}').accounts["a"].provider == "gmail"


def test_explicit_keys_win(tmp_path: Path) -> None:
    text = f"""
[accounts.a]
provider = "gmail"
host = "imap.googlemail.com"
archive = "Archive"
{ACCOUNT}
[accounts.a.smtp]
port = 465
tls = "implicit"
username = "other@example.org"
password_env = "SMTP_PW"
from = "me+bot@example.org"
"""
    a = load(tmp_path, text, {"SMTP_PW": "x"}).accounts["a"]
    assert (a.host, a.port, a.tls, a.archive, a.trash) == (
        "imap.googlemail.com",
        993,
        "implicit",
        "Archive",
        None,
    )
    assert a.smtp is not None
    assert (a.smtp.host, a.smtp.port, a.smtp.tls) == ("smtp.gmail.com", 465, "implicit")
    assert (a.smtp.username, a.smtp.from_) == ("other@example.org", "me+bot@example.org")
    assert a.smtp.password is not None and a.smtp.password.reveal() == "x"


def test_explicit_tls_takes_its_own_default_port(tmp_path: Path) -> None:
    text = f'[accounts.a]\nprovider = "fastmail"\ntls = "starttls"\n{ACCOUNT}'
    text += '[accounts.a.smtp]\ntls = "starttls"\n'
    a = load(tmp_path, text).accounts["a"]
    assert (a.port, a.tls) == (143, "starttls")
    assert a.smtp is not None and (a.smtp.port, a.smtp.tls) == (587, "starttls")


def test_preset_smtp_table_without_credentials_inherits_them(tmp_path: Path) -> None:
    text = f'[accounts.a]\nprovider = "gmail"\n{ACCOUNT}[accounts.a.smtp]\nfrom = "alias@example.org"\n'
    a = load(tmp_path, text).accounts["a"]
    assert a.smtp is not None
    assert (a.smtp.username, a.smtp.from_) == ("me@example.org", "alias@example.org")
    assert a.smtp.password == a.password


def test_preset_from_the_environment(tmp_path: Path) -> None:
    env = {
        "MAILRULES_ACCOUNTS__G__PROVIDER": "gmail",
        "MAILRULES_ACCOUNTS__G__USERNAME": "me@gmail.com",
        "MAILRULES_ACCOUNTS__G__PASSWORD": "app-password",
    }
    a = load(tmp_path, "", env).accounts["g"]
    assert (a.name, a.host, a.archive, a.trash) == ("g", "imap.gmail.com", None, None)


def test_unknown_provider_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, f'[accounts.a]\nprovider = "gmial"\n{ACCOUNT}')
    assert str(exc.value).splitlines()[0] == (
        f"{tmp_path / 'mailrules.toml'}:2:12: error: accounts.a.provider: unknown provider 'gmial' "
        "(known: fastmail, gmail, google, microsoft, outlook, yahoo)"
    )


def test_gmail_preset_budget_and_cap(tmp_path: Path) -> None:
    # Gmail allows 15 simultaneous connections per account, the user's own clients included.
    assert load(tmp_path, f'[accounts.a]\nprovider = "gmail"\n{ACCOUNT}').accounts["a"].max_connections == 8
    text = f'[accounts.a]\nprovider = "gmail"\nmax_connections = 15\n{ACCOUNT}'
    assert load(tmp_path, text).accounts["a"].max_connections == 15
    assert load(tmp_path, f'[accounts.a]\nprovider = "outlook"\n{ACCOUNT}').accounts["a"].max_connections == 5
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f'[accounts.a]\nprovider = "gmail"\nmax_connections = 16\n{ACCOUNT}')
    want = "accounts.a.max_connections: gmail allows at most 15 simultaneous IMAP connections per account"
    assert want in str(info.value)
