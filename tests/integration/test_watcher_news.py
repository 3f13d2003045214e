"""On Dovecot: a message delivered between a batch's last action and catch_up's last SEARCH is
processed before the watcher IDLEs. Dovecot syncs a mailbox at the end of a command, so that SEARCH
does not see the message, its answer announces it (`* n EXISTS` after the result), and IDLE does not
announce it again: before the fix it waited for the IDLE renewal (idle_renew_seconds, 9 min by
default; bench/cluster_bench.py in IDLE mode). The delivery is made inside the checkpoint write that
follows the batch's MOVE, so it always falls in that window. The scripted twin:
tests/unit/test_watcher_news.py."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator

import pytest

from mailrules.accounts import Account
from mailrules.config import AccountSettings, Secret
from mailrules.daemon.watcher import MailboxWatcher, WatchContext, WatchHooks
from mailrules.dsl.parser import parse_text
from mailrules.imap.session import ImapSession
from mailrules.state.models import Checkpoint
from mailrules.state.store import StateStore
from tests.integration.servers import DovecotServer, make_message

pytestmark = pytest.mark.integration

#: A give-up point only (no timed assert): the watcher's first look is over in well under a second.
GENEROUS = 60.0
SENDER = "alerts@match.example.org"


class DeliveringState(StateStore):
    """Calls `deliver` (message B's delivery) right after message A's checkpoint is written, once."""

    deliver: Callable[[], object] | None = None
    delivered = False

    def set_checkpoint(self, account: str, mailbox: str, cp: Checkpoint) -> None:
        super().set_checkpoint(account, mailbox, cp)
        if cp.last_uid == 1 and self.deliver is not None and not self.delivered:
            self.delivered = True
            self.deliver()


class Looks(WatchHooks):
    """When the watcher is up, and the checkpoint each time a look ends after B's delivery."""

    def __init__(self, state: DeliveringState) -> None:
        self.state = state
        self.up = threading.Event()
        self.after_delivery: list[int] = []
        self.looked = threading.Event()

    def watcher_up(self, account: str, mailbox: str, up: bool) -> None:
        if up:
            self.up.set()

    def synced(self, account: str, mailbox: str) -> None:
        if self.state.delivered:
            cp = self.state.get_checkpoint(account, mailbox)
            self.after_delivery.append(cp.last_uid if cp is not None else -1)
            self.looked.set()


@pytest.fixture
def state() -> Iterator[DeliveringState]:
    s = DeliveringState.open(":memory:")
    assert isinstance(s, DeliveringState)
    yield s
    s.close()


def test_mail_delivered_before_the_last_search_is_processed_before_idle(
    dovecot: DovecotServer, state: DeliveringState
) -> None:
    user, password = dovecot.fresh_user()
    params = dovecot.params(user, password)
    rule_file, diags = parse_text(
        f'rule "r" {{ when from contains "{SENDER}" then move to "Done" }}', "t.rules"
    )
    assert rule_file is not None and not diags
    rules = rule_file.rules
    hooks = Looks(state)
    ctx = WatchContext(
        state=state,
        tz=dt.UTC,
        rules=lambda: rules,
        lock_for=lambda a, m: threading.Lock(),
        hooks=hooks,
        run_id=state.begin_run("daemon", False),
    )
    account = Account(
        AccountSettings("a", dovecot.host, params.port, "starttls", user, Secret(password)),
        connect=lambda _settings: ImapSession.connect(params),
    )
    watcher = MailboxWatcher(account, "INBOX", ctx)
    with ImapSession.connect(params) as harness:
        harness.create("Done")
        watcher.start()
        try:
            assert hooks.up.wait(GENEROUS), "the watcher never came up"
            state.deliver = lambda: harness.append_many("INBOX", [make_message("B", sender=SENDER)])
            harness.append_many("INBOX", [make_message("A", sender=SENDER)])
            assert hooks.looked.wait(GENEROUS), "no look ended after B's delivery"
            # The look that filed A, during which B came, files B too: no IDLE event is waited for.
            assert hooks.after_delivery[0] == 2
        finally:
            watcher.stop()
            watcher.join(10)
