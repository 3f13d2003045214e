"""The cluster bench's pieces: a private PostgreSQL with pg_stat_statements, replica processes, and
what is read from /proc and from the database while they run (bench/cluster_bench.py).

PostgreSQL is the integration tests' private cluster (`tests/integration/postgres.py`: initdb +
pg_ctl in a temporary directory, never the system one), restarted once with
`shared_preload_libraries = 'pg_stat_statements'`. Replicas are `mailrules daemon` processes with
the same accounts and rules, each its own `[cluster] replica` and metrics port, run from `tree`
(PYTHONPATH: a `git archive` of a commit, so edits made meanwhile in the work tree do not leak in).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.integration.helpers import http_get, metric_total  # noqa: E402
from tests.integration.postgres import PostgresServer, start_postgres, stop_postgres  # noqa: E402
from tests.integration.servers import free_port  # noqa: E402

__all__ = ["Database", "Replica", "proc_sample", "start_database", "stop_postgres"]

STATEMENTS = """
# Added by bench/_cluster.py: count every statement the replicas send.
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
pg_stat_statements.track_utility = on
max_connections = 300
"""


@dataclass
class Database:
    """The private cluster and the bench's database in it (owned by the `mailrules` role)."""

    server: PostgresServer
    name: str
    dsn: str

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """As the superuser over the private socket: the bench's own reads are not the replicas'
        (pg_stat_statements is filtered by the `mailrules` role)."""
        import psycopg

        with self.server.admin(self.name) as conn:
            try:
                return list(conn.execute(sql, params).fetchall())
            except psycopg.errors.UndefinedTable:
                return []  # the replicas have not migrated the schema yet

    def leases(self) -> dict[str, tuple[str | None, bool, float | None]]:
        """account -> (owner as recorded, whether the lease is unexpired, acquired_at as unix time)."""
        rows = self.query(
            "SELECT account, owner, expires_at > clock_timestamp(), extract(epoch FROM acquired_at) "
            "FROM leases"
        )
        return {str(a): (o, bool(live), None if t is None else float(t)) for a, o, live, t in rows}

    def holders(self) -> dict[str, str | None]:
        """account -> the replica holding an unexpired lease (None: free or expired)."""
        return {a: (o if live else None) for a, (o, live, _) in self.leases().items()}

    def moves(self, since: float) -> dict[tuple[str, str, int], float]:
        """{(account, mailbox, uid): unix time of the journal's ok move} journalled after `since`."""
        rows = self.query(
            "SELECT account, mailbox, uid, extract(epoch FROM at) FROM journal "
            "WHERE action = 'move' AND outcome = 'ok' AND at >= to_timestamp(%s)",
            (since,),
        )
        out: dict[tuple[str, str, int], float] = {}
        for account, mailbox, uid, at in rows:
            key = (str(account), str(mailbox), int(uid))
            out[key] = min(float(at), out.get(key, float(at)))
        return out

    def moved_twice(self) -> int:
        """Messages the journal records as moved (ok) more than once: 0 when nobody acted twice."""
        rows = self.query(
            "SELECT count(*) FROM (SELECT 1 FROM journal WHERE action = 'move' AND outcome = 'ok' "
            "GROUP BY account, mailbox, uidvalidity, uid HAVING count(*) > 1) AS twice"
        )
        return int(rows[0][0])

    def reset_statements(self) -> None:
        self.query("SELECT pg_stat_statements_reset()")

    def counters(self) -> tuple[int, int, int]:
        """(transactions committed + rolled back, statements the `mailrules` role ran, rows they
        returned or changed) so far. Transactions include the pool's check of each connection it
        hands out (an empty query, which pg_stat_statements does not count)."""
        xacts = self.query(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (self.name,)
        )
        calls = self.query(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(rows), 0) FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid JOIN pg_roles r ON r.oid = s.userid "
            "WHERE d.datname = %s AND r.rolname = %s",
            (self.name, self.server.user),
        )
        return int(xacts[0][0]), int(calls[0][0]), int(calls[0][1])

    def top_statements(self, limit: int = 8) -> list[tuple[int, str]]:
        """The `mailrules` role's statements by calls since the last reset: (calls, text shortened)."""
        rows = self.query(
            "SELECT calls, query FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "JOIN pg_roles r ON r.oid = s.userid WHERE d.datname = %s AND r.rolname = %s "
            "ORDER BY calls DESC LIMIT %s",
            (self.name, self.server.user, limit),
        )
        return [(int(c), " ".join(str(q).split())[:90]) for c, q in rows]

    def connections(self) -> dict[str, int]:
        """application_name -> sessions open now (the replicas name theirs `mailrules <replica>`)."""
        rows = self.query(
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s GROUP BY 1",
            (self.name,),
        )
        return {str(a): int(n) for a, n in rows}


def start_database() -> Database:
    """The private cluster, with pg_stat_statements, and a fresh database for the bench."""
    server = start_postgres(prefix="mr-clbench-pg-")
    try:
        with (server.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(STATEMENTS)
        server.restart()
        dsn = server.fresh_database()
        name = dsn.rsplit("/", 1)[1]
        with server.admin(name) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    except BaseException:
        stop_postgres(server)
        raise
    return Database(server, name, dsn)


class Replica:
    """One `mailrules daemon` of the cluster: its own directory, config, log and metrics port."""

    def __init__(
        self, work: Path, name: str, dsn: str, lease_seconds: float, accounts: str, rules: str
    ) -> None:
        self.name = name
        self.dir = work / name
        (self.dir / "rules.d").mkdir(parents=True)
        (self.dir / "rules.d" / "bench.rules").write_text(rules)
        self.port = free_port()
        self.config = self.dir / "mailrules.toml"
        self.config.write_text(
            f'rules = "rules.d"\nstate = "{dsn}"\n'
            f'[cluster]\nreplica = "{name}"\nlease_seconds = {lease_seconds:g}\n'
            f'[metrics]\nlisten = "127.0.0.1:{self.port}"\n' + accounts
        )
        self.log = self.dir / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, tree: Path, nofile: int) -> None:
        def limits() -> None:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = max(soft, nofile)
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailrules", "daemon", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                env=env,
                preexec_fn=limits,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> str:
        """/metrics, waited for as long as it takes (a replica with 1,500 watcher threads answers
        slowly: a shorter timeout only piles requests up in it)."""
        return http_get(self.port, "/metrics", timeout=300)[1] if self.alive else ""

    def metrics_seconds(self) -> float:
        """How long one /metrics takes to answer."""
        t0 = time.monotonic()
        self.metrics()
        return time.monotonic() - t0

    def connections(self, port: int) -> int:
        """Its established TCP connections to `port` (from /proc: nothing asked of the daemon)."""
        return _peers(self.pid).get(port, 0) if self.alive else 0

    def watchers_up(self) -> int:
        return int(metric_total(self.metrics(), "mailrules_watcher_up"))

    def lease_losses(self) -> int:
        """mailrules_lease_losses_total summed over its accounts (0 once the process is gone)."""
        return int(metric_total(self.metrics(), "mailrules_lease_losses_total"))

    def ready(self) -> bool:
        return self.alive and http_get(self.port, "/readyz", timeout=5)[0] == 200

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, grace: float = 60) -> int | None:
        """SIGTERM, then SIGKILL after `grace`: the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                return None
        return self.proc.returncode

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def wait_for(
    cond: Callable[[], bool], timeout: float, what: str, replicas: list[Replica], poll: float = 0.2
) -> float:
    """Poll `cond` until it holds -> time.time() at that moment; on a timeout, RuntimeError with the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return time.time()
        time.sleep(poll)
    logs = "\n".join(f"--- {r.name}:\n{r.tail()}" for r in replicas)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


# ---------------------------------------------------------------------------------------------------
# /proc: memory, CPU, and connections by peer port
# ---------------------------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    out = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def _mb(status: dict[str, str], key: str) -> float:
    try:
        return int(status[key].split()[0]) / 1024
    except (KeyError, ValueError, IndexError):
        return float("nan")


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peers(pid: int) -> dict[int, int]:
    """remote port -> this process's ESTABLISHED TCP sockets to it (loopback, IPv4 and IPv6)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    out: dict[int, int] = {}
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] == "01" and parts[9] in inodes:  # 01: ESTABLISHED
                    port = int(parts[2].rsplit(":", 1)[1], 16)
                    out[port] = out.get(port, 0) + 1
    return out


@dataclass
class ProcSample:
    rss_mb: float
    hwm_mb: float
    threads: int
    imap: int  # TCP connections to Dovecot's port
    pg: int  # TCP connections to PostgreSQL's port
    cpu: float  # seconds so far


def proc_sample(pid: int, imap_port: int, pg_port: int) -> ProcSample:
    st = _status(pid)
    peers = _peers(pid)
    return ProcSample(
        _mb(st, "VmRSS"),
        _mb(st, "VmHWM"),
        int(st.get("Threads", "0") or 0),
        peers.get(imap_port, 0),
        peers.get(pg_port, 0),
        cpu_seconds(pid),
    )
