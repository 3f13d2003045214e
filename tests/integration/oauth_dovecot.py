"""Dovecot with an oauth2 passdb validating the test authorization server's JWTs locally (no network)."""

from __future__ import annotations

import itertools
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.servers import HOST, _tail, launch_dovecot, stop
from tests.oauth_server import OAuthTestServer


@dataclass
class OAuthDovecot:
    """A running Dovecot whose XOAUTH2/OAUTHBEARER logins take tokens from `auth` (or any server
    made by `auth_server()`: same key, same issuer). Users are e-mail addresses (the `email` claim)."""

    host: str
    imap_port: int
    imaps_port: int
    ca_file: str
    directory: Path
    proc: subprocess.Popen[bytes]
    auth: OAuthTestServer
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def fresh_user(self) -> str:
        """An address no test logged in as yet (its mailbox is created at the first login)."""
        return f"o{next(self._counter)}-{secrets.token_hex(3)}@example.org"

    def auth_server(self, **settings: Any) -> OAuthTestServer:
        """Another authorization server (not started) whose tokens this Dovecot accepts: for a test
        that needs its own lifetimes, rotation or failures."""
        return OAuthTestServer(key=self.auth.key, issuer=self.auth.issuer or self.auth.url, **settings)

    def log_text(self) -> str:
        return _tail(self.directory / "dovecot.log")


def start_oauth_dovecot() -> OAuthDovecot:
    """The session's authorization server, then a Dovecot that trusts its key and issuer."""
    auth = OAuthTestServer().start()
    try:
        launched = launch_dovecot(
            oauth2_key=auth.key, oauth2_issuer=auth.url, purpose="oauth", prefix="mr-do-"
        )
    except BaseException:
        auth.stop()
        raise
    return OAuthDovecot(
        HOST,
        launched.imap_port,
        launched.imaps_port or 0,
        str(launched.ca_file),
        launched.directory,
        launched.proc,
        auth,
    )


def stop_oauth_dovecot(server: OAuthDovecot) -> None:
    stop(server.proc)
    server.auth.stop()
    shutil.rmtree(server.directory, ignore_errors=True)
