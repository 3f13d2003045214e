"""One connection watches every mailbox of an account with NOTIFY (RFC 5465), where the server allows it.

The loop: connect, `NOTIFY SET STATUS` for the watched mailboxes (imap/notify.py); the STATUS
answers are compared with the checkpoints and only the mailboxes that changed are caught up (no
SELECT of the others); then IDLE (the same watchdog as the per-mailbox watchers: imap/idle.py
`Idler`, renewed every idle_renew_seconds, `Stalled` past idle_timeout_seconds). An unsolicited STATUS
names a mailbox that changed (MessageNew, MessageExpunge, FlagChange); EXISTS or FETCH FLAGS name
the selected one: each is processed by the per-mailbox watcher's own `catch_up` (daemon/watcher.py),
which is where the arrival rules (and the flag-change rules) run. A server without NOTIFY, or one
that refuses NOTIFY SET, makes `NotifyPlan` switch the account to IDLE per mailbox for the rest of
the daemon's life (logged, counted, and `mailrules doctor` says why). docs/operations.md, "Watching".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from mailrules.accounts import Account
from mailrules.config import AccountSettings
from mailrules.daemon.metrics import Metrics
from mailrules.daemon.notify_metrics import NotifyMetrics
from mailrules.daemon.watcher import RETRY_SECONDS, MailboxWatcher, MultiPoller, WatchContext
from mailrules.errors import ImapError
from mailrules.imap.commands import SelectInfo
from mailrules.imap.idle import Idler
from mailrules.imap.notify import (
    MailboxStatus,
    NotifyEvents,
    NotifyRefused,
    mailbox_key,
    mailbox_status,
    notify_events,
    notify_set,
    take_events,
)
from mailrules.imap.session import ImapSession
from mailrules.imap.store import ImapStore
from mailrules.state.interface import State

log = logging.getLogger(__name__)

#: The key of an account's NOTIFY watcher among the daemon's watchers (the others: a mailbox name,
#: or "*poll*").
NOTIFY_KEY = "*notify*"
#: Looks at one mailbox within one round of events, at most: EXISTS or FETCH heard right after a look
#: call for another (a message that came meanwhile), but our own STOREs' FETCH must not loop.
LOOKS_PER_ROUND = 3


class NotifyWatcher(MultiPoller):
    """Watches all of `mailboxes` of one account on one NOTIFY connection until `stop()`.

    A MultiPoller in that one connection serves many mailboxes (the same `watching`, `_down`, and
    `catch_up` per mailbox through `self.mailbox`); it listens instead of polling."""

    def __init__(
        self,
        account: Account,
        mailboxes: list[str],
        ctx: WatchContext,
        state: State | None = None,
        *,
        metrics: NotifyMetrics | None = None,
        refused: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(account, mailboxes, ctx, state)
        self.name = f"notify:{account.name}"
        self.metrics = metrics
        self._refused = refused
        #: whether the list was too long and `personal` was asked (events of others are ignored)
        self.personal = False

    def _session_loop(self) -> None:
        session = self._connect()
        store = ImapStore(session)
        # Server name (as STATUS writes it) -> the name the rules use.
        names = {mailbox_key(session.server_name(m)): m for m in self.mailboxes}
        try:
            statuses, self.personal = notify_set(session, list(names))
        except NotifyRefused as exc:
            session.logout()  # before the IDLE watchers log in: the budget holds at every moment
            self.session = None
            self._halt.set()
            if self._refused is not None:
                self._refused(self.account.name, exc.reason)
            return
        # The catch-up of a (re)connect: only the mailboxes whose STATUS differs from the checkpoint.
        due = [m for m in self.mailboxes if self._due(m, statuses.get(mailbox_key(session.server_name(m))))]
        log.info(
            "%s: NOTIFY watches %d mailboxes on one connection%s; %d changed since the last look",
            self.account.name,
            len(self.mailboxes),
            " (all personal mailboxes asked: the list is too long)" if self.personal else "",
            len(due),
        )
        self._look_all(session, store, due, names, time.monotonic(), fresh=True)
        for mailbox in self.mailboxes:
            if mailbox not in due:
                self.hooks.synced(self.account.name, mailbox)
            self.hooks.watcher_up(self.account.name, mailbox, True)
        self.up = self.attempted = True
        self.problem = None
        self.backoff.reset()
        self._listen(session, store, names)
        session.logout()
        self.session = None

    def _due(self, mailbox: str, status: MailboxStatus | None) -> bool:
        """Whether `mailbox` may hold mail (or flag changes) its checkpoint has not seen."""
        if status is None or status.uidvalidity is None or status.uidnext is None or self.retry.get(mailbox):
            return True
        cp = self.state.get_checkpoint(self.account.name, mailbox)
        if cp is None or cp.uidvalidity != status.uidvalidity or status.uidnext - 1 > cp.last_uid:
            return True
        if not self.flags.rules(mailbox):
            return False
        # `on flag change` rules read it (daemon/flagwatch.py): due when its HIGHESTMODSEQ moved past
        # the flag pass's mark (a STATUS without HIGHESTMODSEQ: no CONDSTORE here, so look anyway).
        mark = self.state.get_flag_mark(self.account.name, mailbox)
        return mark is None or status.highestmodseq is None or status.highestmodseq != mark.highestmodseq

    def _listen(self, session: ImapSession, store: ImapStore, names: Mapping[str, str]) -> None:
        idler = Idler(session, self.account.settings.idle_timeout_seconds)
        renew = self.account.settings.idle_renew_seconds
        while not self._halt.is_set():
            events = notify_events(idler.start())
            while not events and not self._halt.is_set():
                waited = time.monotonic() - idler.started_at
                if waited > renew or (self.retry and waited > RETRY_SECONDS):
                    break  # re-issue IDLE (RFC 2177 §3), or try refused messages again
                events.add(notify_events(idler.wait(1.0)))  # a stop is noticed within a second
            detected = time.monotonic()
            events.add(notify_events(idler.done()))
            if events.overflow:
                # RFC 5465 §5.8: events were lost; reconnecting catches every mailbox up by STATUS.
                raise ImapError(f"{self.account.name}: NOTIFICATIONOVERFLOW: resynchronising", "reconnect")
            due = self._named(session, events, names) + [m for m in self.mailboxes if self.retry.get(m)]
            if events and self.metrics is not None:
                self.metrics.event(self.account.name, len(events.mailboxes) + int(events.selected))
            if due:
                self._look_all(session, store, due, names, detected)
            else:
                for mailbox in self.mailboxes:  # a renewal without news: still in sync
                    self.hooks.synced(self.account.name, mailbox)

    def _named(self, session: ImapSession, events: NotifyEvents, names: Mapping[str, str]) -> list[str]:
        """The watched mailboxes `events` name (others: `personal` was asked, or not ours)."""
        out = [names[k] for k in sorted(events.mailboxes) if k in names]
        selected = session.selected
        if events.selected and selected is not None and selected.mailbox in self.mailboxes:
            out.append(selected.mailbox)
        return out

    def _look_all(
        self,
        session: ImapSession,
        store: ImapStore,
        mailboxes: Sequence[str],
        names: Mapping[str, str],
        detected: float,
        *,
        fresh: bool = False,
    ) -> None:
        """Catch up each of `mailboxes` in turn, and those that events name meanwhile (our own moves
        into a watched mailbox among them, as an IDLE watcher on it would see)."""
        queue = dict.fromkeys(mailboxes)
        looks: dict[str, int] = {}

        def heard(events: NotifyEvents) -> None:
            # A STATUS is news of a mailbox that is not selected. EXISTS or FETCH are the selected
            # one's: a message that came after catch_up's last SEARCH, or our own STOREs' FETCH, so
            # they make a look again, but not more than LOOKS_PER_ROUND in a round.
            queue.update(dict.fromkeys(names[k] for k in sorted(events.mailboxes) if k in names))
            box = session.selected.mailbox if session.selected is not None else ""
            if events.selected and box in names.values() and looks.get(box, 0) < LOOKS_PER_ROUND:
                queue[box] = None

        while queue:
            mailbox = next(iter(queue))
            del queue[mailbox]
            heard(take_events(session))  # read before a SELECT forgets them
            queue.pop(mailbox, None)
            left = session.selected  # the mailbox this look leaves, if it selects another
            self.mailbox = mailbox
            self.catch_up(session, store, detected, fresh=fresh and mailbox not in looks)
            looks[mailbox] = looks.get(mailbox, 0) + 1
            heard(take_events(session))
            if left is not None and left.mailbox != mailbox and left.mailbox in names.values():
                self._left(session, left, names, queue)
            if not queue:
                heard(take_events(session))  # nothing heard in the last answers is left behind IDLE

    def _left(
        self, session: ImapSession, left: SelectInfo, names: Mapping[str, str], queue: dict[str, None]
    ) -> None:
        """A mailbox was left for another: mail that reached it while it was selected was announced
        by an EXISTS that may have come with the other's SELECT (and been taken for the other's), and
        from now on only a STATUS announces its news. One STATUS tells: new UIDs past what its last
        look saw (its checkpoint, or UIDNEXT at its SELECT) put it back in the queue."""
        status, others = mailbox_status(session, session.server_name(left.mailbox))
        queue.update(dict.fromkeys(names[k] for k in sorted(others) if k in names))
        cp = self.state.get_checkpoint(self.account.name, left.mailbox)
        if status is None or status.uidnext is None or cp is None:
            return
        seen = max(cp.last_uid, (left.uidnext or 1) - 1)
        if status.uidvalidity != cp.uidvalidity or status.uidnext - 1 > seen:
            queue[left.mailbox] = None


class NotifyPlan:
    """Which accounts the daemon watches through one NOTIFY connection; starts those watchers and
    keeps the watching-connection gauge. An account whose server lacks or refuses NOTIFY is
    watched with IDLE per mailbox from then on (`refused`)."""

    def __init__(
        self,
        accounts: Mapping[str, Account],
        ctx: WatchContext,
        daemon_metrics: Metrics,
        resync: Callable[[], None],
    ) -> None:
        self.accounts = accounts
        self.ctx = ctx
        self.metrics = NotifyMetrics(daemon_metrics.registry, daemon_metrics._account)
        self._resync = resync
        #: account -> why NOTIFY is not used (the server's answer, or its capabilities)
        self.refused: dict[str, str] = {}
        self._boxes: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.metrics.init(accounts)

    def want(self, acct: AccountSettings, boxes: Sequence[str]) -> bool:
        """Whether `acct`'s `boxes` are watched on one NOTIFY connection (remembered for `start`)."""
        with self._lock:
            if acct.notify == "off" or acct.name in self.refused:
                return False
            self._boxes[acct.name] = list(boxes)
            return True

    def start(
        self,
        watchers: dict[tuple[str, str], MailboxWatcher],
        wanted: Mapping[tuple[str, str], AccountSettings],
        polled: Mapping[str, Sequence[str]],
        views: Mapping[str, State],
    ) -> None:
        """Start the NOTIFY watchers `wanted` names (restarted when their mailboxes changed), and
        count each account's watching connections by mode. The daemon's sync loop stops the
        watchers no longer wanted and starts the per-mailbox ones."""
        counts: dict[str, dict[str, int]] = {name: {} for name in self.accounts}
        for (name, key), _acct in wanted.items():
            mode = "notify" if key == NOTIFY_KEY else "idle"
            counts[name][mode] = counts[name].get(mode, 0) + 1
            if key != NOTIFY_KEY:
                continue
            boxes = self._boxes[name]
            current = watchers.get((name, key))
            if isinstance(current, NotifyWatcher) and current.mailboxes == boxes and current.is_alive():
                continue
            if current is not None:
                current.stop()
            w = NotifyWatcher(
                self.accounts[name], boxes, self.ctx, views[name], metrics=self.metrics, refused=self.refuse
            )
            watchers[(name, key)] = w
            w.start()
        for name in polled:
            counts[name]["poll"] = 1
        self.metrics.plan(counts)

    def refuse(self, account: str, reason: str) -> None:
        """`account`'s server lacks or refused NOTIFY: watch its mailboxes with IDLE from now on."""
        log.warning("%s: NOTIFY not used (%s); watching each mailbox with IDLE", account, reason)
        with self._lock:
            self.refused[account] = reason
        self.metrics.fallback(account)
        self._resync()
