"""Arrival watchers: one IDLE connection per watched mailbox, catch-up from the checkpoint, reconnects.

A watcher's loop: connect, SELECT, process what arrived since the checkpoint (catch-up), then
IDLE; on EXISTS, leave IDLE, `UID SEARCH UID last+1:*`, drop UIDs ≤ last (RFC 9051 §6.4.9: a
`n:*` range always includes the highest UID), run the arrival rules on exactly those UIDs, commit
the checkpoint, IDLE again. EOF, BYE, timeouts and resets mean: reconnect with capped, jittered
backoff, then catch up. Servers without IDLE are polled with NOOP every `poll_interval` seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailrules.accounts import Account, render_problem
from mailrules.bounds import DEFAULT_BOUNDS, Bounds
from mailrules.compile import keys as K
from mailrules.compile.serialize import serialize
from mailrules.daemon.flagwatch import FlagObserver, FlagWatch
from mailrules.dsl import ast as A
from mailrules.engine.core import Engine
from mailrules.engine.loops import LoopGuard
from mailrules.engine.ports import EngineObserver, RunOptions
from mailrules.errors import ImapError, MailrulesError, StateError
from mailrules.imap.idle import Idler, is_stall, news_heard
from mailrules.imap.session import ImapSession
from mailrules.imap.store import ImapStore
from mailrules.state.interface import LeaseLost, State
from mailrules.state.models import Checkpoint, JournalEntry

log = logging.getLogger(__name__)

#: New UIDs are processed (and checkpointed) in batches of at most this many.
BATCH = 500
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 300.0
#: A message whose action the server refused for now (RFC 5530 UNAVAILABLE, INUSE, LIMIT,
#: SERVERBUG) is processed again at the next look at its mailbox, or after this many seconds of
#: IDLE, at most RETRY_TIMES more times; then `mailrules run` is the way.
RETRY_SECONDS = 60.0
RETRY_TIMES = 3


class Backoff:
    """Capped exponential backoff with full jitter (AWS architecture blog's "full jitter")."""

    def __init__(self, first: float = BACKOFF_FIRST, cap: float = BACKOFF_MAX) -> None:
        self.first, self.cap, self.failures = first, cap, 0

    def next(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap, self.first * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0


@dataclass
class WatchContext:
    """What every watcher of the daemon shares."""

    state: State
    tz: dt.tzinfo
    rules: Callable[[], Sequence[A.Rule]]  # the current rule set (reload swaps it)
    lock_for: Callable[[str, str], threading.Lock]  # (account, mailbox) -> the mailbox's lock
    guard: LoopGuard | None = None  # the arrivals' loop guard (engine/loops.py; None: defaults)
    observer: EngineObserver | None = None
    on_entry: Callable[[JournalEntry], None] | None = None
    hooks: WatchHooks | None = None
    run_id: str = ""  # the daemon's run in the journal (one per daemon start)
    bounds: Bounds = DEFAULT_BOUNDS  # [limits] on one message's evaluation
    flag_observer: FlagObserver | None = None  # the flag passes' metrics (daemon/flag_metrics.py)


class WatchHooks:
    """Metrics callbacks; the default does nothing."""

    def connected(self, account: str, seconds: float) -> None: ...
    def watcher_up(self, account: str, mailbox: str, up: bool) -> None: ...
    def reconnect(self, account: str) -> None: ...
    def synced(self, account: str, mailbox: str) -> None: ...
    def arrival(self, account: str, seconds: float) -> None: ...
    def imap_command(self, account: str, command: str, seconds: float, ok: bool) -> None: ...
    def throttled(self, account: str, command: str, seconds: float) -> None: ...
    def state_error(self, account: str) -> None: ...
    def stalled(self, account: str) -> None: ...


class NamesRefused(ImapError):
    """The rules or the configuration name a mailbox this account's server cannot have
    (imap/names.py): the watcher acts on nothing and tries again after its backoff (a reload may
    have fixed the rules)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "permanent")


def arrival_rules(rules: Sequence[A.Rule], account: str, mailbox: str) -> list[A.Rule]:
    """The `on arrival` rules in scope for this account and mailbox, in order."""
    return [r for r in rules if isinstance(r.trigger, A.OnArrival) and r.applies_to(account, mailbox)]


class MailboxWatcher(threading.Thread):
    """Watches one mailbox of one account until `stop()`; survives every connection failure."""

    def __init__(self, account: Account, mailbox: str, ctx: WatchContext, state: State | None = None) -> None:
        super().__init__(name=f"watch:{account.name}:{mailbox}", daemon=True)
        self.account = account
        self.mailbox = mailbox
        self.ctx = ctx
        #: the state this watcher writes: among daemons sharing PostgreSQL, fenced by the account's
        #: lease (State.fenced), so that once the lease is lost nothing more is written
        self.state = ctx.state if state is None else state
        self.hooks = ctx.hooks or WatchHooks()
        self._halt = threading.Event()
        self.up = False
        self.attempted = False
        self.backoff = Backoff()
        self.session: ImapSession | None = None
        #: why the watcher does nothing though its server may be reachable (the state cannot be
        #: written, a name the server cannot have), for /readyz; None: connected, or connecting
        self.problem: str | None = None
        #: mailbox -> {uid: tries so far} of messages to process again (kept across reconnects)
        self.retry: dict[str, dict[int, int]] = {}
        self.flags = FlagWatch(account, ctx, self.state)  # `on flag change` (daemon/flagwatch.py)

    def stop(self) -> None:
        self._halt.set()

    @property
    def healthy(self) -> bool:
        """Connected and caught up, or retrying after a loss and not (yet) failing for long.

        Not before the first connection was tried: a daemon that has not yet reached its mailboxes
        is not ready."""
        return self.up or (self.attempted and self.backoff.failures < 5)

    # -- the loop -----------------------------------------------------------------------------------

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self._session_loop()
                self.backoff.reset()
            except ImapError as exc:
                self.attempted = True
                if is_stall(exc):  # the server went silent (docs/operations.md, "Silent connections")
                    self.hooks.stalled(self.account.name)
                self._down()
                self.account.session_ended(exc)  # an expired token is renewed before the next login
                self.problem = str(exc) if isinstance(exc, NamesRefused) else None
                delay = self.backoff.next()
                log.warning(
                    "watcher %s/%s: %s; reconnecting in %.1f s", self.account.name, self.mailbox, exc, delay
                )
                self.hooks.reconnect(self.account.name)
                self._halt.wait(delay)
            except LeaseLost as exc:
                # Another replica owns the account now and catches up from the checkpoint; the
                # lease keeper stops this watcher too (daemon/cluster.py).
                log.warning("watcher %s/%s: %s; stopping", self.account.name, self.mailbox, exc)
                break
            except StateError as exc:
                # The journal, an intent or the checkpoint cannot be written: nothing more is done
                # here until it can; the batch in hand keeps its checkpoint and comes back then.
                self.attempted = True
                self._down()
                self.problem = str(exc)
                delay = self.backoff.next()
                log.error(
                    "watcher %s/%s: %s; acting on nothing until the state can be written, next try in %.1f s",
                    self.account.name,
                    self.mailbox,
                    exc,
                    delay,
                )
                self.hooks.state_error(self.account.name)
                self._halt.wait(delay)
            except Exception:  # a bug must not end the watcher: log it loudly and retry
                self.attempted = True
                self._down()
                log.exception("watcher %s/%s crashed; restarting", self.account.name, self.mailbox)
                self._halt.wait(self.backoff.next())
        self._down()
        self.flags.close()

    def _down(self) -> None:
        if self.up:
            self.hooks.watcher_up(self.account.name, self.mailbox, False)
        self.up = False
        if self.session is not None:
            self.session.close()
            self.session = None

    def _connect(self) -> ImapSession:
        """A session for this watcher, its hooks set, the names its rules use checked."""
        started = time.monotonic()
        session = self.account.connect()
        self.session = session
        self.hooks.connected(self.account.name, time.monotonic() - started)
        name = self.account.name
        session.on_command = lambda cmd, s, ok: self.hooks.imap_command(name, cmd, s, ok)
        session.on_throttle = lambda cmd, held: self.hooks.throttled(name, cmd, held)
        rules = [r for m in self.watching for r in arrival_rules(self.ctx.rules(), name, m)]
        problems = self.account.name_problems(session.namespaces, rules)
        if problems:
            raise NamesRefused("; ".join(render_problem(d, name) for d in problems))
        return session

    @property
    def watching(self) -> list[str]:
        """The mailboxes this watcher looks at."""
        return [self.mailbox]

    def _session_loop(self) -> None:
        session = self._connect()
        store = ImapStore(session)
        self.catch_up(session, store, time.monotonic(), fresh=True)
        self.up = self.attempted = True
        self.problem = None
        self.hooks.watcher_up(self.account.name, self.mailbox, True)
        self.backoff.reset()
        if session.has("IDLE"):
            self._idle_loop(session, store)
        else:
            self._poll_loop(session, store)
        session.logout()
        self.session = None

    def _idle_loop(self, session: ImapSession, store: ImapStore) -> None:
        # Every wait is bounded (docs/operations.md, "Silent connections"): IDLE is ended after
        # idle_renew_seconds, and DONE's answer, or a line's end, waits idle_timeout_seconds at most;
        # past that the connection is declared stalled (imap/idle.py `Stalled`) and run() reconnects.
        idler = Idler(session, self.account.settings.idle_timeout_seconds)
        renew = self.account.settings.idle_renew_seconds
        while not self._halt.is_set():
            if news_heard(session)[0] is not None:
                # Mail announced with the answer to a command after catch_up's last SEARCH (a retry,
                # a first look): IDLE would not announce it again.
                self.catch_up(session, store, time.monotonic())
                continue
            pending = self.flags.news(idler.start(), self.mailbox)
            while not pending and not self._halt.is_set():
                if time.monotonic() - idler.started_at > renew:
                    break  # re-issue IDLE (RFC 2177 §3)
                if self.retry.get(self.mailbox) and time.monotonic() - idler.started_at > RETRY_SECONDS:
                    break
                # One-second slices: a stop request is noticed within a second.
                pending = self.flags.news(idler.wait(1.0), self.mailbox)
            detected = time.monotonic()
            pending = self.flags.news(idler.done(), self.mailbox) or pending
            if pending or self.retry.get(self.mailbox):
                self.catch_up(session, store, detected)
            else:
                # An IDLE renewed without news still proves the watcher is in sync: a connected
                # but stuck watcher is then the one whose last sync grows old.
                self.hooks.synced(self.account.name, self.mailbox)

    def _poll_loop(self, session: ImapSession, store: ImapStore) -> None:
        interval = self.account.settings.poll_interval
        while not self._halt.wait(interval):
            session.noop()  # untagged EXISTS arrive with it (RFC 9051 §6.1.2)
            self.catch_up(session, store, time.monotonic())

    # -- catch-up and checkpoints --------------------------------------------------------------------

    def catch_up(self, session: ImapSession, store: ImapStore, detected: float, fresh: bool = False) -> int:
        """Process every message that arrived since the checkpoint; return how many.

        `fresh`: the first catch-up on a new connection (always SELECTs, for UIDNEXT)."""
        with self.ctx.lock_for(self.account.name, self.mailbox):
            waiting = set(self.retry.get(self.mailbox, {}))
            selected = session.selected
            if fresh or selected is None or selected.mailbox != self.mailbox:
                info = session.select(self.mailbox)
                news_heard(session)  # what SELECT counted, its UIDNEXT and the SEARCHes below cover
            else:
                # Still selected since the last catch-up on this connection: UIDVALIDITY cannot
                # change under a selected mailbox (RFC 9051 §2.3.1.1), so no SELECT round trip.
                info = selected
            state = self.state
            self.flags.look(session, store, self.mailbox, info)  # what someone else's flag changes call for
            if fresh and self.mailbox not in self.retry:
                self._load_retries(info.uidvalidity)
            cp = state.get_checkpoint(self.account.name, self.mailbox)
            now = dt.datetime.now(dt.UTC)
            if cp is None:
                # First watch of this mailbox: what is there is left alone (`mailrules run`
                # back-fills); from now on every arrival is processed.
                last = (info.uidnext - 1) if info.uidnext else max(self._search_from(session, 1), default=0)
                state.set_checkpoint(
                    self.account.name, self.mailbox, Checkpoint(info.uidvalidity, last, None, now)
                )
                log.info(
                    "watching %s/%s from UID %d on (existing mail is left to `mailrules run`)",
                    self.account.name,
                    self.mailbox,
                    last,
                )
                self.hooks.synced(self.account.name, self.mailbox)
                return 0
            if cp.uidvalidity != info.uidvalidity:
                self.retry.pop(self.mailbox, None)  # those UIDs name nothing any more
                new = self._after_uidvalidity_change(session, cp)
                if not new:
                    last = (
                        (info.uidnext - 1) if info.uidnext else max(self._search_from(session, 1), default=0)
                    )
                    state.set_checkpoint(
                        self.account.name, self.mailbox, Checkpoint(info.uidvalidity, last, None, now)
                    )
            else:
                new = self._search_new(session, cp.last_uid)
            done = 0
            while new:
                for i in range(0, len(new), BATCH):
                    batch = new[i : i + BATCH]
                    self._process(store, batch, info.uidvalidity)
                    done += len(batch)
                # Mail that arrived while this batch was processed was announced (EXISTS) in the
                # answers to our own commands, not to a later IDLE: look again until none is new.
                new = self._search_new(session, max(new))
            if done:
                self.hooks.arrival(self.account.name, time.monotonic() - detected)
            # Only what was refused before this look: one refused just now waits its turn.
            again = sorted(u for u in self.retry.get(self.mailbox, {}) if u in waiting)
            if again:
                log.info("%s/%s: trying %d message(s) again", self.account.name, self.mailbox, len(again))
                self._process(store, again, info.uidvalidity, checkpoint=False)
            self.hooks.synced(self.account.name, self.mailbox)
            return done

    def _search_new(self, session: ImapSession, last: int) -> list[int]:
        """The UIDs past `last`. A SEARCH sees the mailbox as of the server's last sync (Dovecot syncs
        at each command's end): mail announced by an EXISTS with the SEARCH's own answer is not in
        its result, and IDLE will not announce it again, so search again; until an answer brings
        no new count (a server that repeats an unchanged EXISTS costs one SEARCH more)."""
        news_heard(session)  # what the answers so far announced, this SEARCH sees
        count: int | None = None
        while True:
            new = [u for u in self._search_from(session, last + 1) if u > last]
            heard, expunged = news_heard(session)
            if new or heard is None or (heard == count and not expunged):
                return new
            count = heard

    def _search_from(self, session: ImapSession, first: int) -> list[int]:
        return session.search(serialize(K.UidFrom(first)))

    def _after_uidvalidity_change(self, session: ImapSession, cp: Checkpoint) -> list[int]:
        """UIDVALIDITY changed: the stored UIDs mean nothing (RFC 9051 §2.3.1.1).

        Rather than reprocess the whole mailbox, process what was received on or after the day
        of the last checkpoint (SINCE is by day: a few already-seen messages of that day may run
        again; moves and flags are harmless to repeat, forwards stay exactly-once by the journal).
        """
        since = (cp.updated_at.astimezone(dt.UTC) - dt.timedelta(days=1)).date()
        log.warning(
            "%s/%s: UIDVALIDITY changed from %d; processing mail received since %s only",
            self.account.name,
            self.mailbox,
            cp.uidvalidity,
            since,
        )
        return session.search(serialize(K.Date("SINCE", since)))

    def _process(
        self, store: ImapStore, uids: list[int], uidvalidity: int, *, checkpoint: bool = True
    ) -> None:
        rules = arrival_rules(self.ctx.rules(), self.account.name, self.mailbox)
        before = dict(self.retry.get(self.mailbox, {}))
        if rules:
            now = dt.datetime.now(dt.UTC)
            options = RunOptions(now, self.ctx.tz, self.ctx.run_id, bounds=self.ctx.bounds)
            engine = Engine(
                options, journal=self.state, on_entry=self.ctx.on_entry, observer=self.ctx.observer
            )
            try:
                report = engine.process(
                    store,
                    self.account.context(self.ctx.guard),
                    self.mailbox,
                    rules,
                    uids,
                    uidvalidity=uidvalidity,
                )
            except StateError:
                raise  # the checkpoint stays: the journal cannot say what was done (run() waits)
            except MailrulesError as exc:
                if isinstance(exc, ImapError) and exc.ends_session:
                    raise  # the checkpoint stays: these UIDs are processed again after reconnecting
                log.error("%s/%s: batch of %d failed: %s", self.account.name, self.mailbox, len(uids), exc)
                # A message being tried again uses up a try here too: no endless round every minute.
                waiting = self.retry.get(self.mailbox, {})
                self._note_retries(uids, [u for u in uids if u in waiting])
            else:
                self._note_retries(uids, report.retry)
        else:
            self.retry.pop(self.mailbox, None)  # no arrival rule left for this mailbox (a reload)
        if self.retry.get(self.mailbox, {}) != before:
            self._save_retries(uidvalidity)
        if not checkpoint:
            return
        # Committed after the actions: a crash before this line reprocesses the batch, which the
        # journal makes safe for forwards; moved messages are simply no longer there.
        self.state.set_checkpoint(
            self.account.name,
            self.mailbox,
            Checkpoint(uidvalidity, max(uids), None, dt.datetime.now(dt.UTC)),
        )

    def _load_retries(self, uidvalidity: int) -> None:
        """The retry counts a previous owner of the account left in the state (a takeover)."""
        get = getattr(self.state, "get_retries", None)
        tries = get(self.account.name, self.mailbox, uidvalidity) if get is not None else {}
        if tries:
            self.retry[self.mailbox] = dict(tries)

    def _save_retries(self, uidvalidity: int) -> None:
        """Keep the retry counts in the state, for whoever owns the account next."""
        put = getattr(self.state, "set_retries", None)
        if put is not None:
            put(self.account.name, self.mailbox, uidvalidity, self.retry.get(self.mailbox, {}))

    def _note_retries(self, processed: list[int], refused: list[int]) -> None:
        """Remember what the server refused for now; forget what went through or was given up."""
        tries = self.retry.setdefault(self.mailbox, {})
        for uid in set(processed) - set(refused):
            tries.pop(uid, None)
        for uid in refused:
            tries[uid] = tries.get(uid, 0) + 1
            if tries[uid] > RETRY_TIMES:
                del tries[uid]
                log.error(
                    "%s/%s: uid %d: refused %d times; given up (`mailrules run` applies the rules again)",
                    self.account.name,
                    self.mailbox,
                    uid,
                    RETRY_TIMES + 1,
                )
        if not tries:
            del self.retry[self.mailbox]


class MultiPoller(MailboxWatcher):
    """Mailboxes past the connection budget: one connection catches each up in turn, every
    `poll_interval` seconds (SELECT + `UID SEARCH UID last+1:*`; no IDLE, which watches only the
    selected mailbox)."""

    def __init__(
        self, account: Account, mailboxes: list[str], ctx: WatchContext, state: State | None = None
    ) -> None:
        super().__init__(account, mailboxes[0], ctx, state)
        self.name = f"poll:{account.name}"
        self.mailboxes = list(mailboxes)

    @property
    def watching(self) -> list[str]:
        return list(self.mailboxes)

    def _session_loop(self) -> None:
        session = self._connect()
        store = ImapStore(session)
        first = True
        while first or not self._halt.wait(self.account.settings.poll_interval):
            for mailbox in self.mailboxes:
                self.mailbox = mailbox
                self.catch_up(session, store, time.monotonic())
                if first:
                    self.hooks.watcher_up(self.account.name, mailbox, True)
            if first:
                self.up = self.attempted = True
                self.problem = None
                self.backoff.reset()
            first = False
        session.logout()
        self.session = None

    def _down(self) -> None:
        if self.up:
            for mailbox in self.mailboxes:
                self.hooks.watcher_up(self.account.name, mailbox, False)
        self.up = False
        if self.session is not None:
            self.session.close()
            self.session = None
