"""Private IMAP servers for the integration tests: Dovecot 2.3 and pymap's in-memory backend, on loopback.

`launch_dovecot` (config from `dovecot_conf`) is also the benchmarks' Dovecot (bench/_dovecot.py):
their extras (a rawlog per user, more mailboxes, raised limits, another mail uid) are its parameters.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailrules.imap.session import ConnectionParams, TlsMode

HOST = "127.0.0.1"
USER_BATCH = 64

DOVECOT_CONF = """\
# Throwaway Dovecot 2.3 config (docs: /work/shared/imap-notes.md (c)): loopback only, passwd-file, maildir
# Written by dovecot_conf() in tests/integration/servers.py; who for: see instance_name.
protocols = imap
listen = 127.0.0.1
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log
instance_name = mailrules-{purpose}-{tag}
{login_users}
ssl = yes
ssl_cert = <{dir}/ssl/cert.pem
ssl_key = <{dir}/ssl/key.pem

# loopback counts as "secured" anyway; keep PLAIN/LOGIN usable over plaintext for the tls=none test
disable_plaintext_auth = no
auth_mechanisms = {auth_mechanisms}
first_valid_uid = {first_uid}

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
{password_mechanisms}}}
{oauth2_passdb}userdb {{
  driver = static
  args = uid={uid} gid={gid} home={dir}/home/%u
}}
mail_location = maildir:{dir}/mail/%u
# Throwaway mail: skip the fsync per saved message (3,000 appends went from 12 s to well under 1 s).
mail_fsync = never

namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}}}

# Tests log in with wrong passwords on purpose: without this, every later login from 127.0.0.1 waits
# 2-15 s (Dovecot "Authentication Penalty" doc; the anvil socket mode 0 disables it).
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
{imaps}  }}
{login_extra}}}
{extra}"""


OAUTH2_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {args}
}}
"""

# Local JWT validation, no network (imap-notes.md (e)): the key is looked up in the dict as
# <azp|default>/<alg>/<kid|default>; tokens without azp/kid use keys/default/HS256/default.
OAUTH2_CONF = """\
introspection_mode = local
local_validation_key_dict = fs:posix:prefix={dir}/keys/
username_attribute = email
issuers = {issuer}
"""


def write_oauth2_conf(directory: Path, key: bytes, issuer: str) -> Path:
    """The oauth2 passdb's settings and its HS256 `key` (base64, readable by the auth process)."""
    keys = directory / "keys" / "default" / "HS256"
    keys.mkdir(parents=True)
    key_file = keys / "default"
    key_file.write_text(base64.b64encode(key).decode("ascii"))
    # The auth process runs as the internal user (dovecot) when started as root.
    for path in (directory / "keys", directory / "keys" / "default", keys):
        path.chmod(0o755)
    key_file.chmod(0o644)
    conf = directory / "dovecot-oauth2.conf.ext"
    conf.write_text(OAUTH2_CONF.format(dir=directory, issuer=issuer))
    return conf


def special_use_mailboxes(names: Iterable[str] = ("Drafts", "Junk", "Trash", "Sent", "Archive")) -> str:
    """`namespace inbox` entries: each name a SPECIAL-USE mailbox of the same name, auto-subscribed."""
    return "".join(f"  mailbox {n} {{\n    special_use = \\{n}\n    auto = subscribe\n  }}\n" for n in names)


def autocreate_mailboxes(names: Iterable[str]) -> str:
    """`namespace inbox` entries: plain mailboxes every user has from the start."""
    return "".join(f"  mailbox {n} {{\n    auto = create\n  }}\n" for n in names)


def dovecot_conf(
    directory: Path,
    *,
    imap_port: int,
    imaps_port: int | None,
    uid: str,
    gid: str,
    first_uid: int,
    login_users: str = "",
    purpose: str = "test",
    mailboxes: str | None = None,
    extra: str = "",
    login_extra: str = "",
    oauth2_args: str | None = None,
) -> str:
    """The one Dovecot config: everything below `directory`, STARTTLS on `imap_port`, implicit TLS on
    `imaps_port` (None: off), mail processes as `uid`/`gid`; `mailboxes` (default: the special-use
    ones) go into the inbox namespace, `login_extra` into `service imap-login`, `extra` at the end.
    `oauth2_args` (the path of a dovecot-oauth2.conf.ext) adds an oauth2 passdb for XOAUTH2 and
    OAUTHBEARER; the passwd-file then serves PLAIN and LOGIN only (imap-notes.md (e))."""
    if imaps_port is None:
        imaps = "    port = 0\n"
    else:
        imaps = f"    address = 127.0.0.1\n    port = {imaps_port}\n    ssl = yes\n"
    return DOVECOT_CONF.format(
        dir=directory,
        tag=directory.name,
        purpose=purpose,
        imap_port=imap_port,
        imaps=imaps,
        uid=uid,
        gid=gid,
        first_uid=first_uid,
        login_users=login_users,
        mailboxes=special_use_mailboxes() if mailboxes is None else mailboxes,
        login_extra=login_extra,
        extra=extra,
        auth_mechanisms="plain login" if oauth2_args is None else "plain login xoauth2 oauthbearer",
        password_mechanisms="" if oauth2_args is None else "  mechanisms = plain login\n",
        oauth2_passdb="" if oauth2_args is None else OAUTH2_PASSDB.format(args=oauth2_args),
    )


class ServerUnavailable(RuntimeError):
    """The server binary is missing (the caller skips, or fails under CI=true)."""


def free_port() -> int:
    """A port the kernel just handed out on loopback (tiny race until the server binds it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {_tail(log)}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not accept on {HOST}:{port} within {timeout}s: {_tail(log)}")


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen[Any] | None, grace: float = 10) -> None:
    """Stop one process by its PID: SIGTERM, then SIGKILL if it is not gone after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def self_signed(directory: Path, cn: str = "localhost") -> tuple[Path, Path]:
    """A self-signed cert for `cn` + IP:127.0.0.1 (it is its own CA) -> (cert, key)."""
    if shutil.which("openssl") is None:
        raise ServerUnavailable("openssl is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={cn}",
            "-addext",
            f"subjectAltName=DNS:{cn},IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    return cert, key


@dataclass
class DovecotServer:
    """A running private Dovecot: ports, the CA to trust, users; `fresh_user()` gives an empty mailbox."""

    host: str
    imap_port: int
    imaps_port: int
    ca_file: str
    directory: Path
    proc: subprocess.Popen[bytes]
    users: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _pool: list[tuple[str, str]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fresh_user(self) -> tuple[str, str]:
        """A user nobody logged in as yet (empty mailbox) -> (name, password).

        Users are added to the passwd-file in batches. Dovecot re-reads the file when it changes, but
        stats it at most once per second (db-passwd-file.c), so after adding a batch we wait for the
        clock to tick over before anyone logs in as one of them.
        """
        with self._lock:
            if not self._pool:
                self._add_users(USER_BATCH)
                time.sleep(1.05 - (time.time() % 1.0))
            return self._pool.pop(0)

    def _add_users(self, count: int) -> None:
        lines = []
        for _ in range(count):
            name = f"user{next(self._counter)}"
            password = secrets.token_urlsafe(12)
            lines.append(passwd_line(name, password))
            self._pool.append((name, password))
            self.users.append((name, password))
        with (self.directory / "users").open("a") as f:
            f.write("".join(lines))

    def params(self, user: str, password: str, tls: TlsMode = "starttls", **kw: object) -> ConnectionParams:
        port = self.imaps_port if tls == "implicit" else self.imap_port
        args: dict[str, object] = {"ca_file": self.ca_file, "name": f"dovecot-{user}", **kw}
        return ConnectionParams(self.host, port, tls, user, password, **args)  # type: ignore[arg-type]

    def log_text(self) -> str:
        return _tail(self.directory / "dovecot.log")


def dovecot_binary() -> str:
    if "MAILRULES_DOVECOT" in os.environ:  # lets a test of the fixtures pretend it is missing
        override = os.environ["MAILRULES_DOVECOT"]
        if not Path(override).is_file():
            raise ServerUnavailable(f"dovecot is not installed (no {override})")
        return override
    found = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)
    if found is None:
        raise ServerUnavailable("dovecot is not installed")
    return found


def passwd_line(user: str, password: str) -> str:
    """One user of the passwd-file (`scheme=PLAIN`)."""
    return f"{user}:{{PLAIN}}{password}::::::\n"


@dataclass
class DovecotProcess:
    """What `launch_dovecot` started: its directory (config, logs, mail), the process, the ports."""

    directory: Path
    proc: subprocess.Popen[bytes]
    imap_port: int
    imaps_port: int | None
    ca_file: Path
    mail_owner: tuple[str, str] | None  # user, group of the maildirs when run as root; None: the current user


def launch_dovecot(
    *,
    users: Mapping[str, str] | None = None,
    prefix: str = "mr-dc-",
    purpose: str = "test",
    imaps: bool = True,
    mailboxes: str | None = None,
    mail_owner: tuple[str, str] = ("nobody", "nogroup"),
    rawlog_dir: str | Path | None = None,
    extra: str = "",
    login_extra: str = "",
    oauth2_key: bytes | None = None,
    oauth2_issuer: str = "",
) -> DovecotProcess:
    """Start a private Dovecot on loopback and wait until it accepts connections.

    `users` (name -> password) are in the passwd-file before the start. As root, mail access runs as
    `mail_owner` (it must not be root and needs uid >= first_valid_uid = 500), which then owns the
    mail, home and rawlog directories. `rawlog_dir` (relative: below the server's directory) gets
    one directory per user and a `rawlog_dir = <it>/%u` line: every byte each client sends after
    login (and the replies), timestamped. `purpose` names the instance; `prefix` the temporary
    directory; `oauth2_key` (HS256) adds the oauth2 passdb accepting JWTs from `oauth2_issuer`
    (tests/oauth_server.py); the rest goes to `dovecot_conf`.
    Raises ServerUnavailable without dovecot or openssl, RuntimeError if it does not come up.
    """
    users = dict(users or {})
    binary = dovecot_binary()
    # Short path: Dovecot's unix sockets live under base_dir and sun_path holds ~108 bytes.
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    directory.chmod(0o755)  # the mail user (nobody) must traverse it
    for sub in ("run", "state", "mail", "home"):
        (directory / sub).mkdir()
    owned = [directory / "mail", directory / "home"]
    if rawlog_dir is not None:
        rawlog = directory / rawlog_dir  # an absolute rawlog_dir stays as it is
        rawlog.mkdir(parents=True, exist_ok=True)
        for user in users:
            (rawlog / user).mkdir(parents=True)
        owned.append(rawlog)
        # Every byte a client sends after login, one .in/.out pair per connection (Dovecot >= 2.2.26).
        extra = f"rawlog_dir = {rawlog}/%u\n{extra}"
    (directory / "users").write_text("".join(passwd_line(u, p) for u, p in users.items()))
    oauth2_args = None if oauth2_key is None else str(write_oauth2_conf(directory, oauth2_key, oauth2_issuer))
    try:
        cert, _ = self_signed(directory / "ssl")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    owner: tuple[str, str] | None
    if os.geteuid() == 0:
        # Mail access must not run as root and needs uid >= first_valid_uid (500).
        owner = mail_owner
        uid, gid = owner
        first_uid, login_users = 500, ""
        subprocess.run(["chown", "-R", ":".join(owner), *map(str, owned)], check=True)
    else:
        # Unprivileged: everything (login processes, mail access) runs as the current user.
        owner = None
        me = os.getuid()
        uid, gid, first_uid = str(me), str(os.getgid()), me
        name = pwd.getpwuid(me).pw_name
        login_users = f"default_login_user = {name}\ndefault_internal_user = {name}\n"
    imap_port = free_port()
    imaps_port = free_port() if imaps else None
    (directory / "dovecot.conf").write_text(
        dovecot_conf(
            directory,
            imap_port=imap_port,
            imaps_port=imaps_port,
            uid=uid,
            gid=gid,
            first_uid=first_uid,
            login_users=login_users,
            purpose=purpose,
            mailboxes=mailboxes,
            extra=extra,
            login_extra=login_extra,
            oauth2_args=oauth2_args,
        )
    )
    proc = spawn_dovecot(directory, binary)
    try:
        for port in (imap_port, imaps_port):
            if port is not None:
                wait_for_port(port, proc, directory / "dovecot.log")
    except RuntimeError as exc:
        stop(proc)
        output = _tail(directory / "foreground.out")
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"dovecot: {exc}\n--- dovecot -F output:\n{output}") from None
    except BaseException:
        stop(proc)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return DovecotProcess(directory, proc, imap_port, imaps_port, cert, owner)


def spawn_dovecot(directory: Path, binary: str | None = None) -> subprocess.Popen[bytes]:
    """Run `directory`'s dovecot.conf in the foreground (its stdout/stderr appended to foreground.out)."""
    with (directory / "foreground.out").open("ab") as out:
        return subprocess.Popen(
            [binary or dovecot_binary(), "-F", "-c", str(directory / "dovecot.conf")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def start_dovecot() -> DovecotServer:
    """The tests' Dovecot: STARTTLS and implicit TLS ports, the special-use mailboxes, users on demand."""
    launched = launch_dovecot()
    server = DovecotServer(
        HOST,
        launched.imap_port,
        launched.imaps_port or 0,
        str(launched.ca_file),
        launched.directory,
        launched.proc,
    )
    # Dovecot reads the passwd-file at the first login, so the first batch needs no wait.
    server._add_users(USER_BATCH)
    return server


def stop_dovecot(server: DovecotServer) -> None:
    stop(server.proc)
    shutil.rmtree(server.directory, ignore_errors=True)


@dataclass
class PymapServer:
    """pymap's in-memory `dict` backend: one demo user, STARTTLS only; use `fresh_mailbox()` per test."""

    host: str
    port: int
    ca_file: str
    username: str
    password: str
    directory: Path
    proc: subprocess.Popen[bytes]
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fresh_mailbox(self) -> str:
        """A mailbox name no other test used (the dict backend has a single user)."""
        return f"t{next(self._counter)}-{secrets.token_hex(3)}"

    def params(self, **kw: object) -> ConnectionParams:
        args: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "tls": "starttls",
            "username": self.username,
            "password": self.password,
            "ca_file": self.ca_file,
            "name": "pymap",
            **kw,
        }
        return ConnectionParams(**args)  # type: ignore[arg-type]


def start_pymap() -> PymapServer:
    script = Path(sys.executable).parent / "pymap"
    if not script.exists():
        raise ServerUnavailable("pymap is not installed in this environment")
    directory = Path(tempfile.mkdtemp(prefix="mr-pm-"))
    cert, key = self_signed(directory / "ssl")
    port = free_port()
    log = directory / "pymap.log"
    # Demo credentials are pymap's documented defaults (`pymap dict --help`); no demo data: empty INBOX.
    cmd = [
        str(script),
        "--host",
        HOST,
        "--port",
        str(port),
        "--cert",
        str(cert),
        "--key",
        str(key),
        "dict",
        "--demo-user",
        "demouser",
        "--demo-password",
        "demopass",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, log)
    except BaseException:
        stop(proc)
        raise
    return PymapServer(HOST, port, str(cert), "demouser", "demopass", directory, proc)


def stop_pymap(server: PymapServer) -> None:
    stop(server.proc)
    shutil.rmtree(server.directory, ignore_errors=True)


def make_message(
    subject: str, body: str = "hello\r\n", *, sender: str = "a@example.com", extra: str = ""
) -> bytes:
    """A small RFC 5322 message; a non-ASCII subject goes out RFC 2047-encoded, as mailers send it."""
    from email.header import Header

    encoded = subject if subject.isascii() else Header(subject, "utf-8").encode()
    return (
        f"From: {sender}\r\nTo: b@example.com\r\nSubject: {encoded}\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@example.com>\r\n{extra}"
        f"Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()
