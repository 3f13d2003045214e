"""Private Cyrus IMAP 3.6 servers for the integration tests: master, imapd and idled on loopback.

Debian's `cyrus-imapd` conflicts with `dovecot-imapd`, so scripts/install-system-deps.sh installs
`cyrus-common` (master, ctl_cyrusdb) and `sasl2-bin` (saslpasswd2) and unpacks `cyrus-imapd`
(imapd, idled) into $MAILRULES_CYRUS_ROOT (default /opt/mailrules-test/cyrus-imapd); a system-wide
cyrus-imapd works too. Each server lives in its own temporary directory (configuration, sasldb,
sockets, partition), runs as the `cyrus` user when the tests run as root (Cyrus refuses root), and
never touches /etc/imapd.conf or /var/lib/cyrus: `master` does not pass `-C` on to what it starts,
so every command line in cyrus.conf carries its own `-C` (imap-notes (d)).

A server is one namespace `CyrusVariant` (altnamespace × unixhierarchysep); users come from
`fresh_user()`, whose INBOX the admin creates over IMAP. Cyrus logs to syslog only (no /dev/log on
the test machines): when a server will not start, the error quotes master's own log (`-L`).
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailrules.imap.session import ConnectionParams, TlsMode
from tests.integration.servers import HOST, ServerUnavailable, free_port, self_signed, wait_for_port

CYRUS_ROOT_DEFAULT = "/opt/mailrules-test/cyrus-imapd"
SYSTEM_BIN = Path("/usr/lib/cyrus/bin")  # cyrus-common: master, ctl_cyrusdb; cyrus-imapd: imapd, idled
REALM = "mailrules-test"  # imapd.conf `servername`: the SASL realm of every user in the sasldb
ADMIN = "cyrusadmin"

IMAPD_CONF = """\
# Throwaway Cyrus IMAP 3.6 config (docs: /work/shared/imap-notes.md (d), docs/dev/cyrus.md).
# Written by tests/integration/cyrus.py; nothing here refers to the system's /etc or /var/lib/cyrus.
configdirectory: {dir}/config
defaultpartition: default
partition-default: {dir}/spool
proc_path: {dir}/run/proc
mboxname_lockpath: {dir}/run/lock
# imapd binds its IDLE client socket in {{configdirectory}}/socket, beside idled's
idlesocket: {dir}/config/socket/idle
notifysocket: {dir}/config/socket/notify
lmtpsocket: {dir}/config/socket/lmtp
servername: {realm}
syslog_prefix: mailrules-cyrus-{tag}
cyrus_user: {user}
cyrus_group: {group}
admins: {admin}
# loopback tests log in over plaintext too (tls = "none" with allow_insecure)
allowplaintext: yes
# tests log in with wrong passwords on purpose: no 3 s pause after each (imapd.conf(5))
failedloginpause: 0
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {dir}/sasldb2
tls_server_cert: {dir}/ssl/cert.pem
tls_server_key: {dir}/ssl/key.pem
altnamespace: {altnamespace}
unixhierarchysep: {unixhierarchysep}
specialusealways: 1
umask: 077
"""

CYRUS_CONF = """\
# Throwaway cyrus.conf: master passes no -C on, so each command line names the private imapd.conf.
START {{
  recover cmd="{sbin}/ctl_cyrusdb -C {conf} -r"
}}
SERVICES {{
  imap cmd="{bin}/imapd -C {conf}" listen="{host}:{port}" prefork=0
}}
DAEMON {{
  # push IDLE: imapd tells idled which mailbox it idles on, idled wakes it on a change
  idled cmd="{bin}/idled -C {conf}"
}}
"""


@dataclass(frozen=True)
class CyrusVariant:
    """One of Cyrus's four namespace settings (imapd.conf `altnamespace`, `unixhierarchysep`)."""

    altnamespace: bool = False
    unixhierarchysep: bool = False

    @property
    def separator(self) -> str:
        """The hierarchy separator every client sees: `/` with unixhierarchysep, else `.`."""
        return "/" if self.unixhierarchysep else "."

    @property
    def personal_prefix(self) -> str:
        """The personal namespace's prefix in NAMESPACE: `INBOX.` (or `INBOX/`), empty with altnamespace."""
        return "" if self.altnamespace else f"INBOX{self.separator}"

    def user_mailbox(self, user: str) -> str:
        """The admin's name for `user`'s INBOX (admins always see the `user.` hierarchy)."""
        return f"user{self.separator}{user}"

    @property
    def id(self) -> str:
        """A short name for test ids and directory prefixes: `std-dot`, `alt-slash`, ..."""
        return ("alt" if self.altnamespace else "std") + ("-slash" if self.unixhierarchysep else "-dot")


DEFAULT_VARIANT = CyrusVariant()
VARIANTS = tuple(CyrusVariant(alt, unix) for alt in (False, True) for unix in (False, True))


@dataclass
class CyrusServer:
    """A running private Cyrus: .host, .port, .variant, .admin, .users; `fresh_user()`: an empty INBOX."""

    host: str
    port: int
    variant: CyrusVariant
    ca_file: str
    directory: Path
    proc: subprocess.Popen[bytes]
    admin: tuple[str, str]
    users: dict[str, str] = field(default_factory=dict)
    _run_as: tuple[int, int] | None = None  # uid, gid of the server's processes when we are root
    _lock: threading.RLock = field(default_factory=threading.RLock)  # users and the admin connection
    _admin_conn: imaplib.IMAP4 | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def separator(self) -> str:
        return self.variant.separator

    def fresh_user(self) -> tuple[str, str]:
        """A new user with an empty INBOX (created by the admin over IMAP) -> (name, password)."""
        with self._lock:
            name = f"tester{len(self.users) + 1}"
            password = secrets.token_urlsafe(12)
            add_sasl_user(self.directory, name, password, self._run_as)
            mailbox = self.variant.user_mailbox(name)
            self.admin_do(f"CREATE {mailbox}", lambda conn: conn.create(mailbox))
            self.users[name] = password
            return name, password

    def params(
        self, user: str, password: str | None = None, tls: TlsMode = "none", **kw: object
    ) -> ConnectionParams:
        """How mailrules connects as `user` (password looked up when not given): plaintext by default
        (Cyrus on loopback; `allow_insecure` set), or STARTTLS with the server's own certificate."""
        args: dict[str, object] = {"name": f"cyrus-{self.variant.id}-{user}", **kw}
        if tls == "none":
            args.setdefault("allow_insecure", True)
        else:
            args.setdefault("ca_file", self.ca_file)
        secret = self.users[user] if password is None else password
        return ConnectionParams(self.host, self.port, tls, user, secret, **args)  # type: ignore[arg-type]

    def admin_do(self, what: str, call: Callable[[imaplib.IMAP4], tuple[str, Any]]) -> None:
        """Run `call` on the admin's connection (one for the server's life, reopened once if it
        dropped); anything but OK is a RuntimeError naming `what`. imaplib, not the code under test."""
        with self._lock:
            self._admin_do(what, call)

    def _admin_do(self, what: str, call: Callable[[imaplib.IMAP4], tuple[str, Any]]) -> None:
        for attempt in (1, 2):
            try:
                if self._admin_conn is None:
                    conn = imaplib.IMAP4(self.host, self.port, timeout=30)
                    conn.login(*self.admin)
                    self._admin_conn = conn
                typ, data = call(self._admin_conn)
            except (OSError, imaplib.IMAP4.abort):
                self._close_admin()
                if attempt == 2:
                    raise
                continue
            if typ != "OK":
                raise RuntimeError(f"cyrus admin: {what}: {typ} {data!r}")
            return

    def _close_admin(self) -> None:
        conn, self._admin_conn = self._admin_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.logout()

    def log_text(self) -> str:
        return _tail(self.directory / "master.log") + _tail(self.directory / "master.out")


def cyrus_binaries() -> dict[str, Path]:
    """master, ctl_cyrusdb (cyrus-common) and imapd, idled (the private unpack, else a system cyrus-imapd)."""
    # An explicit MAILRULES_CYRUS_ROOT is the only place looked at (a test pretends Cyrus is missing).
    explicit = os.environ.get("MAILRULES_CYRUS_ROOT")
    root = Path(explicit or CYRUS_ROOT_DEFAULT)
    places = [root / "usr/lib/cyrus/bin"] + ([] if explicit else [SYSTEM_BIN])
    found: dict[str, Path] = {}
    for name in ("master", "ctl_cyrusdb"):
        if not (SYSTEM_BIN / name).is_file():
            raise ServerUnavailable(f"Cyrus {name} not found in {SYSTEM_BIN} (Debian package `cyrus-common`)")
        found[name] = SYSTEM_BIN / name
    for name in ("imapd", "idled"):
        for where in places:
            if (where / name).is_file():
                found[name] = where / name
                break
        else:
            raise ServerUnavailable(
                f"Cyrus {name} not found in {root}/usr/lib/cyrus/bin (the `cyrus-imapd` package unpacked "
                "there by scripts/install-system-deps.sh; it cannot be installed beside dovecot-imapd)"
            )
    saslpasswd2 = shutil.which("saslpasswd2") or "/usr/sbin/saslpasswd2"
    if not Path(saslpasswd2).is_file():
        raise ServerUnavailable("saslpasswd2 not found (Debian package `sasl2-bin`)")
    found["saslpasswd2"] = Path(saslpasswd2)
    return found


def _identity() -> tuple[str, str, tuple[int, int] | None]:
    """(user, group) the server runs as, and their ids when we must switch to them (running as root)."""
    if os.geteuid() != 0:
        # Unprivileged: everything runs as us; `cyrus_user` tells Cyrus not to look for `cyrus`.
        return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name, None
    try:
        entry = pwd.getpwnam("cyrus")
    except KeyError:
        raise ServerUnavailable("no `cyrus` user (Debian package `cyrus-common` creates it)") from None
    return "cyrus", grp.getgrgid(entry.pw_gid).gr_name, (entry.pw_uid, entry.pw_gid)


def add_sasl_user(directory: Path, user: str, password: str, run_as: tuple[int, int] | None) -> None:
    """Add `user` to the server's sasldb (as the server's user, so the file stays readable to it)."""
    saslpasswd2 = shutil.which("saslpasswd2") or "/usr/sbin/saslpasswd2"
    ids: dict[str, Any] = {"user": run_as[0], "group": run_as[1], "extra_groups": []} if run_as else {}
    subprocess.run(
        [saslpasswd2, "-c", "-p", "-f", str(directory / "sasldb2"), "-u", REALM, user],
        input=password.encode(),
        check=True,
        capture_output=True,
        **ids,
    )


def launch_cyrus(variant: CyrusVariant = DEFAULT_VARIANT, *, prefix: str = "mr-cy-") -> CyrusServer:
    """Start a private Cyrus with `variant`'s namespace on a free loopback port; wait until it answers.

    Raises ServerUnavailable when a package is missing, RuntimeError when it does not come up.
    """
    binaries = cyrus_binaries()
    user, group, run_as = _identity()
    # Short path: the sockets under config/socket must fit sun_path (~108 bytes).
    directory = Path(tempfile.mkdtemp(prefix=f"{prefix}{variant.id}-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        for sub in ("config/socket", "spool", "run/proc", "run/lock"):
            (directory / sub).mkdir(parents=True)
        cert, _ = self_signed(directory / "ssl")
        port = free_port()
        conf = directory / "imapd.conf"
        conf.write_text(
            IMAPD_CONF.format(
                dir=directory,
                realm=REALM,
                tag=directory.name,
                user=user,
                group=group,
                admin=ADMIN,
                altnamespace="yes" if variant.altnamespace else "no",
                unixhierarchysep="yes" if variant.unixhierarchysep else "no",
            )
        )
        (directory / "cyrus.conf").write_text(
            CYRUS_CONF.format(
                sbin=binaries["ctl_cyrusdb"].parent,
                bin=binaries["imapd"].parent,
                conf=conf,
                host=HOST,
                port=port,
            )
        )
        if run_as is not None:
            for path in (directory, *directory.rglob("*")):
                os.chown(path, *run_as)
        admin = (ADMIN, secrets.token_urlsafe(12))
        add_sasl_user(directory, *admin, run_as)
        ids: dict[str, Any] = {"user": run_as[0], "group": run_as[1], "extra_groups": []} if run_as else {}
        with (directory / "master.out").open("ab") as out:
            # Its own process group: whatever master leaves behind can be found by it, and only it.
            proc = subprocess.Popen(
                [
                    str(binaries["master"]),
                    "-C",
                    str(conf),
                    "-M",
                    str(directory / "cyrus.conf"),
                    "-p",
                    str(directory / "run/master.pid"),
                    "-L",
                    str(directory / "master.log"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **ids,
            )
        wait_for_port(port, proc, directory / "master.log")
        server = CyrusServer(HOST, port, variant, str(cert), directory, proc, admin, _run_as=run_as)
        server.admin_do("login", lambda conn: conn.noop())  # sasldb, realm and `admins` agree
    except BaseException as exc:
        if proc is not None:
            _stop_group(proc)
        log = _tail(directory / "master.log") + _tail(directory / "master.out")
        shutil.rmtree(directory, ignore_errors=True)
        if isinstance(exc, (ServerUnavailable, KeyboardInterrupt)):
            raise
        raise RuntimeError(f"cyrus ({variant.id}) did not start: {exc}\n--- master log:\n{log}") from exc
    return server


def stop_cyrus(server: CyrusServer) -> None:
    """SIGTERM to master (it stops imapd and idled), SIGKILL after a grace period; remove the directory."""
    server._close_admin()
    _stop_group(server.proc)
    shutil.rmtree(server.directory, ignore_errors=True)


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    # master is the leader of its own process group (start_new_session), and imapd and idled are in it.
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)  # master stops its children and exits
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # master not reaped yet: the group is surely ours
            proc.wait(timeout=5)
    # A child that outlived master keeps the group id in use (the kernel never hands out a pid that
    # is a live group's id), so this reaches only what is left of this server.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


class CyrusFleet:
    """At most one server per variant, started on first use (~0.3 s each), all stopped by `close()`."""

    def __init__(self) -> None:
        self._servers: dict[CyrusVariant, CyrusServer] = {}
        self._lock = threading.Lock()

    def get(self, variant: CyrusVariant = DEFAULT_VARIANT) -> CyrusServer:
        """The server for `variant`; ServerUnavailable when Cyrus is not installed."""
        with self._lock:
            if variant not in self._servers:
                self._servers[variant] = launch_cyrus(variant)
            return self._servers[variant]

    def close(self) -> None:
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            stop_cyrus(server)


@contextlib.contextmanager
def running_cyrus(variant: CyrusVariant = DEFAULT_VARIANT) -> Iterator[CyrusServer]:
    """A Cyrus for the duration of a with-block."""
    server = launch_cyrus(variant)
    try:
        yield server
    finally:
        stop_cyrus(server)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return ""
