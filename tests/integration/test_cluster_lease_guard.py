"""On Dovecot and a private PostgreSQL: a replica cut off from PostgreSQL in the middle of an
arrival batch (its lease not renewed) moves nothing once its lease's local deadline has passed
(daemon/lease_guard.py); the replica that takes the account over files every message, once.

In-process, so that the cut falls exactly between two action groups: the first replica's keeper
runs no round (no renewal reaches PostgreSQL), only its deadline checks, as daemon/cluster.py does
between rounds. Leases last 2 s; every wait is for a state, with generous bounds."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from mailrules.daemon.lease_guard import LeaseGuard
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, RunOptions
from mailrules.imap.session import ImapSession
from mailrules.imap.store import ImapStore
from mailrules.state.interface import Lease, LeaseLost, State
from mailrules.state.keeper import LeaseKeeper
from mailrules.state.leases import Leases
from mailrules.state.postgres import PostgresState
from tests.integration.servers import DovecotServer, make_message
from tests.integration.test_daemon import append, counts

pytestmark = pytest.mark.integration

LEASE_SECONDS = 2.0
RULES = """
rule "seen" { when subject contains "file me" then flag }
rule "filed" { when subject contains "file me" then move to "Filed" }
"""


def rules() -> tuple[A.Rule, ...]:
    rule_file, diags = parse_text(RULES, "t.rules")
    assert rule_file is not None and not diags, diags
    return rule_file.rules


def until(condition: Callable[[], bool], what: str, bound: float = 30.0) -> None:
    """Wait for `condition` (polled; the bound only ends a hung test, it is not a measured time)."""
    end = time.monotonic() + bound
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"never: {what}")
        time.sleep(0.02)


class PausingStore(ImapStore):
    """Its first flag STORE is followed by `pause()`: the replica stalls right there."""

    def __init__(self, session: ImapSession, pause: Callable[[], None]) -> None:
        super().__init__(session)
        self.pause = pause

    def store_flags(self, uids: Sequence[int], flags: Sequence[str], add: bool) -> None:
        super().store_flags(uids, flags, add)
        self.pause()


def run_pass(state: State, store: ImapStore, context: AccountContext) -> None:
    run_id = state.begin_run("daemon", False)
    Engine(RunOptions(dt.datetime.now(dt.UTC), dt.UTC, run_id), journal=state).process(
        store, context, "INBOX", rules()
    )


def test_a_batch_whose_lease_runs_out_midway_moves_nothing_and_the_next_owner_files_it(
    dovecot: DovecotServer, pg_dsn: str
) -> None:
    user, password = dovecot.fresh_user()
    append(dovecot, user, password, [make_message(f"m{i} file me") for i in range(3)])
    with PostgresState.open(pg_dsn, lease_seconds=LEASE_SECONDS, retry_seconds=10) as state:
        a = Leases.open(state.database, "a", LEASE_SECONDS)
        b = Leases.open(state.database, "b", LEASE_SECONDS)
        keeper = LeaseKeeper(a, ["acct"], start=lambda lease: None, stop=lambda name: None)
        halt = threading.Event()

        def deadline_checks() -> None:  # as daemon/cluster.py does between rounds
            while not halt.wait(0.05):
                keeper.expire()

        checks = threading.Thread(target=deadline_checks)
        try:
            keeper.begin()  # a takes the account; from here on no round: its renewals never arrive
            checks.start()
            lease = keeper.held["acct"]
            stops: list[str] = []
            guard = LeaseGuard(keeper, "acct", stopped=stops.append)
            with ImapSession.connect(dovecot.params(user, password)) as session:
                # after the flags, a stall until the keeper has given the account up
                store = PausingStore(session, lambda: until(lambda: "acct" not in keeper.held, "expired"))
                with pytest.raises(LeaseLost):
                    run_pass(state.fenced([lease]), store, AccountContext("acct", lease_check=guard))
            assert stops == ["acct"]
            assert counts(dovecot, user, password).get("Filed", 0) == 0  # nothing moved after the stall
            assert counts(dovecot, user, password)["INBOX"] == 3

            taken: list[Lease] = []

            def b_took_over() -> bool:  # once the lease ran out in the database
                if (got := b.acquire("acct")) is not None:
                    taken.append(got)
                return bool(taken)

            until(b_took_over, "b took over")
            with ImapSession.connect(dovecot.params(user, password)) as session:
                run_pass(state.fenced(taken), ImapStore(session), AccountContext("acct"))
            after = counts(dovecot, user, password)
            assert after["INBOX"] == 0 and after["Filed"] == 3
            moved = [
                str(e.message_id)
                for e in state.find(account="acct")
                if e.action == "move" and e.outcome == "ok"
            ]
            assert len(moved) == len(set(moved)) == 3  # each message moved once, by b
        finally:
            halt.set()
            if checks.is_alive():
                checks.join()
            a.close()
            b.close()
