"""Several `mailrules daemon` processes sharing one PostgreSQL state and one Dovecot's accounts (issue 14).

Each account is worked on by one replica at a time (its lease); mail arriving on every account is
filed exactly once and each forward sent exactly once; a replica killed by SIGKILL loses its
accounts when their leases run out and the others take them over and catch up from the
checkpoints; a replica stopped by SIGTERM releases its leases at once; one paused past its leases
loses them; PostgreSQL restarted under the replicas loses nothing. Leases last 3 s here; every wait
is for a state, with generous timeouts.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.helpers import http_get, metric_total
from tests.integration.postgres import PostgresServer
from tests.integration.servers import DovecotServer, make_message
from tests.integration.test_daemon import append, counts, free_port, sink  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

ACCOUNTS = 6
LEASE_SECONDS = 3
RULES = """
rule "filed" { when subject contains "file me" then move to "Filed" }
rule "forwarded" { when subject contains "forward me" then forward to "sink@example.org", move to "Sent on" }
"""


class Replica:
    """One daemon of the cluster: its config (the shared state, its own name and metrics port)."""

    def __init__(self, tmp: Path, name: str, dsn: str, accounts: str) -> None:
        self.name = name
        self.dir = tmp / name
        self.dir.mkdir()
        (self.dir / "rules.d").mkdir()
        (self.dir / "rules.d" / "10.rules").write_text(RULES)
        self.port = free_port()
        self.config = self.dir / "mailrules.toml"
        self.config.write_text(
            f'rules = "rules.d"\nstate = "{dsn}"\n'
            f'[cluster]\nreplica = "{name}"\nlease_seconds = {LEASE_SECONDS}\n'
            f'[metrics]\nlisten = "127.0.0.1:{self.port}"\n' + accounts
        )
        self.log = self.dir / "daemon.log"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailrules", "daemon", "--config", str(self.config)],
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
            text=True,
        )

    def ready(self) -> bool:
        try:
            return http_get(self.port, "/readyz", timeout=2)[0] == 200
        except OSError:
            return False

    def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def wait_for(cond: Callable[[], bool], timeout: float, what: str, replicas: list[Replica]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    logs = "\n".join(f"--- {r.name}:\n{r.text()[-3000:]}" for r in replicas)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def owners(postgres: PostgresServer, db: str) -> dict[str, str | None]:
    """account -> the replica holding an unexpired lease on it (None: free or expired)."""
    with postgres.admin(db) as conn:
        rows = conn.execute(
            "SELECT account, CASE WHEN expires_at > clock_timestamp() THEN owner END FROM leases"
        ).fetchall()
    return {str(a): o for a, o in rows}


def recorded_owners(postgres: PostgresServer, db: str) -> dict[str, str | None]:
    """account -> the owner column as written (a released lease has none; an expired one keeps it)."""
    with postgres.admin(db) as conn:
        return {str(a): o for a, o in conn.execute("SELECT account, owner FROM leases").fetchall()}


@pytest.mark.slow  # about 20 s: three daemons, two takeovers
def test_three_replicas_share_the_accounts_and_take_over_after_sigkill_and_sigterm(
    dovecot: DovecotServer,
    postgres: PostgresServer,
    pg_dsn: str,
    tmp_path: Path,
    sink: tuple[int, list[bytes]],  # noqa: F811 (the fixture imported above)
) -> None:
    db = pg_dsn.rsplit("/", 1)[1]
    smtp_port, sent = sink
    users = {f"a{i}": dovecot.fresh_user() for i in range(ACCOUNTS)}
    accounts = "".join(
        f'[accounts.{name}]\nhost = "127.0.0.1"\nport = {dovecot.imap_port}\ntls = "starttls"\n'
        f'ca_file = "{dovecot.ca_file}"\nusername = "{user}"\npassword = "{pw}"\n'
        f'[accounts.{name}.smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\ntls = "none"\n'
        'allow_insecure = true\nfrom = "me@example.com"\n'
        for name, (user, pw) in users.items()
    )
    replicas = [Replica(tmp_path, f"r{i}", pg_dsn, accounts) for i in range(3)]
    filed = {name: 0 for name in users}
    forwards: list[str] = []  # one per account and delivery, each to be sent exactly once

    def deliver(tag: str, each: int) -> None:
        for name, (user, pw) in users.items():
            token = f"{tag.replace(' ', '-')}-{name}"
            forwards.append(token)
            mail = [make_message(f"{tag} {i} file me") for i in range(each)]
            append(dovecot, user, pw, [*mail, make_message(f"{token} forward me")])
            filed[name] += each

    def all_filed() -> bool:
        per_account = len(forwards) // ACCOUNTS
        for name, (user, pw) in users.items():
            c = counts(dovecot, user, pw)
            if c.get("Filed", 0) != filed[name] or c.get("Sent on", 0) != per_account or c.get("INBOX", 0):
                return False
        return True

    def spread(live: list[Replica]) -> bool:
        held = owners(postgres, db)
        per = [sum(1 for o in held.values() if o == r.name) for r in live]
        return len(held) == ACCOUNTS and sum(per) == ACCOUNTS and max(per) - min(per) <= 1

    try:
        for r in replicas:
            r.start()
        for r in replicas:
            wait_for(r.ready, 60, f"{r.name} to become ready", replicas)
        wait_for(lambda: spread(replicas), 60, "a fair share among three", replicas)
        deliver("first", 3)
        wait_for(all_filed, 60, "every account's mail to be filed", replicas)

        # SIGKILL: r0's leases stay recorded until they run out; r1 and r2 take them over and
        # catch up on what arrived meanwhile, each message once.
        killed = replicas[0]
        theirs = {a for a, o in owners(postgres, db).items() if o == killed.name}
        assert theirs and killed.stop(signal.SIGKILL) == -signal.SIGKILL
        deliver("while dead", 2)
        wait_for(lambda: spread(replicas[1:]), 60, "r0's accounts to be taken over", replicas)
        wait_for(all_filed, 60, "the mail of r0's accounts to be caught up", replicas)

        # SIGTERM: r1 releases its leases before exiting (the rows have no owner at once, not
        # merely an expiry); r2 takes everything.
        stopped = replicas[1]
        assert stopped.stop(signal.SIGTERM) == 0, [r.text()[-3000:] for r in replicas]
        assert stopped.name not in recorded_owners(postgres, db).values()
        deliver("after sigterm", 2)
        wait_for(lambda: spread(replicas[2:]), 60, "r2 to own every account", replicas)
        wait_for(all_filed, 60, "everything filed by r2 alone", replicas)
        assert all_filed()
        assert len(sent) == len(forwards) == 3 * ACCOUNTS
        for token in forwards:  # each forward sent exactly once, whichever daemon owned the account
            assert sum(token.encode() in m for m in sent) == 1, token
        assert "owns 6 of 6 accounts" in http_get(replicas[2].port, "/readyz", timeout=2)[1]
    finally:
        for r in replicas:
            if r.proc is not None and r.proc.poll() is None:
                r.stop(signal.SIGTERM)


def test_a_scheduled_firing_acts_on_each_account_once_on_its_owner(
    dovecot: DovecotServer, pg_dsn: str, tmp_path: Path
) -> None:
    """Two daemons in-process on one PostgreSQL state fire the same schedule: each on the accounts
    it owns, so every account's mail is acted on once, by one run."""
    from mailrules.config import load_config
    from mailrules.daemon.service import Daemon

    users = {f"s{i}": dovecot.fresh_user() for i in range(4)}
    for user, pw in users.values():
        append(dovecot, user, pw, [make_message(f"old {i}") for i in range(3)])
    accounts = "".join(
        f'[accounts.{name}]\nhost = "127.0.0.1"\nport = {dovecot.imap_port}\ntls = "starttls"\n'
        f'ca_file = "{dovecot.ca_file}"\nusername = "{user}"\npassword = "{pw}"\n'
        for name, (user, pw) in users.items()
    )
    daemons = []
    for name in ("a", "b"):
        (tmp_path / name / "rules.d").mkdir(parents=True)
        (tmp_path / name / "rules.d" / "10.rules").write_text(
            'rule "nightly" every day at 03:00 { when subject contains "old" then move to "Old" }\n'
        )
        config = tmp_path / name / "mailrules.toml"
        config.write_text(
            f'rules = "rules.d"\nstate = "{pg_dsn}"\n[cluster]\nreplica = "{name}"\n'
            f'lease_seconds = {LEASE_SECONDS}\n[metrics]\nlisten = ""\n' + accounts
        )
        daemons.append(Daemon(load_config(config)))
    a, b = daemons
    try:
        for d in daemons:
            assert d.load_rules() and d.cluster.shared
            d.cluster.begin()  # the keeper's thread then shares the accounts out

        def shared_out() -> bool:
            return len(a.cluster.owned()) == len(b.cluster.owned()) == 2

        deadline = time.monotonic() + 30
        while not shared_out() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert shared_out(), (a.cluster.owned(), b.cluster.owned())
        owned = {"a": set(a.cluster.owned()), "b": set(b.cluster.owned())}
        a._run_scheduled([a.rules[0]])
        b._run_scheduled([b.rules[0]])
        for user, pw in users.values():
            c = counts(dovecot, user, pw)
            assert c.get("Old") == 3 and c["INBOX"] == 0
        later, first = a.state.runs(limit=2, trigger="schedule")  # newest first: b's, then a's
        assert {e.account for e in a.state.run_entries(first.run_id)} == owned["a"]
        assert {e.account for e in a.state.run_entries(later.run_id)} == owned["b"]
        assert len(a.state.run_entries(first.run_id)) == len(a.state.run_entries(later.run_id)) == 6
    finally:
        for d in daemons:
            d.cluster.shutdown()
            d.schedule.shutdown(wait=False)
            d.state.close()


@pytest.mark.slow  # about 20 s: a pause past the leases, a takeover, a rejoin
def test_a_replica_paused_past_its_leases_loses_them_and_acts_on_nothing_twice(
    dovecot: DovecotServer, postgres: PostgresServer, pg_dsn: str, tmp_path: Path
) -> None:
    """SIGSTOP of r0 for longer than its leases: r1 takes its accounts over and files what arrives;
    after SIGCONT r0 finds its leases lost (counted), stops those accounts, then takes a share again
    with new leases. Every message is journalled as moved exactly once."""
    db = pg_dsn.rsplit("/", 1)[1]
    users = {f"p{i}": dovecot.fresh_user() for i in range(4)}
    accounts = "".join(
        f'[accounts.{name}]\nhost = "127.0.0.1"\nport = {dovecot.imap_port}\ntls = "starttls"\n'
        f'ca_file = "{dovecot.ca_file}"\nusername = "{user}"\npassword = "{pw}"\n'
        for name, (user, pw) in users.items()
    )
    r0, r1 = replicas = [Replica(tmp_path, f"r{i}", pg_dsn, accounts) for i in range(2)]
    filed = {name: 0 for name in users}

    def deliver(tag: str, each: int) -> None:
        for name, (user, pw) in users.items():
            append(dovecot, user, pw, [make_message(f"{tag} {i} file me") for i in range(each)])
            filed[name] += each

    def all_filed() -> bool:
        now = {name: counts(dovecot, user, pw) for name, (user, pw) in users.items()}
        return all(c.get("Filed", 0) == filed[n] and c["INBOX"] == 0 for n, c in now.items())

    def shares(live: list[Replica], each: int) -> bool:
        held = list(owners(postgres, db).values())
        return all(held.count(r.name) == each for r in live)

    def losses() -> float:
        return metric_total(http_get(r0.port, "/metrics", timeout=2)[1], "mailrules_lease_losses_total")

    try:
        for r in replicas:
            r.start()
        for r in replicas:
            wait_for(r.ready, 60, f"{r.name} to become ready", replicas)
        wait_for(lambda: shares(replicas, 2), 60, "two accounts each", replicas)
        deliver("before", 1)
        wait_for(all_filed, 60, "the first mail to be filed", replicas)

        assert r0.proc is not None
        r0.proc.send_signal(signal.SIGSTOP)
        try:
            deliver("paused", 2)
            wait_for(lambda: shares([r1], 4), 60, "r1 to take r0's accounts over", replicas)
            wait_for(all_filed, 60, "the mail of the paused replica's accounts", replicas)
        finally:
            r0.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: losses() >= 2, 60, "r0 to count its lost leases", replicas)
        wait_for(lambda: shares(replicas, 2), 60, "r0 to take a share again", replicas)
        deliver("after", 1)
        wait_for(all_filed, 60, "the mail after the pause", replicas)

        with postgres.admin(db) as conn:
            twice = conn.execute(
                "SELECT account, message_id FROM journal WHERE action = 'move' AND outcome = 'ok' "
                "GROUP BY account, message_id HAVING count(*) > 1"
            ).fetchall()
            moved = conn.execute(
                "SELECT count(*) FROM journal WHERE action = 'move' AND outcome = 'ok'"
            ).fetchone()
        assert twice == []
        assert moved is not None and moved[0] == sum(filed.values()) == 16
        for r in replicas:
            assert r.stop(signal.SIGTERM) == 0, r.text()[-3000:]
    finally:
        for r in replicas:
            if r.proc is not None and r.proc.poll() is None:
                r.proc.send_signal(signal.SIGCONT)
                r.stop(signal.SIGTERM)


@pytest.mark.slow  # about 20 s: PostgreSQL down longer than the leases, then back
def test_postgresql_restarted_under_the_replicas(
    dovecot: DovecotServer, postgres: PostgresServer, pg_dsn: str, tmp_path: Path
) -> None:
    """PostgreSQL stops for longer than the leases while mail arrives, then starts again: the
    daemons keep running, take the accounts again (new leases) and file everything once."""
    db = pg_dsn.rsplit("/", 1)[1]
    users = {f"g{i}": dovecot.fresh_user() for i in range(4)}
    accounts = "".join(
        f'[accounts.{name}]\nhost = "127.0.0.1"\nport = {dovecot.imap_port}\ntls = "starttls"\n'
        f'ca_file = "{dovecot.ca_file}"\nusername = "{user}"\npassword = "{pw}"\n'
        for name, (user, pw) in users.items()
    )
    replicas = [Replica(tmp_path, f"r{i}", pg_dsn, accounts) for i in range(2)]
    filed = {name: 0 for name in users}

    def deliver(tag: str, each: int) -> None:
        for name, (user, pw) in users.items():
            append(dovecot, user, pw, [make_message(f"{tag} {i} file me") for i in range(each)])
            filed[name] += each

    def all_filed() -> bool:
        now = {name: counts(dovecot, user, pw) for name, (user, pw) in users.items()}
        return all(c.get("Filed", 0) == filed[n] and c["INBOX"] == 0 for n, c in now.items())

    def shared_out() -> bool:
        held = list(owners(postgres, db).values())
        return all(held.count(r.name) == 2 for r in replicas)

    try:
        for r in replicas:
            r.start()
        for r in replicas:
            wait_for(r.ready, 60, f"{r.name} to become ready", replicas)
        wait_for(shared_out, 60, "two accounts each", replicas)
        deliver("before", 1)
        wait_for(all_filed, 60, "the first mail to be filed", replicas)

        postgres.stop()
        try:
            deliver("while down", 2)
            time.sleep(2 * LEASE_SECONDS)  # an outage longer than the leases (not an assertion)
        finally:
            postgres.start()
        wait_for(all_filed, 90, "the mail that arrived during the outage", replicas)
        wait_for(shared_out, 60, "two accounts each again", replicas)
        deliver("after", 1)
        wait_for(all_filed, 60, "the mail after the outage", replicas)

        with postgres.admin(db) as conn:
            twice = conn.execute(
                "SELECT account, message_id FROM journal WHERE action = 'move' AND outcome = 'ok' "
                "GROUP BY account, message_id HAVING count(*) > 1"
            ).fetchall()
        assert twice == []
        for r in replicas:
            assert r.proc is not None and r.proc.poll() is None, r.text()[-3000:]
            assert r.stop(signal.SIGTERM) == 0, r.text()[-3000:]
    finally:
        if not postgres.running:
            postgres.start()
        for r in replicas:
            if r.proc is not None and r.proc.poll() is None:
                r.stop(signal.SIGTERM)
