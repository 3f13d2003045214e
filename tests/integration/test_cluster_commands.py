"""`mailrules run` and `mailrules undo` beside daemons sharing a PostgreSQL state (issue 14).

The daemons hold the accounts' leases, not a lock of the state: a command claims the accounts it
acts on, the daemons hand them over in their next round, the command leases them and acts through
a fenced view, then releases them and the daemons take them back (state/pg_claims.py). A second
command on a claimed account, or an account a daemon does not hand over in time, exits 75.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mailrules.state.pg_claims import Claim
from mailrules.state.postgres import PostgresState
from tests.integration.postgres import PostgresServer
from tests.integration.servers import DovecotServer, make_message
from tests.integration.test_daemon import append, counts
from tests.integration.test_daemon_cluster import LEASE_SECONDS, Replica, owners, wait_for

pytestmark = pytest.mark.integration

COMMAND_RULES = 'rule "old" { when subject contains "old" then move to "Old" }\n'


def command(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailrules", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow  # about 30 s: two daemons, a run, an undo, a claim held, an account not handed over
def test_run_and_undo_take_the_accounts_from_the_daemons_and_give_them_back(
    dovecot: DovecotServer, postgres: PostgresServer, pg_dsn: str, tmp_path: Path
) -> None:
    db = pg_dsn.rsplit("/", 1)[1]
    users = {f"k{i}": dovecot.fresh_user() for i in range(3)}
    accounts = "".join(
        f'[accounts.{name}]\nhost = "127.0.0.1"\nport = {dovecot.imap_port}\ntls = "starttls"\n'
        f'ca_file = "{dovecot.ca_file}"\nusername = "{user}"\npassword = "{pw}"\n'
        for name, (user, pw) in users.items()
    )
    replicas = [Replica(tmp_path, f"r{i}", pg_dsn, accounts) for i in range(2)]
    # The commands' configuration: the same state and accounts, a rule the daemons do not have.
    (tmp_path / "cmd" / "rules.d").mkdir(parents=True)
    (tmp_path / "cmd" / "rules.d" / "10.rules").write_text(COMMAND_RULES)
    config = tmp_path / "cmd" / "mailrules.toml"
    config.write_text(
        f'rules = "rules.d"\nstate = "{pg_dsn}"\n[cluster]\nlease_seconds = {LEASE_SECONDS}\n' + accounts
    )
    filed = dict.fromkeys(users, 0)

    def deliver(names: list[str]) -> None:
        for name in names:
            append(dovecot, *users[name], [make_message(f"{name} file me")])
            filed[name] += 1

    def is_filed(names: list[str]) -> bool:
        return all(counts(dovecot, *users[n]).get("Filed", 0) == filed[n] for n in names)

    def daemons_hold_all() -> bool:
        held = owners(postgres, db)
        return len(held) == len(users) and all(o in ("r0", "r1") for o in held.values())

    for user, pw in users.values():
        append(dovecot, user, pw, [make_message(f"old {i}") for i in range(2)])
    try:
        for r in replicas:
            r.start()
        for r in replicas:
            wait_for(r.ready, 60, f"{r.name} to become ready", replicas)
        wait_for(daemons_hold_all, 60, "the daemons to share the accounts", replicas)

        # run: the daemons hand the accounts over, the run acts, the daemons take them back.
        done = command(config, "run")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "accounts handed over by the daemons" in done.stderr
        run_id = re.search(r"^run (\S+)", done.stdout, re.M)
        assert run_id is not None, done.stdout
        for user, pw in users.values():
            assert counts(dovecot, user, pw).get("Old") == 2
        with postgres.admin(db) as conn:
            acted = conn.execute(
                "SELECT DISTINCT account FROM journal WHERE run_id = %s AND outcome = 'ok'", (run_id[1],)
            ).fetchall()
        assert {a for (a,) in acted} == set(users)
        wait_for(daemons_hold_all, 60, "the daemons to take the accounts back", replicas)
        deliver(list(users))
        wait_for(lambda: is_filed(list(users)), 60, "the daemons to file again", replicas)

        # undo: the same, for the accounts the run touched.
        undone = command(config, "undo", run_id[1])
        assert undone.returncode == 0, undone.stdout + undone.stderr
        assert "6 change(s) undone" in undone.stdout
        for user, pw in users.values():
            c = counts(dovecot, user, pw)
            assert c.get("Old", 0) == 0 and c["INBOX"] == 2
        wait_for(daemons_hold_all, 60, "the daemons to take the accounts back after the undo", replicas)

        # A claim held (as a command in progress holds it): the daemons hand k0 over and leave it
        # alone while they go on with the others; another command on k0 is refused at once (75).
        state = PostgresState.open(pg_dsn, lease_seconds=LEASE_SECONDS)
        try:
            with Claim(state, ["k0"], lease_seconds=LEASE_SECONDS, command="test claim") as claim:
                claim.take(wait=60)
                assert owners(postgres, db)["k0"] == claim.name
                refused = command(config, "run", "--account", "k0")
                assert refused.returncode == 75, refused.stdout + refused.stderr
                assert "claimed by test claim" in refused.stderr
                deliver(["k0", "k1", "k2"])
                wait_for(lambda: is_filed(["k1", "k2"]), 60, "the other accounts' mail", replicas)
                assert counts(dovecot, *users["k0"]).get("Filed", 0) == filed["k0"] - 1  # not k0's
            wait_for(lambda: is_filed(["k0"]), 60, "k0 taken back and caught up", replicas)
        finally:
            state.close()

        # An account a daemon does not hand over (one paused, or of a release without claims,
        # here a lease written by hand): the command waits two leases, then exits 75 naming it.
        with postgres.admin(db) as conn:
            conn.execute(
                "UPDATE leases SET owner = 'ghost', token = token + 1, "
                "expires_at = clock_timestamp() + interval '1 hour' WHERE account = 'k2'"
            )
        stuck = command(config, "run", "--account", "k2")
        assert stuck.returncode == 75, stuck.stdout + stuck.stderr
        assert "did not hand over k2 (replica ghost)" in stuck.stderr
        with postgres.admin(db) as conn:
            conn.execute(
                "UPDATE leases SET owner = NULL, expires_at = clock_timestamp() WHERE account = 'k2'"
            )
        wait_for(daemons_hold_all, 60, "k2 back with the daemons", replicas)
        for r in replicas:
            assert r.stop(signal.SIGTERM) == 0, r.text()[-3000:]
    finally:
        for r in replicas:
            if r.proc is not None and r.proc.poll() is None:
                r.stop(signal.SIGTERM)
