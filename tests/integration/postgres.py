"""A private PostgreSQL cluster for the integration tests: initdb + pg_ctl into a temporary directory.

Never the system cluster: Debian's `postgresql` package only lends its binaries
(/usr/lib/postgresql/<major>/bin). The cluster listens on 127.0.0.1 on a free port, its unix socket
lives inside its directory; as root it runs as the `postgres` system user (PostgreSQL refuses root).
Applications log in over TCP as `mailrules` with a password (SCRAM-SHA-256); the fixtures'
own administration (CREATE DATABASE) goes through the private socket, where `trust` is enough.
Why it looks this way: docs/dev/postgres-tests.md.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tests.integration.servers import HOST, ServerUnavailable, _tail, free_port

if TYPE_CHECKING:
    import psycopg

APP_USER = "mailrules"
SUPERUSER = "postgres"
BINARIES = ("initdb", "pg_ctl", "postgres")

# Appended to initdb's postgresql.conf. Throwaway data: nothing waits for the disk (fsync and
# full_page_writes off, wal_level minimal), yet a crash of PostgreSQL alone (kill()) loses nothing
# committed: the WAL is in the kernel's cache; only a crash of the machine would lose it, and the
# directory with it. synchronous_commit stays on: off, a kill() within ~200 ms of a COMMIT loses it
# (the WAL writer had not written it yet), and "PostgreSQL restarted -> nothing lost" tests would lie.
SETTINGS = """
# Written by start_postgres() in tests/integration/postgres.py: a throwaway test cluster.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
max_connections = 200
password_encryption = 'scram-sha-256'
fsync = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
jit = off
logging_collector = off
"""

# Replaces initdb's pg_hba.conf: a real password over TCP, trust only on the private socket
# (its directory is mode 0700, owned by the cluster's user).
HBA = """\
# TYPE  DATABASE  USER  ADDRESS        METHOD
local   all       all                  trust
host    all       all   127.0.0.1/32   scram-sha-256
"""


def _version(directory: Path) -> tuple[int, ...]:
    """(16,) for /usr/lib/postgresql/16/bin, (15,) for /usr/pgsql-15/bin."""
    return tuple(int(n) for n in re.findall(r"\d+", directory.parent.name))


def _newest_first(directories: Iterable[Path]) -> list[Path]:
    return sorted(directories, key=_version, reverse=True)


def postgres_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres.

    $MAILRULES_PG_BINDIR if set (a test of the fixtures points it nowhere), else where an `initdb`
    on PATH really lives, else the newest of Debian's /usr/lib/postgresql/<major>/bin (not on PATH
    after `apt-get install postgresql`), PGDG's /usr/pgsql-<major>/bin, a source build's
    /usr/local/pgsql/bin. Raises ServerUnavailable when none has all three.
    """
    override = os.environ.get("MAILRULES_PG_BINDIR")
    if override is not None:
        candidates = [Path(override)]
    else:
        candidates = []
        on_path = shutil.which("initdb")
        if on_path is not None:
            candidates.append(Path(on_path).resolve().parent)
        candidates += _newest_first(Path("/usr/lib/postgresql").glob("*/bin"))
        candidates += _newest_first(Path("/usr").glob("pgsql-*/bin"))
        candidates.append(Path("/usr/local/pgsql/bin"))
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in BINARIES):
            return directory
    raise ServerUnavailable("PostgreSQL's initdb and pg_ctl not found (Debian/Ubuntu package `postgresql`)")


def _child_env() -> dict[str, str]:
    # A PGDATA, PGPORT or PGHOST from the caller's shell must not steer pg_ctl to another cluster.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ServerUnavailable("psycopg is not installed (the `test` and `postgres` extras)") from None
    return psycopg


@dataclass
class PostgresServer:
    """A running private PostgreSQL: `dsn(db)` logs in over TCP as `user` with `password`;
    `fresh_database()` gives a new empty database; `stop()`, `start()`, `restart()`, `kill()`."""

    host: str
    port: int
    user: str
    password: str
    directory: Path
    bindir: Path
    owner: pwd.struct_passwd | None  # the system user the cluster runs as (tests run as root), else None
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "run"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs (first line of postmaster.pid)."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def dsn(self, dbname: str = "postgres") -> str:
        """postgresql://mailrules:PASSWORD@127.0.0.1:PORT/dbname, the form of `state =` in the config."""
        user, password = quote(self.user, safe=""), quote(self.password, safe="")
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{dbname}"

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        """The superuser over the private unix socket (trust): for what the tests themselves set up."""
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}"

    @contextlib.contextmanager
    def admin(self, dbname: str = "postgres") -> Iterator[psycopg.Connection[Any]]:
        """An autocommit superuser connection (CREATE DATABASE refuses to run inside a transaction)."""
        conn = _psycopg().connect(self.admin_conninfo(dbname), autocommit=True)
        try:
            yield conn
        finally:
            conn.close()

    def fresh_database(self) -> str:
        """A new, empty database owned by `user` -> its DSN (with the password).

        The databases stay until the cluster goes: dropping one would wait for every connection a
        test forgot to close.
        """
        from psycopg import sql

        name = f"t{next(self._counter)}_{secrets.token_hex(3)}"
        with self.admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(self.user))
            )
        return self.dsn(name)

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), *args]
        return run_as(self.owner, cmd, self.directory)

    @property
    def running(self) -> bool:
        return self._pg_ctl("status").returncode == 0

    def start(self) -> None:
        """Start the stopped cluster on the same port; returns once it accepts connections."""
        result = self._pg_ctl("-l", str(self.log_path), "-w", "-t", "60", "start")
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stdout}{result.stderr}\n{self.log_text()}")

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: `fast` ends every session and checkpoints (what an operator's restart does);
        `immediate` is kill()."""
        result = self._pg_ctl("-m", mode, "-w", "-t", "60", "stop")
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {result.stdout}{result.stderr}\n{self.log_text()}")

    def kill(self) -> None:
        """As abrupt as a crash: every process quits at once, no shutdown checkpoint; start() then
        runs crash recovery."""
        self.stop("immediate")

    def restart(self) -> None:
        """A restart under the clients: their connections are cut, the port stays."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        return _tail(self.log_path)


def run_as(owner: pwd.struct_passwd | None, cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `cmd` as `owner` (None: as we are), in `cwd`, with PG* variables removed from its environment."""
    # Popen's user/group/extra_groups do what `runuser -u postgres --` would, without a shell or
    # util-linux, and drop root's supplementary groups. cwd: `postgres` may not enter ours.
    as_owner: dict[str, Any] = {}
    if owner is not None:
        as_owner = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    return subprocess.run(
        cmd, cwd=cwd, env=_child_env(), capture_output=True, text=True, timeout=120, **as_owner
    )


def start_postgres(prefix: str = "mr-pg-") -> PostgresServer:
    """initdb a cluster in a new temporary directory, start it, add the `mailrules` login role.

    Raises ServerUnavailable without the binaries, psycopg or (as root) the `postgres` user;
    RuntimeError when it does not come up.
    """
    bindir = postgres_bindir()
    _psycopg()
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerUnavailable(
                "PostgreSQL refuses to run as root and there is no `postgres` system user "
                "(Debian/Ubuntu package `postgresql` creates it)"
            ) from None
    # Short path: the socket's path (run/.s.PGSQL.<port>) must fit sun_path (~108 bytes).
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    server = PostgresServer(HOST, free_port(), APP_USER, secrets.token_urlsafe(16), directory, bindir, owner)
    try:
        server.socket_dir.mkdir()
        if owner is not None:
            for path in (directory, server.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        initdb = run_as(
            owner,
            [
                str(bindir / "initdb"),
                "-D",
                str(server.data_dir),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            directory,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stdout}{initdb.stderr}")
        # Both files exist (initdb wrote them as the owner): writing into them keeps their owner.
        with (server.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(SETTINGS.format(port=server.port, socket_dir=server.socket_dir))
        with (server.data_dir / "pg_hba.conf").open("w") as hba:
            hba.write(HBA)
        server.start()
        from psycopg import sql

        with server.admin() as conn:
            # Not a superuser: what a deployment's role would be; each fresh database is its own.
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_USER), sql.Literal(server.password)
                )
            )
    except BaseException:
        stop_postgres(server)
        raise
    return server


def stop_postgres(server: PostgresServer) -> None:
    """Stop the cluster if it runs (fast, else immediate) and remove its directory."""
    if server.pid is not None:
        try:
            server.stop()
        except (RuntimeError, subprocess.TimeoutExpired):
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                server.stop("immediate")
    shutil.rmtree(server.directory, ignore_errors=True)
