"""OAuth2 accounts end to end, as a user runs them: `mailrules run` and `mailrules daemon` processes
on a Dovecot that validates the test authorization server's JWTs, tokens living seconds: arrivals
filed across several token lifetimes, a Dovecot restart after the token expired, invalid_grant
stopping one account (ERROR line, /readyz 503, `run` exit 78) while another goes on, and not one
token in anything mailrules wrote."""

from __future__ import annotations

import functools
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailrules.config.model import Secret
from mailrules.imap.session import ConnectionParams, ImapSession
from mailrules.oauth.client import tokens_from_response
from mailrules.oauth.store import Tokens, TokenStore
from tests.integration.helpers import http_get, metric_total
from tests.integration.oauth_dovecot import OAuthDovecot
from tests.integration.servers import (
    HOST,
    ServerUnavailable,
    launch_dovecot,
    make_message,
    spawn_dovecot,
    stop,
    wait_for_port,
)
from tests.integration.smtp_oauth import oauth_smtp
from tests.needs import unavailable
from tests.oauth_server import OAuthTestServer

pytestmark = pytest.mark.integration

RULES = """
rule "filed" { when subject contains "file me" then move to "Filed" }
rule "sent"  { when subject contains "forward me" then forward to "boss@example.org", move to "Sent" }
"""


class StaticTokens:
    """The test's own logins (appending, counting): a fresh 10-minute token each time."""

    mechanism = "xoauth2"

    def __init__(self, auth: OAuthTestServer, user: str) -> None:
        self.auth, self.user = auth, user

    def access_token(self) -> Secret:
        return Secret(self.auth.access_token(self.user, lifetime=600))

    def force_refresh(self, refused: Secret | None = None) -> Secret:
        return self.access_token()

    def expired(self, token: Secret | None = None) -> None:
        return None


class Imap:
    """Where the accounts' mail is: host, STARTTLS port, CA."""

    def __init__(self, host: str, port: int, ca_file: str) -> None:
        self.host, self.port, self.ca_file = host, port, ca_file

    def session(self, auth: OAuthTestServer, user: str) -> ImapSession:
        return ImapSession.connect(
            ConnectionParams(
                self.host,
                self.port,
                "starttls",
                user,
                "",
                ca_file=self.ca_file,
                timeout=10,
                tokens=StaticTokens(auth, user),
            )
        )

    def append(self, auth: OAuthTestServer, user: str, subjects: list[str]) -> None:
        with self.session(auth, user) as s:
            s.append_many("INBOX", [make_message(subject) for subject in subjects])

    def counts(self, auth: OAuthTestServer, user: str) -> dict[str, int]:
        with self.session(auth, user) as s:
            return {mb.name: s.select(mb.name, readonly=True).exists for mb in s.list_mailboxes()}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    tmp: Path,
    imap: Imap,
    auth: OAuthTestServer,
    users: dict[str, str],
    *,
    smtp_port: int | None = None,
    metrics_port: int | None = None,
) -> Path:
    """A configuration with one OAuth2 account per (name, user), each with a refresh token obtained
    elsewhere in a file beside it (refresh_token_file); token stores default (tokens/NAME.json)."""
    rules = tmp / "rules.d"
    rules.mkdir(exist_ok=True)
    (rules / "10.rules").write_text(RULES, encoding="utf-8")
    listen = f"127.0.0.1:{metrics_port}" if metrics_port else ""
    text = f'rules = "rules.d"\nstate = "state.db"\n[metrics]\nlisten = "{listen}"\n'
    for name, user in users.items():
        secret = tmp / f"refresh-{name}"
        secret.write_text(auth.grant(user)["refresh_token"] + "\n", encoding="utf-8")
        secret.chmod(0o600)
        text += f"""
[accounts.{name}]
host = "{imap.host}"
port = {imap.port}
tls = "starttls"
ca_file = "{imap.ca_file}"
username = "{user}"
auth = "oauth2"
[accounts.{name}.oauth2]
token_url = "{auth.token_url}"
client_id = "mailrules-test"
scopes = ["imap"]
refresh_token_file = "refresh-{name}"
"""
        if smtp_port:
            text += (
                f'[accounts.{name}.smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\ntls = "none"\n'
                "allow_insecure = true\n"
            )
    path = tmp / "mailrules.toml"
    path.write_text(text, encoding="utf-8")
    return path


def mailrules(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailrules", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def wait_until(cond: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    tail = f"\n--- daemon log:\n{log.read_text()[-4000:]}" if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}{tail}")


class Daemon:
    """`mailrules daemon -v` as a subprocess, its output in a file."""

    def __init__(self, config: Path, metrics_port: int) -> None:
        self.config, self.port = config, metrics_port
        self.log = config.parent / "daemon.log"
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailrules", "daemon", "-v", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        wait_until(lambda: self.get("/healthz")[0] == 200, 30, "the daemon to answer", self.log)

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.port, path, timeout=2)

    def metric(self, name: str, **labels: str) -> float:
        text = self.get("/metrics")[1]
        if not labels:
            return metric_total(text, name)
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if (
                line.startswith(f"{name}{{")
                and ",".join(sorted(line[len(name) + 1 :].split("} ")[0].split(","))) == want
            ):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no sample {name}{labels}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def lab(dovecot_oauth: OAuthDovecot) -> Imap:
    return Imap(dovecot_oauth.host, dovecot_oauth.imap_port, dovecot_oauth.ca_file)


def test_mailrules_run_on_an_oauth2_account(dovecot_oauth: OAuthDovecot, lab: Imap, tmp_path: Path) -> None:
    user = dovecot_oauth.fresh_user()
    with dovecot_oauth.auth_server(access_lifetime=600) as auth, oauth_smtp(auth.key) as (sink, port):
        lab.append(auth, user, ["please file me", "please forward me", "leave me"])
        config = write_config(tmp_path, lab, auth, {"lab": user}, smtp_port=port)
        ran = mailrules("run", "--print-metrics", "--config", str(config), cwd=tmp_path)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        c = lab.counts(auth, user)
        assert (c["INBOX"], c["Filed"], c["Sent"]) == (1, 1, 1)
        assert [m.user for m in sink.messages] == [user]  # forwarded after AUTH XOAUTH2 as the account
        assert 'mailrules_oauth_refreshes_total{account="lab",outcome="ok"} 1.0' in ran.stdout
        store = tmp_path / "tokens" / "lab.json"
        assert store.stat().st_mode & 0o777 == 0o600
        stored = TokenStore(store).load()
        assert stored is not None and stored.refresh_token is not None
        assert auth.active_refresh_tokens(user) == [stored.refresh_token.reveal()]  # rotated and saved


def test_the_daemon_files_arrivals_across_several_token_lifetimes(
    dovecot_oauth: OAuthDovecot, lab: Imap, tmp_path: Path
) -> None:
    user = dovecot_oauth.fresh_user()
    lifetime = 3.0
    with dovecot_oauth.auth_server(access_lifetime=lifetime) as auth, oauth_smtp(auth.key) as (sink, port):
        metrics_port = free_port()
        config = write_config(tmp_path, lab, auth, {"lab": user}, smtp_port=port, metrics_port=metrics_port)
        d = Daemon(config, metrics_port)
        try:
            wait_until(lambda: d.get("/readyz")[0] == 200, 30, "the daemon to be ready", d.log)
            arrivals = 6  # half a lifetime apart at least: three lifetimes in all
            for n in range(1, arrivals + 1):
                lab.append(auth, user, [f"arrival {n} forward me"])
                wait_until(
                    functools.partial(lambda k: lab.counts(auth, user).get("Sent") == k, n),
                    30,
                    f"arrival {n}",
                    d.log,
                )
                time.sleep(lifetime / 2)
            # every send logged in; a token the server saw expire first (a stalled machine: 3-second
            # tokens are refreshed 0.3 s ahead) was refreshed once and the next AUTH went through
            assert len(sink.messages) == arrivals and sink.logins[-1][1]
            assert all(ok or then for (_, ok), (_, then) in zip(sink.logins, sink.logins[1:], strict=False))
            assert d.metric("mailrules_oauth_refreshes_total", account="lab", outcome="ok") >= 3
            assert d.metric("mailrules_oauth_token_expiry_timestamp_seconds") > time.time() - lifetime
            assert d.get("/readyz")[0] == 200
        finally:
            assert d.stop() == 0
        stored = TokenStore(tmp_path / "tokens" / "lab.json").load()
        assert stored is not None and stored.refresh_token is not None
        assert auth.active_refresh_tokens(user) == [stored.refresh_token.reveal()]


@pytest.fixture
def private_oauth_dovecot() -> Iterator[tuple[OAuthTestServer, Imap, Path, list[subprocess.Popen[bytes]]]]:
    """A Dovecot of this test's own (to be restarted) trusting an authorization server whose access
    tokens live 3 s."""
    import shutil

    auth = OAuthTestServer(access_lifetime=3).start()
    try:
        launched = launch_dovecot(
            oauth2_key=auth.key, oauth2_issuer=auth.url, purpose="oauth-restart", prefix="mr-dr-", imaps=False
        )
    except ServerUnavailable as exc:
        auth.stop()
        unavailable(str(exc))
    procs = [launched.proc]
    try:
        yield auth, Imap(HOST, launched.imap_port, str(launched.ca_file)), launched.directory, procs
    finally:
        for p in procs:
            stop(p)
        auth.stop()
        shutil.rmtree(launched.directory, ignore_errors=True)


def test_a_dovecot_restart_after_the_token_expired(
    private_oauth_dovecot: tuple[OAuthTestServer, Imap, Path, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    auth, imap, directory, procs = private_oauth_dovecot
    user = "restart@example.org"
    metrics_port = free_port()
    d = Daemon(write_config(tmp_path, imap, auth, {"lab": user}, metrics_port=metrics_port), metrics_port)
    try:
        wait_until(lambda: d.get("/readyz")[0] == 200, 30, "the daemon to be ready", d.log)
        imap.append(auth, user, ["before, file me"])
        wait_until(lambda: imap.counts(auth, user).get("Filed") == 1, 30, "the first arrival", d.log)
        refreshed = d.metric("mailrules_oauth_refreshes_total", account="lab", outcome="ok")
        procs[0].send_signal(signal.SIGTERM)
        procs[0].wait(10)
        wait_until(lambda: d.metric("mailrules_watcher_up") == 0, 20, "the watcher to notice", d.log)
        time.sleep(auth.access_lifetime + 1)  # the token the daemon holds has expired meanwhile
        procs.append(spawn_dovecot(directory))
        wait_for_port(imap.port, procs[-1], directory / "dovecot.log")
        imap.append(auth, user, ["during the backoff, file me"])
        wait_until(
            lambda: imap.counts(auth, user).get("Filed") == 2, 120, "catch-up after the restart", d.log
        )
        assert d.metric("mailrules_oauth_refreshes_total", account="lab", outcome="ok") > refreshed
        wait_until(lambda: d.get("/readyz")[0] == 200, 30, "ready again", d.log)
    finally:
        assert d.stop() == 0


def expired_and_revoked(tmp_path: Path, auth: OAuthTestServer, user: str, name: str) -> None:
    """The account's store as a daemon leaves it: an access token that has expired; then the
    authorization server revokes the grant (a password change, an admin, 90 days unused)."""
    granted = tokens_from_response(auth.grant(user), time.time() - 7200, ("imap",))
    TokenStore(tmp_path / "tokens" / f"{name}.json").save(
        Tokens(granted.access_token, time.time() - 3600, time.time() - 7200, granted.refresh_token, ("imap",))
    )
    auth.revoke(user)


def test_invalid_grant_stops_one_account_the_other_goes_on(
    dovecot_oauth: OAuthDovecot, lab: Imap, tmp_path: Path
) -> None:
    stopped, going = dovecot_oauth.fresh_user(), dovecot_oauth.fresh_user()
    with dovecot_oauth.auth_server(access_lifetime=600) as auth:
        metrics_port = free_port()
        config = write_config(tmp_path, lab, auth, {"a": stopped, "b": going}, metrics_port=metrics_port)
        expired_and_revoked(tmp_path, auth, stopped, "a")
        d = Daemon(config, metrics_port)
        try:
            wait_until(lambda: "login required" in d.get("/readyz")[1], 30, "readyz to name a", d.log)
            status, reason = d.get("/readyz")
            assert status == 503 and "account a: login required, run `mailrules auth login a`" in reason
            assert "account b" not in reason
            lab.append(auth, going, ["for b, file me"])
            wait_until(lambda: lab.counts(auth, going).get("Filed") == 1, 30, "b's arrival filed", d.log)
            assert d.metric("mailrules_oauth_refreshes_total", account="a", outcome="invalid_grant") == 1
            assert d.metric("mailrules_auth_failures_total", account="a", reason="invalid_grant") >= 1
        finally:
            assert d.stop() == 0
        errors = [line for line in d.text().splitlines() if " ERROR " in line and "account a" in line]
        assert errors and "`mailrules auth login a`" in errors[0]
        assert sum("invalid_grant" in line for line in errors) == 1  # said once, not at every retry

        lab.append(auth, going, ["for b again, file me"])
        lab.append(auth, stopped, ["for a, file me"])
        ran = mailrules("run", "--config", str(config), cwd=tmp_path)
        assert ran.returncode == 78, ran.stdout + ran.stderr
        assert "account a: login required: run `mailrules auth login a`" in ran.stderr
        assert lab.counts(auth, going).get("Filed") == 2  # b was run
        assert lab.counts(auth, stopped).get("INBOX") == 1  # a was not


def test_no_token_in_anything_mailrules_writes(
    dovecot_oauth: OAuthDovecot, lab: Imap, tmp_path: Path
) -> None:
    """A full OAuth2 run, then a grep of its every output for each token the server issued."""
    user, other = dovecot_oauth.fresh_user(), dovecot_oauth.fresh_user()
    outputs: dict[str, str] = {}
    with dovecot_oauth.auth_server(access_lifetime=3) as auth, oauth_smtp(auth.key) as (sink, port):
        auth.add_client("confidential", secret="client-s3cret-for-the-grep")
        metrics_port = free_port()
        config = write_config(
            tmp_path, lab, auth, {"lab": user, "gone": other}, smtp_port=port, metrics_port=metrics_port
        )
        text = config.read_text().replace(  # one account with a client secret, to grep for it too
            'client_id = "mailrules-test"\nscopes = ["imap"]\nrefresh_token_file = "refresh-gone"',
            'client_id = "mailrules-test"\nscopes = ["imap"]\nrefresh_token_file = "refresh-gone"\n'
            'client_secret = "client-s3cret-for-the-grep"',
        )
        config.write_text(text)
        lab.append(auth, user, ["one, file me", "two, forward me"])
        for args in (["config"], ["auth", "status"], ["run", "-v", "--print-metrics"]):
            done = mailrules(*args, "--config", str(config), cwd=tmp_path)
            outputs[" ".join(args)] = done.stdout + done.stderr
        d = Daemon(config, metrics_port)
        try:
            wait_until(lambda: d.get("/readyz")[0] in (200, 503), 30, "readiness", d.log)
            lab.append(auth, user, ["three, forward me"])
            wait_until(lambda: lab.counts(auth, user).get("Sent") == 2, 30, "the arrival", d.log)
            time.sleep(auth.access_lifetime + 0.5)  # a refresh and its rotation on the way
            lab.append(auth, user, ["four, forward me"])
            wait_until(lambda: lab.counts(auth, user).get("Sent") == 3, 30, "the next arrival", d.log)
            auth.revoke(other)
            expired_and_revoked(tmp_path, auth, other, "gone")
            outputs["/metrics"] = d.get("/metrics")[1]
            outputs["/readyz"] = d.get("/readyz")[1]
        finally:
            d.stop()
        outputs["daemon log"] = d.text()
        for args in (["run", "-v"], ["log", "-n", "1000"], ["auth", "status"], ["auth", "logout", "gone"]):
            done = mailrules(*args, "--config", str(config), cwd=tmp_path)
            outputs[" ".join(args)] = done.stdout + done.stderr
        with sqlite3.connect(tmp_path / "state.db") as db:  # the journal, runs, checkpoints, intents
            outputs["state.db"] = "\n".join(db.iterdump())
        secrets = auth.all_secrets()
    assert len(sink.messages) == 3 and len(secrets) >= 8
    assert "login required" in outputs["run -v"]  # the errors are in what is grepped
    assert "forward" in outputs["log -n 1000"]
    assert os.path.getsize(tmp_path / "tokens" / "lab.json") > 0
    leaks = [(where, secret[:12]) for where, text in outputs.items() for secret in secrets if secret in text]
    assert leaks == []
