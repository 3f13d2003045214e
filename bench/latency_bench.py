"""Benchmark: reaction time from APPEND to action complete, mailrules daemon vs imapfilter vs the server.

    .venv/bin/python bench/latency_bench.py                 # 200 messages per tool (~5 min)
    .venv/bin/python bench/latency_bench.py --quick         # 40 messages per tool
    .venv/bin/python bench/latency_bench.py --messages 500 --keep

One private Dovecot 2.3 on loopback, two users with the same 20 arrival rules (rules 1-19 match
other senders; rule 20 matches and moves the message to `Dest`):

* user `mr`: `mailrules daemon` (a subprocess, STARTTLS with certificate checks, as deployed);
* user `if`: imapfilter, a generated Lua config that loops `enter_idle()` then the 20 rules.

Messages are sent one at a time, alternating between the two users, so that each reaction is
measured alone: a message is appended only once the previous one (to either user) has been acted
on, its follow-up EXPUNGE notification has gone out, and a random pause of `--pause` ms has passed.

Clocks (all `time.time()` on this host; the daemon's journal uses the same wall clock):

* T0      the appender's APPEND has returned (its tagged OK is read; the message is committed);
* notify  a bare imaplib connection per user, IDLE on INBOX, reads `* n EXISTS`: the server's
          own IDLE notification time (reference a). Dovecot 2.3 delays every mailbox-change
          notification by NOTIFY_DELAY_MSECS = 500, compiled in (src/lib-storage/mailbox-watch.c);
          no setting changes it (imap_idle_notify_interval is the "* OK Still here" keepalive,
          mailbox_idle_check_interval the fallback poll when inotify is unavailable);
* done    a separate connection per user sends `STATUS Dest (MESSAGES)` every 5 ms from T0 until
          the count goes up: the same method for both tools (resolution: 5 ms + one STATUS).
          For mailrules the journal's `at` of the move is reported beside it (exact, no polling).

Overhead = done - notify of the same message (what the tool adds above the server's own delay).
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_PY = Path(sys.executable)

# ---------------------------------------------------------------------------------------------------
# A private Dovecot (also used by scale_bench.py): bench/_dovecot.py's, itself the integration tests'
# ---------------------------------------------------------------------------------------------------

import _dovecot  # noqa: E402
from _dovecot import HOST, autocreate_mailboxes, free_port, stop_process  # noqa: E402
from _dovecot import Dovecot as Server  # noqa: E402

from tests.integration.helpers import http_get, metric_total  # noqa: E402

#: The uid (and gid) of the benchmark Dovecot's mail processes when run as root: unused by anyone else.
MAIL_UID = 50000 + os.getpid() % 10000


def start_server(
    users: list[str],
    autocreate: tuple[str, ...],
    *,
    extra: str = "",
    login_extra: str = "",
    rawlog_dir: Path | None = None,
) -> Server:
    """Dovecot with `users` (passwd-file written before start) and `autocreate` mailboxes for all.

    As root, mail processes run as MAIL_UID, not `nobody`: inotify instances are limited per uid
    (fs.inotify.max_user_instances, 128 here) and every other Dovecot on the host runs mail as
    nobody; past the limit Dovecot stops using inotify and IDLE polls every 30 s instead.
    """
    return _dovecot.start(
        users,
        prefix="mr-lat-",
        mailboxes=autocreate_mailboxes(autocreate),
        rawlog_dir=rawlog_dir,
        mail_owner=(str(MAIL_UID), str(MAIL_UID)),
        extra=extra,
        login_extra=login_extra,
    )


def login(server: Server, user: str) -> imaplib.IMAP4:
    """A harness connection (plaintext on loopback: no TLS cost on the measuring side)."""
    imap = imaplib.IMAP4(HOST, server.port, timeout=30)
    imap.login(user, server.users[user])
    return imap


@contextlib.contextmanager
def interrupts_as_keyboard() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP unwind as KeyboardInterrupt, so every `finally` cleans up (SIGINT
    too when inherited as ignored, as by a `cmd &` in a script)."""

    def raise_ki(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, raise_ki) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def ms(x: float) -> str:
    return "n/a" if x != x else f"{x * 1000:.1f}"


def message(sender: str, subject: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: me@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@bench.example>\r\n"
        "Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
    ).encode()


APPENDUID = re.compile(rb"APPENDUID (\d+) (\d+)")


def append(imap: imaplib.IMAP4, mailbox: str, data: bytes) -> tuple[float, int]:
    """APPEND; (T0 = the moment the tagged OK was read, the new UID)."""
    typ, resp = imap.append(mailbox, None, None, data)
    t0 = time.time()
    if typ != "OK":
        raise RuntimeError(f"APPEND failed: {typ} {resp!r}")
    m = APPENDUID.search(b" ".join(r for r in resp if isinstance(r, bytes)))
    return t0, int(m.group(2)) if m else 0


# ---------------------------------------------------------------------------------------------------
# Observers
# ---------------------------------------------------------------------------------------------------


@dataclass
class IdleObserver:
    """A bare connection IDLE on one mailbox; timestamps every `* n EXISTS` / `* n EXPUNGE`."""

    server: Server
    user: str
    mailbox: str = "INBOX"
    events: list[tuple[float, str, int]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    exists: int = 0

    def start(self) -> None:
        self.imap = login(self.server, self.user)
        _typ, data = self.imap.select(self.mailbox)
        self.exists = int(data[0] or 0)
        self.imap.send(b"I1 IDLE\r\n")
        line = self.imap.readline()
        if not line.startswith(b"+"):
            raise RuntimeError(f"IDLE refused: {line!r}")
        self.imap.sock.settimeout(None)
        self.thread = threading.Thread(target=self._loop, name=f"idle-observer:{self.user}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                line = self.imap.readline()
                now = time.time()
                if not line:
                    return
                words = line.split()
                if len(words) >= 3 and words[0] == b"*" and words[2] in (b"EXISTS", b"EXPUNGE"):
                    with self.cond:
                        n = int(words[1])
                        if words[2] == b"EXISTS":
                            self.exists = n
                        else:
                            self.exists -= 1
                        self.events.append((now, words[2].decode(), n))
                        self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def wait_exists(self, since: int, timeout: float) -> float | None:
        """The time of the first EXISTS after event index `since`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, kind, _ in self.events[since:]:
                    if kind == "EXISTS":
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def wait_count(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.exists != count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.imap.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self.imap.sock.close()


class StatusPoller:
    """`STATUS <mailbox> (MESSAGES)` every `interval` s on its own connection until the count rises."""

    def __init__(self, server: Server, user: str, mailbox: str, interval: float = 0.005) -> None:
        self.imap = login(server, user)
        self.mailbox, self.interval = mailbox, interval
        self.count = self.messages()

    def messages(self) -> int:
        _typ, data = self.imap.status(self.mailbox, "(MESSAGES)")
        m = re.search(rb"MESSAGES (\d+)", data[0] or b"")
        return int(m.group(1)) if m else -1

    def wait_increase(self, timeout: float) -> float | None:
        """The time the count was first seen above the last known one; None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = self.messages()
            now = time.time()
            if n > self.count:
                self.count = n
                return now
            time.sleep(self.interval)
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.imap.logout()


# ---------------------------------------------------------------------------------------------------
# The two tools
# ---------------------------------------------------------------------------------------------------

N_RULES = 20
MATCH_SENDER = "alerts@match.example.org"


def senders() -> list[str]:
    return [f"someone{i:02d}@other.example.org" for i in range(1, N_RULES)] + [MATCH_SENDER]


def mailrules_rules() -> str:
    out = ["# Generated by bench/latency_bench.py: 20 arrival rules, only the last one matches\n"]
    for i, s in enumerate(senders(), 1):
        dest = "Dest" if s == MATCH_SENDER else f"Other{i:02d}"
        out.append(f'rule "r{i:02d}" {{ when from contains "{s}" then move to "{dest}" }}\n')
    return "".join(out)


def lua_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def imapfilter_lua(server: Server, user: str) -> str:
    rules = []
    for i, s in enumerate(senders(), 1):
        dest = "Dest" if s == MATCH_SENDER else f"Other{i:02d}"
        rules.append(
            f"    results = account.INBOX:contain_from({lua_str(s)})\n"
            f"    results:move_messages(account[{lua_str(dest)}])\n"
        )
    return (
        "-- Generated by bench/latency_bench.py: the same 20 arrival rules, in an enter_idle() loop\n"
        "options.timeout = 120\noptions.info = false\noptions.create = true\noptions.starttls = true\n"
        f"account = IMAP {{\n    server = '127.0.0.1',\n    port = {server.port},\n"
        f"    username = {lua_str(user)},\n    password = {lua_str(server.users[user])},\n}}\n"
        "local results\n"
        "while true do\n    account.INBOX:enter_idle()\n" + "".join(rules) + "end\n"
    )


class DaemonProc:
    """`mailrules daemon` as a subprocess with its own config, rules, state DB and metrics port."""

    def __init__(
        self,
        work: Path,
        server: Server,
        accounts: list[tuple[str, str]],
        rules: str,
        account_extra: str = "",
        nofile: int | None = None,
        prelude: str = "",
    ) -> None:
        self.work = work
        (work / "rules.d").mkdir(parents=True, exist_ok=True)
        (work / "rules.d" / "bench.rules").write_text(rules)
        self.metrics_port = free_port()
        accts = "".join(
            f'[accounts.{name}]\nhost = "127.0.0.1"\nport = {server.port}\ntls = "starttls"\n'
            f'ca_file = "{server.ca_file}"\nusername = "{user}"\npassword = "{server.users[user]}"\n'
            f"{account_extra}"
            for name, user in accounts
        )
        self.config = work / "mailrules.toml"
        self.config.write_text(
            f'rules = "rules.d"\nstate = "state.db"\n[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n'
            + accts
        )
        self.state = work / "state.db"
        self.log = work / "daemon.log"
        self.nofile = nofile
        self.prelude = prelude  # Python run before the CLI (an experiment: patch one function)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        def limits() -> None:
            if self.nofile:
                import resource

                soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                want = max(soft, self.nofile)
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))

        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(VENV_PY),
                    "-c",
                    f"{self.prelude}\nfrom mailrules.cli import main\nmain()",
                    "daemon",
                    "--config",
                    str(self.config),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.work,
                preexec_fn=limits,
            )

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.metrics_port, path, timeout=5)

    def metric(self, name: str) -> float:
        return metric_total(self.get("/metrics")[1], name)

    def wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.proc.returncode}): {self.tail()}")
            if cond():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}: {self.tail()}")

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def journal_times(self) -> dict[tuple[str, str, int], float]:
        """{(account, mailbox, uid): unix time of the first ok move} from the state DB."""
        out: dict[tuple[str, str, int], float] = {}
        with contextlib.closing(sqlite3.connect(f"file:{self.state}?mode=ro", uri=True, timeout=10)) as db:
            rows = db.execute(
                "SELECT account, mailbox, uid, at FROM journal WHERE action = 'move' AND outcome = 'ok'"
            ).fetchall()
        for account, mailbox, uid, at in rows:
            t = datetime.fromisoformat(at).timestamp()
            key = (account, mailbox, int(uid))
            out[key] = min(t, out.get(key, t))
        return out

    def stop(self) -> None:
        stop_process(self.proc, grace=15)


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    tool: str
    uid: int
    t0: float
    append_rtt: float
    notify: float | None  # seconds after T0
    done: float | None


@dataclass
class Lane:
    """One user: appender, bare IDLE observer on INBOX, and (for a tool) a STATUS poller on Dest.

    The `bare` lane has no tool: its reaction is the observer's notification (reference a). On a
    tool's user the observer may miss a message altogether: when the tool's IDLE process is woken
    first and moves it before the observer's process looks, Dovecot never announces it to the
    observer; so the reference is its own user, and the per-message pairing is reported apart.
    """

    tool: str
    user: str
    appender: imaplib.IMAP4
    observer: IdleObserver
    poller: StatusPoller | None

    def measure(self, timeout: float = 10.0) -> Sample:
        mark = self.observer.mark()
        data = message(MATCH_SENDER, f"bench {secrets.token_hex(4)}")
        before = time.time()
        t0, uid = append(self.appender, "INBOX", data)
        done = self.poller.wait_increase(timeout) if self.poller else None
        notified = self.observer.wait_exists(mark, timeout if self.poller is None else 0.2)
        return Sample(
            self.tool,
            uid,
            t0,
            t0 - before,
            None if notified is None else notified - t0,
            None if done is None else done - t0,
        )

    def settle(self, timeout: float = 3.0) -> bool:
        """The message left INBOX and the EXPUNGE notification reached the observer."""
        if self.poller is None:
            return True
        return self.observer.wait_count(0, timeout)

    def warm_up(self, count: int, tail: Callable[[], str]) -> None:
        """`count` uncounted messages acted on; the first ones may precede the tool's first IDLE."""
        acted, tries = 0, 0
        while acted < count:
            tries += 1
            if tries > count + 10:
                raise RuntimeError(f"{self.tool}: warm-up messages are not acted on {tail()}")
            s = self.measure(timeout=5)
            if self.poller is None or s.done is not None:
                acted += 1
                self.settle()
                time.sleep(0.2)
        if self.poller is not None:
            self.poller.count = self.poller.messages()


def run(args: argparse.Namespace) -> int:
    tools = [t for t in args.tools.split(",") if t]
    messages = 40 if args.quick and args.messages is None else (args.messages or 200)
    bare_messages = args.bare_messages if args.bare_messages is not None else max(10, messages // 4)
    users = {"mailrules": "mr", "imapfilter": "if", "bare": "bare"}
    lanes_wanted = [*tools, "bare"] if bare_messages else tools
    dests = ("Dest", *(f"Other{i:02d}" for i in range(1, N_RULES)))
    work = Path(tempfile.mkdtemp(prefix="mr-latbench-"))
    work.chmod(0o755)  # Dovecot's mail processes (nobody) write the rawlog below it
    server: Server | None = None
    daemon: DaemonProc | None = None
    imapfilter: subprocess.Popen[bytes] | None = None
    lanes: dict[str, Lane] = {}
    started = time.monotonic()
    try:
        server = start_server(
            [users[t] for t in lanes_wanted], dests, rawlog_dir=work / "rawlog" if args.rawlog else None
        )
        for tool in lanes_wanted:
            user = users[tool]
            obs = IdleObserver(server, user)
            obs.start()
            poller = None if tool == "bare" else StatusPoller(server, user, "Dest")
            lanes[tool] = Lane(tool, user, login(server, user), obs, poller)
        if "mailrules" in lanes:
            notify = f'notify = "{args.notify}"\n'  # NOTIFY (Dovecot offers it) or IDLE per mailbox
            daemon = DaemonProc(work / "mailrules", server, [("mr", "mr")], mailrules_rules(), notify)
            print(f"mailrules daemon: notify = {args.notify!r}")
            daemon.start()
            daemon.wait(lambda: daemon.get("/readyz")[0] == 200, 60, "the daemon to become ready")
        if "imapfilter" in lanes:
            if shutil.which("imapfilter") is None:
                raise SystemExit("bench: imapfilter is not installed")
            ifdir = work / "imapfilter"
            ifdir.mkdir()
            lua = ifdir / "config.lua"
            lua.write_text(imapfilter_lua(server, "if"))
            env = dict(os.environ, HOME=str(ifdir))
            with (ifdir / "imapfilter.log").open("wb") as out:
                imapfilter = subprocess.Popen(
                    ["imapfilter", "-t", str(server.ca_file), "-c", str(lua)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                )
        time.sleep(1.0)
        # Warm-up (not counted): the first reactions include connection set-up and imports.
        for lane in lanes.values():
            lane.warm_up(args.warmup, daemon.tail if daemon and lane.tool == "mailrules" else lambda: "")
        samples: list[Sample] = []
        order = [t for i in range(max(messages, bare_messages)) for t in tools if i < messages]
        if bare_messages:
            # the bare lane's messages spread evenly through the run
            step = len(order) / bare_messages if order else 1
            for k in reversed(range(bare_messages)):
                order.insert(min(len(order), int(k * step)), "bare")
        rng = random.Random(args.seed)
        if args.verbose:
            print(f"{len(order)} messages: {', '.join(f'{t} {order.count(t)}' for t in lanes)}")
        for i, tool in enumerate(order):
            lane = lanes[tool]
            if not lane.settle():
                print(f"  warning: {tool}: INBOX not empty before message {i}", file=sys.stderr)
            time.sleep(rng.uniform(args.pause[0], args.pause[1]) / 1000)
            samples.append(lane.measure())
            if args.verbose:
                s = samples[-1]
                nan = float("nan")
                print(f"  {i:4d} {tool:10s} notify {ms(s.notify or nan)} done {ms(s.done or nan)}")
        journal = daemon.journal_times() if daemon else {}
        elapsed = time.monotonic() - started
        report(samples, journal, tools, messages, bare_messages, elapsed, args)
        if args.rawlog:
            breakdown(work / "rawlog" / "mr", samples)
        return 0
    finally:
        for lane in lanes.values():
            lane.observer.close()
            if lane.poller is not None:
                lane.poller.close()
            with contextlib.suppress(Exception):
                lane.appender.logout()
        stop_process(imapfilter, grace=5)
        if daemon is not None:
            daemon.stop()
        if server is not None:
            _dovecot.stop(server)
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def breakdown(rawlog: Path, samples: list[Sample]) -> None:
    """mailrules' commands after each notification, from Dovecot's rawlog of the daemon's connections.

    Per measured message: when each command reached the server, relative to T0 (median over messages)."""
    stamp = re.compile(rb"^(\d+\.\d+) (\S+) ?(.*)$")
    events: list[tuple[float, str]] = []
    for path in rawlog.glob("*.in"):
        data = path.read_bytes()
        if b" ID (" not in data:
            continue  # the harness' connections (appender, observer, poller) send no ID
        for line in data.split(b"\n"):
            m = stamp.match(line.rstrip(b"\r"))
            if m:
                words = m.group(3).split()
                name = (
                    m.group(2).decode()
                    if m.group(2) == b"DONE"
                    else (
                        (
                            words[0]
                            + (b" " + words[1] if words[0].upper() == b"UID" and len(words) > 1 else b"")
                        )
                        .decode(errors="replace")
                        .upper()
                        if words
                        else "?"
                    )
                )
                events.append((float(m.group(1)), name))
    events.sort()
    per: dict[str, list[float]] = {}
    for s in samples:
        if s.tool != "mailrules" or s.done is None:
            continue
        seen: set[str] = set()
        for t, name in events:
            if s.t0 < t <= s.t0 + s.done + 0.05:
                key = name
                n = 2
                while key in seen:
                    key, n = f"{name} #{n}", n + 1
                seen.add(key)
                per.setdefault(key, []).append(t - s.t0)
    print("\nmailrules' commands as Dovecot received them (rawlog), ms after T0, median over messages:")
    for key, vals in sorted(per.items(), key=lambda kv: statistics.median(kv[1])):
        p50, p99 = ms(statistics.median(vals)), ms(pct(vals, 99))
        print(f"  {key:<24} n={len(vals):<4} p50 {p50:>8}  p99 {p99:>8}")


def report(
    samples: list[Sample],
    journal: dict[tuple[str, str, int], float],
    tools: list[str],
    messages: int,
    bare_messages: int,
    elapsed: float,
    args: argparse.Namespace,
) -> None:
    def col(tool: str | None, f: Callable[[Sample], float | None]) -> list[float]:
        return [v for s in samples if tool is None or s.tool == tool if (v := f(s)) is not None]

    def paired(tool: str) -> list[float]:
        return [
            s.done - s.notify
            for s in samples
            if s.tool == tool and s.done is not None and s.notify is not None
        ]

    def jtime(s: Sample) -> float | None:
        t = journal.get(("mr", "INBOX", s.uid))
        return None if t is None else t - s.t0

    bare = col("bare", lambda s: s.notify)
    rows: list[tuple[str, list[float]]] = [("(a) bare IDLE notification, own user", bare)]
    for tool in tools:
        rows.append((f"    same, observer on the {tool} user", col(tool, lambda s: s.notify)))
    for tool in tools:
        rows.append((f"{tool}: APPEND -> in Dest (STATUS poll)", col(tool, lambda s: s.done)))
    if "mailrules" in tools:
        rows.append(("mailrules: APPEND -> journal `at` of the move", col("mailrules", jtime)))
    for tool in tools:
        rows.append((f"{tool}: done - notify, same message", paired(tool)))
    if "mailrules" in tools:
        rows.append(
            (
                "mailrules: journal - notify, same message",
                [
                    j - s.notify
                    for s in samples
                    if s.tool == "mailrules" and s.notify is not None and (j := jtime(s)) is not None
                ],
            )
        )
    rows.append(("APPEND round trip (appender)", col(None, lambda s: s.append_rtt)))

    print()
    print(
        f"Reaction latency on Dovecot 2.3 (loopback), 20 arrival rules (rule 20 matches: move to Dest); "
        f"{messages} messages per tool, {bare_messages} bare; pause {args.pause[0]}-{args.pause[1]} ms; "
        "T0 = APPEND returned"
    )
    print(f"{'ms':<50}{'n':>5}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for name, vals in rows:
        print(
            f"{name:<50}{len(vals):>5}{ms(pct(vals, 50)):>9}{ms(pct(vals, 90)):>9}{ms(pct(vals, 99)):>9}"
            f"{ms(max(vals) if vals else float('nan')):>9}"
        )
    lost = {t: sum(1 for s in samples if s.tool == t and s.done is None) for t in tools}
    if any(lost.values()):
        print(f"not acted on within 10 s: {lost}")
    print()
    print(f"{'Overhead above (a), ms':<50}{'p50':>9}{'p99':>9}")
    for tool in tools:
        done = col(tool, lambda s: s.done)
        print(
            f"{tool + ': p(done) - p(bare notification)':<50}{ms(pct(done, 50) - pct(bare, 50)):>9}"
            f"{ms(pct(done, 99) - pct(bare, 99)):>9}"
        )
        p = paired(tool)
        print(f"{tool + ': done - notify, same message':<50}{ms(pct(p, 50)):>9}{ms(pct(p, 99)):>9}")
    if {"mailrules", "imapfilter"} <= set(tools):
        mr, imf = col("mailrules", lambda s: s.done), col("imapfilter", lambda s: s.done)
        o50, o99 = pct(mr, 50) - pct(bare, 50), pct(mr, 99) - pct(bare, 99)
        print()
        print(f"{'Ratios':<50}{'p50':>9}{'p99':>9}")
        print(
            f"{'mailrules / bare notification':<50}{pct(mr, 50) / pct(bare, 50):>9.3f}"
            f"{pct(mr, 99) / pct(bare, 99):>9.3f}"
        )
        print(
            f"{'mailrules / imapfilter':<50}{pct(mr, 50) / pct(imf, 50):>9.3f}"
            f"{pct(mr, 99) / pct(imf, 99):>9.3f}"
        )
        pm, pi = paired("mailrules"), paired("imapfilter")
        print(
            f"{'overhead (same message) mailrules / imapfilter':<50}{pct(pm, 50) / pct(pi, 50):>9.3f}"
            f"{pct(pm, 99) / pct(pi, 99):>9.3f}"
        )
        print()
        goals = [
            ("mailrules overhead p50 < 20 ms", o50 < 0.020, ms(o50)),
            ("mailrules overhead p99 < 100 ms", o99 < 0.100, ms(o99)),
            (
                "mailrules p50 <= imapfilter p50",
                pct(mr, 50) <= pct(imf, 50),
                f"{ms(pct(mr, 50))} vs {ms(pct(imf, 50))}",
            ),
            (
                "mailrules p99 <= imapfilter p99",
                pct(mr, 99) <= pct(imf, 99),
                f"{ms(pct(mr, 99))} vs {ms(pct(imf, 99))}",
            ),
        ]
        for name, ok, val in goals:
            print(f"goal {name:<36} {'met' if ok else 'NOT met':<8} ({val} ms)")
    print(f"\nwall time {elapsed:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=None, help="measured messages per tool (default 200)")
    ap.add_argument("--quick", action="store_true", help="40 messages per tool")
    ap.add_argument("--tools", default="mailrules,imapfilter", help="comma list of mailrules,imapfilter")
    ap.add_argument(
        "--bare-messages",
        type=int,
        default=None,
        help="messages to the tool-less reference user (default: a quarter of --messages)",
    )
    ap.add_argument(
        "--pause",
        type=int,
        nargs=2,
        default=(50, 150),
        metavar=("MIN", "MAX"),
        help="random pause in ms after the previous reaction settled (default 50 150)",
    )
    ap.add_argument(
        "--rawlog",
        action="store_true",
        help="Dovecot rawlog on: print when each of mailrules' commands reached the server",
    )
    ap.add_argument("--warmup", type=int, default=3, help="uncounted messages per tool first (default 3)")
    ap.add_argument(
        "--notify",
        choices=("auto", "off"),
        default="auto",
        help="the daemon's notify setting: auto (one NOTIFY connection) or off (IDLE per mailbox)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, state DB)")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)
    with interrupts_as_keyboard():
        try:
            return run(args)
        except KeyboardInterrupt:
            print("interrupted; cleaned up", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
