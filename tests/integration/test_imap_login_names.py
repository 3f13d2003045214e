"""LOGIN with names and passwords imaplib could not send: spaces, quotes, backslashes, 8-bit."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from mailrules.errors import ImapError
from mailrules.imap.session import ConnectionParams, ImapSession
from tests.integration.servers import DovecotProcess, ServerUnavailable, launch_dovecot, stop
from tests.needs import unavailable

pytestmark = pytest.mark.integration

# Dovecot refuses usernames outside auth_username_chars (letters, digits, `.-_@` by default); the
# empty setting allows any. It refuses passwords with control characters ("password having illegal
# chars"), so a tab is only tested against the scripted server (tests/unit/test_imap_login.py).
USERS = {
    'we"ird \\ user': 'p a"s\\s w0rd',
    "plain": 'sp ace"quote\\back',
    "umlaut": "pässwörd",
    "jürgen": "pw",
}


def passwd_name(user: str) -> str:
    # passwd-file looks users up by the name escaped as Dovecot's %u expansion escapes it.
    return user.replace("\\", "\\\\").replace('"', '\\"')


@pytest.fixture(scope="module")
def odd_dovecot() -> Iterator[DovecotProcess]:
    try:
        launched = launch_dovecot(
            users={passwd_name(u): p for u, p in USERS.items()},
            purpose="login-names",
            extra="auth_username_chars =\n",
        )
    except ServerUnavailable as exc:
        unavailable(str(exc))
    try:
        yield launched
    finally:
        stop(launched.proc)
        shutil.rmtree(launched.directory, ignore_errors=True)


def params(server: DovecotProcess, user: str, password: str) -> ConnectionParams:
    return ConnectionParams(
        "127.0.0.1", server.imap_port, "starttls", user, password, ca_file=str(server.ca_file), name="odd"
    )


@pytest.mark.parametrize("user", ['we"ird \\ user', "plain"])
def test_quoted_and_literal_logins_work(odd_dovecot: DovecotProcess, user: str) -> None:
    with ImapSession.connect(params(odd_dovecot, user, USERS[user])) as s:
        assert s.select("INBOX").exists == 0


class _NoSaslPlain(ImapSession):
    """A server that offers no AUTH=PLAIN: 8-bit credentials must go through LOGIN, as literals."""

    def _pre_auth_caps(self) -> set[str]:
        return super()._pre_auth_caps() - {"AUTH=PLAIN"}


@pytest.mark.parametrize("user", ["umlaut", "jürgen"])
def test_8bit_names_and_passwords_as_literals(odd_dovecot: DovecotProcess, user: str) -> None:
    with _NoSaslPlain.connect(params(odd_dovecot, user, USERS[user])) as s:
        assert s.select("INBOX").exists == 0
    with ImapSession.connect(params(odd_dovecot, user, USERS[user])) as s:  # AUTHENTICATE PLAIN
        assert s.select("INBOX").exists == 0


def test_a_wrong_password_with_quotes_is_auth(odd_dovecot: DovecotProcess) -> None:
    with pytest.raises(ImapError) as info:
        ImapSession.connect(params(odd_dovecot, 'we"ird \\ user', 'wrong" "x'))
    assert info.value.kind == "auth"
    assert 'wrong" "x' not in str(info.value)
