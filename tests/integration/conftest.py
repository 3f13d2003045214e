"""Fixtures: a private Dovecot 2.3, pymap and PostgreSQL per test session; connected sessions per test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from mailrules.imap.session import ConnectionParams, ImapSession
from tests.integration.cyrus import DEFAULT_VARIANT, VARIANTS, CyrusFleet, CyrusServer, CyrusVariant
from tests.integration.oauth_dovecot import OAuthDovecot, start_oauth_dovecot, stop_oauth_dovecot
from tests.integration.postgres import PostgresServer, start_postgres, stop_postgres
from tests.integration.servers import (
    DovecotServer,
    PymapServer,
    ServerUnavailable,
    self_signed,
    start_dovecot,
    start_pymap,
    stop_dovecot,
    stop_pymap,
)
from tests.needs import unavailable


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """A private Dovecot on loopback: .host, .imap_port, .imaps_port, .ca_file, .users, .fresh_user()."""
    try:
        server = start_dovecot()
    except ServerUnavailable as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        stop_dovecot(server)


@pytest.fixture(scope="session")
def pymap() -> Iterator[PymapServer]:
    """pymap's in-memory server (no ESEARCH, SPECIAL-USE, CONDSTORE, NAMESPACE): .fresh_mailbox()."""
    try:
        server = start_pymap()
    except ServerUnavailable as exc:
        unavailable(str(exc))
        raise
    try:
        yield server
    finally:
        stop_pymap(server)


@pytest.fixture(scope="session")
def dovecot_oauth() -> Iterator[OAuthDovecot]:
    """Dovecot with an oauth2 passdb (XOAUTH2, OAUTHBEARER) and the test authorization server whose
    HS256 JWTs it validates locally: .auth, .auth_server(**settings), .fresh_user(), .imap_port."""
    try:
        server = start_oauth_dovecot()
    except ServerUnavailable as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        stop_oauth_dovecot(server)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster on loopback: .dsn(db), .fresh_database(), .restart(), .kill()."""
    try:
        server = start_postgres()
    except ServerUnavailable as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        stop_postgres(server)


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> str:
    """The DSN (with the password) of a new, empty database owned by postgres.user."""
    if not postgres.running:  # a test that stopped it failed before starting it again
        postgres.start()
    return postgres.fresh_database()


@pytest.fixture(scope="session")
def wrong_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CA certificate that did not sign the servers' certificates."""
    try:
        cert, _ = self_signed(tmp_path_factory.mktemp("wrong-ca"))
    except ServerUnavailable as exc:
        unavailable(str(exc))
        raise
    return str(cert)


@pytest.fixture
def dv(dovecot: DovecotServer) -> Iterator[ImapSession]:
    """A STARTTLS session as a brand-new Dovecot user (empty INBOX)."""
    user, password = dovecot.fresh_user()
    session = ImapSession.connect(dovecot.params(user, password))
    try:
        yield session
    finally:
        session.logout()


@pytest.fixture
def pm(pymap: PymapServer) -> Iterator[ImapSession]:
    """A STARTTLS session on pymap (shared demo user: use pymap.fresh_mailbox())."""
    session = ImapSession.connect(pymap.params())
    try:
        yield session
    finally:
        session.logout()


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    # `mailrules run` and the daemon point the root logger at their own stream: put pytest's back.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def account(dovecot: DovecotServer) -> ConnectionParams:
    """A fresh Dovecot user (empty mailbox), STARTTLS with the fixture's CA."""
    return dovecot.params(*dovecot.fresh_user())


@pytest.fixture(scope="session")
def cyrus_fleet() -> Iterator[CyrusFleet]:
    """Private Cyrus IMAP 3.6 servers, one per namespace variant, each started on first use."""
    fleet = CyrusFleet()
    try:
        yield fleet
    finally:
        fleet.close()


def _cyrus(fleet: CyrusFleet, variant: CyrusVariant) -> CyrusServer:
    try:
        return fleet.get(variant)
    except ServerUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def cyrus(cyrus_fleet: CyrusFleet) -> CyrusServer:
    """Cyrus with Debian's namespace (INBOX., separator "."): .port, .params(user), .fresh_user()."""
    return _cyrus(cyrus_fleet, DEFAULT_VARIANT)


@pytest.fixture(params=VARIANTS, ids=lambda v: v.id)
def cyrus_each(request: pytest.FixtureRequest, cyrus_fleet: CyrusFleet) -> CyrusServer:
    """Cyrus in each namespace variant (altnamespace no/yes × separator "." or "/"): four runs per test."""
    variant: CyrusVariant = request.param
    return _cyrus(cyrus_fleet, variant)


ALT_DOT = CyrusVariant(altnamespace=True)


def _cyrus_session(server: CyrusServer) -> Iterator[ImapSession]:
    session = ImapSession.connect(server.params(server.fresh_user()[0]))
    try:
        yield session
    finally:
        session.logout()


@pytest.fixture
def cy(cyrus: CyrusServer) -> Iterator[ImapSession]:
    """A session as a brand-new Cyrus user (INBOX. and "."; plaintext on loopback)."""
    yield from _cyrus_session(cyrus)


@pytest.fixture
def cy_alt(cyrus_fleet: CyrusFleet) -> Iterator[ImapSession]:
    """A session as a brand-new user of Cyrus with altnamespace (no prefix, separator ".")."""
    yield from _cyrus_session(_cyrus(cyrus_fleet, ALT_DOT))


@pytest.fixture(params=["dovecot", "cyrus", "cyrus-alt"])
def server_account(request: pytest.FixtureRequest) -> ConnectionParams:
    """A fresh user (empty INBOX) on Dovecot, on Cyrus (INBOX., ".") and on Cyrus with altnamespace
    ("", "."), STARTTLS with each server's CA: for what the same rule files must do on every server."""
    if request.param == "dovecot":
        dovecot: DovecotServer = request.getfixturevalue("dovecot")
        return dovecot.params(*dovecot.fresh_user())
    fleet: CyrusFleet = request.getfixturevalue("cyrus_fleet")
    server = _cyrus(fleet, DEFAULT_VARIANT if request.param == "cyrus" else ALT_DOT)
    return server.params(server.fresh_user()[0], tls="starttls")
