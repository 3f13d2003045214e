"""Benchmark: mailrules vs imapfilter vs a bare imaplib script, same 20 rules, same mailbox, on Dovecot.

    .venv/bin/python bench/run_bench.py                  # 20,000 messages, scaling run at 5,000
    .venv/bin/python bench/run_bench.py --messages 5000 --scale 0 --repeat 3
    .venv/bin/python bench/run_bench.py --rules-only     # print the three rule sets, run nothing
    .venv/bin/python bench/run_bench.py --profile 3      # + 3 `mailrules run` processes under cProfile
    .venv/bin/python bench/run_bench.py --callgrind      # + each tool once under valgrind: instructions
    .venv/bin/python bench/run_bench.py --imports --startup 5   # import times; start to first command
    .venv/bin/python bench/run_bench.py --tools mailrules,mailrules-1c,mailrules:new --alt new=/tmp/new
                                                         # A/B: another checkout, one connection

A private Dovecot 2.3 on loopback (bench/_dovecot.py) gets one "template" user seeded by MULTIAPPEND
with `mailrules.demo.sample_mail.generate(N, seed, years=3)` (flags and INTERNALDATE kept); every run
then gets a fresh user holding a `cp -a` of the template's maildir (same messages, UIDs, flags and
Dovecot indexes). Each tool runs as its own process over STARTTLS with certificate checks:

* mailrules: `mailrules run --config ...` (the CLI: rules loaded and checked, journal in SQLite,
  the log to a file: one INFO line per rule and mailbox, per action at DEBUG);
* imapfilter: a generated Lua config, `imapfilter -t <ca> -c <config>`;
* bare: this file's `_bare` mode, plain imaplib: one UID SEARCH per rule and one UID STORE / UID MOVE
  per action, with the rule set's meaning hard-coded (no parsing, no journal, no per-message work
  except where a regex and a template destination make it unavoidable).

Commands are counted from Dovecot's rawlog of each user (the same counter for all three), wall
time is from process start to exit, CPU is the tool's own (wait4) and Dovecot's (all its processes,
from /proc, before and after the run). The final state of every run (per mailbox: Message-ID, \\Seen,
\\Flagged of every message) must be identical across the tools; differences are printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import imaplib
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TREE = ROOT  # where the mailrules children import mailrules from (--tree)
TREES: dict[str, Path] = {}  # --alt NAME=TREE: tool `mailrules:NAME` runs mailrules from TREE


def tree_of(tool: str) -> Path:
    """The checkout a mailrules tool runs: `mailrules:NAME` the --alt tree NAME, else --tree."""
    _, _, alt = tool.partition(":")
    return TREES[alt] if alt else TREE


def base_tool(tool: str) -> str:
    return tool.partition(":")[0]


if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))


# ---------------------------------------------------------------------------------------------------
# The rule set, written three times: mailrules, imapfilter (Lua), and the bare script's plan
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRule:
    name: str
    when: str  # mailrules condition
    then: str  # mailrules actions
    lua: str  # imapfilter: an expression over `box` giving the matching set
    lua_then: tuple[str, ...]  # imapfilter: methods called on the set, in order
    search: str  # bare: UID SEARCH criteria (ASCII; `{utf8}` marks a UTF-8 literal argument)
    bare_then: tuple[tuple[str, str], ...]  # bare: ("flag", "\\Seen") / ("move", "CI")
    utf8: str = ""  # bare: the UTF-8 string sent as a literal for `{utf8}`
    special: str = ""  # "lists": a regex on List-Id and a template destination (client side)


DAY = 86400

RULES: tuple[BenchRule, ...] = (
    BenchRule(
        "CI failures stay visible",
        'from contains "builds@ci.example.com" and subject contains "failed"',
        "flag",
        "box:contain_from('builds@ci.example.com') * box:contain_subject('failed')",
        ("mark_flagged()",),
        'FROM "builds@ci.example.com" SUBJECT "failed"',
        (("flag", "\\Flagged"),),
    ),
    BenchRule(
        "CI passes",
        'from contains "builds@ci.example.com" and subject contains "passed"',
        'mark read; move to "CI"',
        "box:contain_from('builds@ci.example.com') * box:contain_subject('passed')",
        ("mark_seen()", "move_messages(account['CI'])"),
        'FROM "builds@ci.example.com" SUBJECT "passed"',
        (("flag", "\\Seen"), ("move", "CI")),
    ),
    BenchRule(
        "GitHub, read",
        'from contains "notifications@github.com" and seen',
        'move to "GitHub/Read"',
        "box:contain_from('notifications@github.com') * box:is_seen()",
        ("move_messages(account['GitHub/Read'])",),
        'FROM "notifications@github.com" SEEN',
        (("move", "GitHub/Read"),),
    ),
    BenchRule(
        "GitHub",
        'header "X-GitHub-Reason" exists',
        'move to "GitHub"',
        "box:contain_field('X-GitHub-Reason', '')",
        ("move_messages(account['GitHub'])",),
        'HEADER X-GitHub-Reason ""',
        (("move", "GitHub"),),
    ),
    BenchRule(
        "Old list mail",
        'header "List-Id" exists and older than 365 days',
        "archive",
        "box:contain_field('List-Id', '') * box:is_older(365)",
        ("move_messages(account['Archive'])",),
        f'HEADER List-Id "" OLDER {365 * DAY}',
        (("move", "Archive"),),
    ),
    BenchRule(
        "Lists",
        r"list matches /^([a-z0-9-]+)\./",
        'move to "Lists/{match.1}"',
        "",
        (),
        'HEADER List-Id ""',
        (),
        special="lists",
    ),
    BenchRule(
        "Invoices",
        'from contains "billing@hosting.example.net" and subject contains "invoice"',
        'flag; move to "Finance/Invoices"',
        "box:contain_from('billing@hosting.example.net') * box:contain_subject('invoice')",
        ("mark_flagged()", "move_messages(account['Finance/Invoices'])"),
        'FROM "billing@hosting.example.net" SUBJECT "invoice"',
        (("flag", "\\Flagged"), ("move", "Finance/Invoices")),
    ),
    BenchRule(
        "Factures",
        'from contains "billing@hosting.example.net"',
        'move to "Finance/Factures"',
        "box:contain_from('billing@hosting.example.net')",
        ("move_messages(account['Finance/Factures'])",),
        'FROM "billing@hosting.example.net"',
        (("move", "Finance/Factures"),),
    ),
    BenchRule(
        "Receipts",
        'from contains "store@shop.example.com"',
        'mark read; move to "Finance/Receipts"',
        "box:contain_from('store@shop.example.com')",
        ("mark_seen()", "move_messages(account['Finance/Receipts'])"),
        'FROM "store@shop.example.com"',
        (("flag", "\\Seen"), ("move", "Finance/Receipts")),
    ),
    BenchRule(
        "Read newsletters",
        'header "List-Unsubscribe" exists and seen',
        "delete",
        "box:contain_field('List-Unsubscribe', '') * box:is_seen()",
        ("move_messages(account['Trash'])",),
        'HEADER List-Unsubscribe "" SEEN',
        (("move", "Trash"),),
    ),
    BenchRule(
        "Newsletters",
        'header "List-Unsubscribe" exists',
        'move to "Later"',
        "box:contain_field('List-Unsubscribe', '')",
        ("move_messages(account['Later'])",),
        'HEADER List-Unsubscribe ""',
        (("move", "Later"),),
    ),
    BenchRule(
        "Marketing",
        'header "Precedence" contains "bulk"',
        "mark read; delete",
        "box:contain_field('Precedence', 'bulk')",
        ("mark_seen()", "move_messages(account['Trash'])"),
        'HEADER Precedence "bulk"',
        (("flag", "\\Seen"), ("move", "Trash")),
    ),
    BenchRule(
        "Big mail",
        "size > 1000000",
        'move to "Big"',
        "box:is_larger(1000000)",
        ("move_messages(account['Big'])",),
        "LARGER 1000000",
        (("move", "Big"),),
    ),
    BenchRule(
        "Mum",
        'from contains "mum@family.example"',
        "flag",
        "box:contain_from('mum@family.example')",
        ("mark_flagged()",),
        'FROM "mum@family.example"',
        (("flag", "\\Flagged"),),
    ),
    BenchRule(
        "Quarterly numbers",
        'from contains "alice@work.example" and subject contains "Quarterly"',
        'move to "Work/Reports"',
        "box:contain_from('alice@work.example') * box:contain_subject('Quarterly')",
        ("move_messages(account['Work/Reports'])",),
        'FROM "alice@work.example" SUBJECT "Quarterly"',
        (("move", "Work/Reports"),),
    ),
    BenchRule(
        "Work",
        'from contains "alice@work.example"',
        'mark read; move to "Work"',
        "box:contain_from('alice@work.example')",
        ("mark_seen()", "move_messages(account['Work'])"),
        'FROM "alice@work.example"',
        (("flag", "\\Seen"), ("move", "Work")),
    ),
    BenchRule(
        "Café",
        'subject contains "Café"',
        "flag",
        "box:contain_subject('Café')",
        ("mark_flagged()",),
        "SUBJECT {utf8}",
        (("flag", "\\Flagged"),),
        utf8="Café",
    ),
    BenchRule(
        "Old flagged",
        "flagged and older than 730 days",
        'move to "Keep"',
        "box:is_flagged() * box:is_older(730)",
        ("move_messages(account['Keep'])",),
        f"FLAGGED OLDER {730 * DAY}",
        (("move", "Keep"),),
    ),
    BenchRule(
        "Old read mail",
        "seen and not flagged and older than 180 days",
        "archive",
        "box:is_seen() * box:is_unflagged() * box:is_older(180)",
        ("move_messages(account['Archive'])",),
        f"SEEN UNFLAGGED OLDER {180 * DAY}",
        (("move", "Archive"),),
    ),
    BenchRule(
        "Stale unread",
        "not seen and older than 14 days",
        "mark read",
        "box:is_unseen() * box:is_older(14)",
        ("mark_seen()",),
        f"UNSEEN OLDER {14 * DAY}",
        (("flag", "\\Seen"),),
    ),
)
AGE_DAYS = (365, 730, 180, 14)  # every `older than N days` above (see nudge_boundaries)
LIST_REGEX = re.compile(r"<([a-z0-9-]+)\.")  # imapfilter and bare: on the whole List-Id value


def mailrules_text(rules: tuple[BenchRule, ...]) -> str:
    out = [f"# Generated by bench/run_bench.py: {len(rules)} rules (imapfilter and bare do the same)\n"]
    for r in rules:
        out.append(f'rule "{r.name}" in "INBOX" {{\n    when {r.when}\n    then {r.then}\n}}\n\n')
    return "".join(out)


def lua_string(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def imapfilter_config(rules: tuple[BenchRule, ...], port: int, user: str, password: str) -> str:
    head = f"""\
-- Generated by bench/run_bench.py: the same {len(rules)} rules as the mailrules rule set, in the same order.
options.timeout = 120
options.info = false
options.charset = 'UTF-8'
options.create = true

account = IMAP {{
    server = '127.0.0.1',
    port = {port},
    username = {lua_string(user)},
    password = {lua_string(password)},
}}
box = account.INBOX

"""
    body = []
    for r in rules:
        body.append(f"-- {r.name}: when {r.when} then {r.then}\n")
        if r.special == "lists":
            body.append("""\
do
    local found = box:contain_field('List-Id', '')
    local groups = {}
    for _, m in ipairs(found) do
        local mbox, uid = table.unpack(m)
        local value = mbox[uid]:fetch_field('List-Id')
        if value then
            local whole, name = regex_search('<([a-z0-9-]+)\\\\.', value)
            if whole then
                groups[name] = groups[name] or Set {}
                table.insert(groups[name], m)
            end
        end
    end
    for name, set in pairs(groups) do set:move_messages(account['Lists/' .. name]) end
end

""")
            continue
        body.append(f"do\n    local found = {r.lua}\n")
        for action in r.lua_then:
            body.append(f"    found:{action}\n")
        body.append("end\n\n")
    return head + "".join(body)


def bare_plan_text(rules: tuple[BenchRule, ...]) -> str:
    lines = ["# bare: one UID SEARCH per rule, then per action one UID STORE +FLAGS.SILENT or UID MOVE"]
    for r in rules:
        crit = r.search.replace("{utf8}", f"{{literal {r.utf8!r}}}")
        acts = ", ".join(f"{k} {v}" for k, v in r.bare_then) or (
            "UID FETCH (List-Id) -> regex -> one UID MOVE per Lists/<name>" if r.special else ""
        )
        lines.append(f"{r.name:<26} UID SEARCH {crit}  ->  {acts}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# The bare script (run as `python bench/run_bench.py _bare HOST PORT USER PASSWORD CA`)
# ---------------------------------------------------------------------------------------------------

MAX_SET_BYTES = 60_000  # Dovecot's imap_max_line_length is 64 KiB


def uid_ranges(uids: list[int]) -> list[str]:
    """Compressed, ascending UID sets of at most MAX_SET_BYTES each."""
    parts: list[str] = []
    uids = sorted(uids)
    i = 0
    while i < len(uids):
        j = i
        while j + 1 < len(uids) and uids[j + 1] == uids[j] + 1:
            j += 1
        parts.append(str(uids[i]) if i == j else f"{uids[i]}:{uids[j]}")
        i = j + 1
    chunks: list[str] = []
    cur: list[str] = []
    size = 0
    for p in parts:
        if cur and size + len(p) + 1 > MAX_SET_BYTES:
            chunks.append(",".join(cur))
            cur, size = [], 0
        cur.append(p)
        size += len(p) + 1
    if cur:
        chunks.append(",".join(cur))
    return chunks


def _ok(typ: str, data: Any, what: str) -> Any:
    if typ != "OK":
        raise RuntimeError(f"{what}: {typ} {data!r}")
    return data


def bare_main(host: str, port: int, user: str, password: str, ca: str, rules: tuple[BenchRule, ...]) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    imap = imaplib.IMAP4(host, port)
    imap.starttls(ctx)
    imap.login(user, password)
    _ok(*imap.select("INBOX"), "SELECT")
    created: set[str] = set()

    def move(uids: list[int], dest: str) -> None:
        for chunk in uid_ranges(uids):
            typ, data = imap.uid("MOVE", chunk, f'"{dest}"')
            if typ != "OK" and dest not in created:  # [TRYCREATE]: create once and retry
                imap.create(f'"{dest}"')
                created.add(dest)
                typ, data = imap.uid("MOVE", chunk, f'"{dest}"')
            _ok(typ, data, f"MOVE {dest}")

    for r in rules:
        if "{utf8}" in r.search:
            # bytes: imaplib would encode a str literal as ASCII (typeshed says str only)
            imap.literal = r.utf8.encode("utf-8")  # type: ignore[assignment]
            typ, data = imap.uid("SEARCH", "CHARSET", "UTF-8", r.search.replace(" {utf8}", ""))
        else:
            typ, data = imap.uid("SEARCH", r.search)
        uids = [int(w) for w in _ok(typ, data, "SEARCH")[0].split()]
        if not uids:
            continue
        if r.special == "lists":
            groups: dict[str, list[int]] = defaultdict(list)
            for chunk in uid_ranges(uids):
                typ, data = imap.uid("FETCH", chunk, "(BODY.PEEK[HEADER.FIELDS (LIST-ID)])")
                for item in _ok(typ, data, "FETCH"):
                    if not isinstance(item, tuple):
                        continue
                    m = re.search(rb"UID (\d+)", item[0])
                    found = LIST_REGEX.search(item[1].decode("utf-8", "replace"))
                    if m and found:
                        groups[found.group(1)].append(int(m.group(1)))
            for name, group in groups.items():
                move(group, f"Lists/{name}")
            continue
        for kind, arg in r.bare_then:
            if kind == "flag":
                for chunk in uid_ranges(uids):
                    _ok(*imap.uid("STORE", chunk, "+FLAGS.SILENT", f"({arg})"), "STORE")
            else:
                move(uids, arg)
    imap.logout()


# ---------------------------------------------------------------------------------------------------
# Mailbox: generate, seed, clone, fingerprint
# ---------------------------------------------------------------------------------------------------


def nudge_boundaries(msgs: list[Any], now: dt.datetime, margin: dt.timedelta) -> tuple[list[Any], int]:
    """Move INTERNALDATEs out of the windows where `older than N days` (RFC 5032 OLDER, exact to
    the second: mailrules and bare) and imapfilter's `is_older(N)` (`BEFORE <date>`, whole days)
    disagree: [UTC midnight of now-N, now+margin-N). Such messages get midnight-N minus an hour."""
    from dataclasses import replace

    out, moved = [], 0
    windows = []
    for n in AGE_DAYS:
        edge = now - dt.timedelta(days=n)
        start = edge.replace(hour=0, minute=0, second=0, microsecond=0)
        windows.append((start, edge + margin))
    for m in msgs:
        for start, end in windows:
            if start <= m.internaldate < end:
                m = replace(m, internaldate=start - dt.timedelta(hours=1))
                moved += 1
                break
        out.append(m)
    return out, moved


def session_for(server: Any, user: str) -> Any:
    from mailrules.imap.session import ConnectionParams, ImapSession

    params = ConnectionParams(
        "127.0.0.1",
        server.port,
        "starttls",
        user,
        server.users[user],
        ca_file=str(server.ca_file),
        timeout=300,
    )
    return ImapSession.connect(params)


def seed(server: Any, user: str, msgs: list[Any]) -> float:
    """MULTIAPPEND (RFC 3502) in ~4 MB commands, each message with its flags and INTERNALDATE."""
    from mailrules.compile.serialize import Lit
    from mailrules.imap.commands import _internaldate
    from mailrules.imap.core import flag_list

    started = time.perf_counter()
    session = session_for(server, user)
    batch: list[Any] = [b'APPEND "INBOX"']
    size = 0
    for i, m in enumerate(msgs):
        batch += [b" " + flag_list(m.flags) + b" " + _internaldate(m.internaldate) + b" ", Lit(m.raw)]
        size += len(m.raw)
        if size > 4_000_000 or i == len(msgs) - 1:
            session._run("APPEND", batch)
            batch, size = [b'APPEND "INBOX"'], 0
    info = session.select("INBOX")
    session.logout()
    if info.exists != len(msgs):
        raise SystemExit(f"bench: seeded {info.exists} messages, wanted {len(msgs)}")
    return time.perf_counter() - started


Fingerprint = dict[str, Counter[tuple[str, bool, bool]]]


def fingerprint(server: Any, user: str) -> Fingerprint:
    """Per mailbox: a multiset of (Message-ID, seen, flagged) of the messages in it."""
    session = session_for(server, user)
    out: Fingerprint = {}
    try:
        for mb in session.list_mailboxes():
            if {f.lower() for f in mb.flags} & {"\\noselect", "\\nonexistent"}:
                continue
            info = session.select(mb.name, readonly=True)
            marks: Counter[tuple[str, bool, bool]] = Counter()
            if info.exists:
                uids = session.search([b"ALL"])
                data = session.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]", "FLAGS"])
                for d in data.values():
                    raw = bytes(d.get("BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]") or b"")
                    mid = raw.decode("ascii", "replace").partition(":")[2].strip()
                    flags = {f.lower() for f in d.get("FLAGS") or ()}
                    marks[(mid, "\\seen" in flags, "\\flagged" in flags)] += 1
            out[mb.name] = marks
    finally:
        session.logout()
    return out


def diff_fingerprints(a: Fingerprint, b: Fingerprint, limit: int = 8) -> list[str]:
    lines: list[str] = []
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name, Counter()), b.get(name, Counter())
        if x == y:
            continue
        only_a, only_b = x - y, y - x
        lines.append(
            f"{name}: {sum(x.values())} vs {sum(y.values())} messages; "
            f"{sum(only_a.values())} only in the first, {sum(only_b.values())} only in the second"
        )
        for (mid, seen, flagged), _ in list(only_a.items())[:limit]:
            lines.append(f"    first only:  {mid} seen={seen} flagged={flagged}")
        for (mid, seen, flagged), _ in list(only_b.items())[:limit]:
            lines.append(f"    second only: {mid} seen={seen} flagged={flagged}")
    return lines


# ---------------------------------------------------------------------------------------------------
# Running the tools
# ---------------------------------------------------------------------------------------------------


@dataclass
class Run:
    tool: str
    messages: int
    seconds: float
    cpu: float  # user + system CPU of the tool's process (not Dovecot's)
    commands: Counter[str]
    server: dict[str, float] = field(default_factory=dict)  # per command: Dovecot's reply latency
    fp: Fingerprint = field(default_factory=dict)
    note: str = ""
    dovecot_cpu: float = 0.0  # Dovecot's user + system CPU during the run (all its processes)
    first_command: float | None = None  # process start to the first command after login, seconds
    bytes_in: int = 0  # bytes sent by the tool after login (rawlog)
    bytes_out: int = 0  # bytes Dovecot answered after login (rawlog)

    @property
    def total(self) -> int:
        return sum(self.commands.values())


Rules = tuple[BenchRule, ...]


def write_mailrules_config(
    work: Path, server: Any, user: str, rule_set: Rules = RULES, max_connections: int | None = None
) -> Path:
    rules = work / "rules.d"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "bench.rules").write_text(mailrules_text(rule_set), encoding="utf-8")
    config = work / f"mailrules-{user}.toml"
    config.write_text(
        f'rules = "{rules}"\nstate = "{work / f"state-{user}.db"}"\ntimezone = "UTC"\n\n'
        '[metrics]\nlisten = ""\n\n'
        f'[accounts.bench]\nhost = "127.0.0.1"\nport = {server.port}\ntls = "starttls"\n'
        f'ca_file = "{server.ca_file}"\nusername = "{user}"\npassword = "{server.users[user]}"\n'
        "create_mailboxes = true\n"
        + (f"max_connections = {max_connections}\n" if max_connections is not None else "")
    )
    return config


def mailrules_env(tree: Path) -> dict[str, str]:
    """The environment of a mailrules child: the package from `tree` (this checkout by default)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
    return env


def tool_command(
    tool: str, server: Any, user: str, work: Path, rules: Rules
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run `tool` against `user`."""
    env = dict(os.environ)
    if tool.startswith("mailrules"):
        one = base_tool(tool) == "mailrules-1c"
        config = write_mailrules_config(work, server, user, rules, 1 if one else None)
        # `-m` from the work directory (the child's cwd): sys.path[0] holds no other mailrules
        cmd = [sys.executable, "-m", "mailrules", "run", "--config", str(config)]
        env = mailrules_env(tree_of(tool))
    elif tool == "imapfilter":
        lua = work / f"imapfilter-{user}.lua"
        lua.write_text(imapfilter_config(rules, server.port, user, server.users[user]), encoding="utf-8")
        env["HOME"] = str(work)  # its certificates file and history stay in the work directory
        cmd = ["imapfilter", "-t", str(server.ca_file), "-c", str(lua)]
    else:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_bare",
            "127.0.0.1",
            str(server.port),
            user,
            server.users[user],
            str(server.ca_file),
            str(len(rules)),
        ]
    return cmd, env


def run_tool(
    tool: str, server: Any, user: str, work: Path, rules: Rules, messages: int, wrap: list[str] | None = None
) -> Run:
    """Start `tool` against `user` (under `wrap`, e.g. valgrind, if given), wait for it: wall and
    CPU seconds of its process, Dovecot's CPU meanwhile, and what the rawlog says of it."""
    cmd, env = tool_command(tool, server, user, work, rules)
    log = work / f"{tool}-{user}.log"
    children = server.children()
    dovecot_before = server.cpu_seconds()
    with log.open("wb") as out:
        started_at = time.time()
        started = time.perf_counter()
        proc = subprocess.Popen(
            (wrap or []) + cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    server.settle(children)  # its imap and imap-login processes gone: their CPU is in the master's
    dovecot_cpu = server.cpu_seconds() - dovecot_before
    run = Run(
        tool,
        messages,
        seconds,
        usage.ru_utime + usage.ru_stime,
        server.count_commands(user),
        server.server_seconds(user),
        dovecot_cpu=dovecot_cpu,
    )
    first = server.first_command_at(user)
    run.first_command = None if first is None else first - started_at
    run.bytes_in, run.bytes_out = server.rawlog_bytes(user)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:]
        run.note = f"exit {proc.returncode}: {tail}"
    return run


# The child that profiles a whole `mailrules run` process (imports and start-up included) with the
# process's CPU clock as the profiler's timer ("cpu") or the wall clock ("wall": waits show up).
PROFILE_CHILD = """\
import cProfile, os, runpy, sys, time
out, clock = sys.argv[1], sys.argv[2]
def _exit(code):  # mailrules/cliexit.py leaves by os._exit, which would skip the dump below
    raise SystemExit(code)
os._exit = _exit
sys.argv = ["mailrules", *sys.argv[3:]]
prof = cProfile.Profile(time.process_time if clock == "cpu" else time.perf_counter)
prof.enable()
try:
    runpy.run_module("mailrules", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    prof.disable()
    prof.dump_stats(out)
"""


def profile_mailrules(
    server: Any, user: str, work: Path, rules: Rules, out: Path, clock: str = "cpu", tool: str = "mailrules"
) -> tuple[float, float]:
    """One `mailrules run` process under cProfile, stats dumped to `out`; (wall s, CPU s) of it."""
    one = base_tool(tool) == "mailrules-1c"
    config = write_mailrules_config(work, server, user, rules, 1 if one else None)
    cmd = [sys.executable, "-c", PROFILE_CHILD, str(out), clock, "run", "--config", str(config)]
    with (work / f"profile-{user}.log").open("wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=mailrules_env(tree_of(tool)),
            cwd=work,
        )
        _, _, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def area_of(path: str, func: str) -> str:
    """Where a profiled function lives: `mailrules/<package>`, a stdlib module, a third-party
    package, or a C function by its module (`_ssl`, `_sqlite3`, ...)."""
    if path == "~":  # a built-in: "<method 'read' of '_ssl._SSLSocket' objects>"
        m = re.search(r"of '([A-Za-z_][\w]*)\.", func) or re.search(r"method ([A-Za-z_]\w*)\.", func)
        return f"(C) {m.group(1)}" if m else "(C) builtins"
    p = Path(path)
    parts = p.parts
    if "mailrules" in parts and "site-packages" not in parts:
        i = len(parts) - 1 - parts[::-1].index("mailrules")
        rest = parts[i + 1 :]
        return "mailrules/" + (rest[0] if len(rest) > 1 else rest[0].removesuffix(".py"))
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    if "python3" in "".join(parts[-3:-1]) or "lib" in parts:
        name = parts[-1].removesuffix(".py")
        parent = parts[-2]
        return name if parent.startswith("python3") else parent
    return p.name


def profile_report(stats_file: Path, top: int, tree: Path) -> str:
    """The profile as text: self time by area, then the top functions by self and by cumulative
    time (paths shortened to the tree, site-packages and the standard library)."""
    import io
    import pstats

    stats = pstats.Stats(str(stats_file))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    areas: Counter[str] = Counter()
    for (path, _, func), (_, _, tt, _, callers) in raw.items():
        if path == "~" and callers:
            # a C function's time goes to the areas that call it (str.join from logging: logging)
            shares = {c: v[2] for c, v in callers.items()}
            whole = sum(shares.values()) or 1.0
            for (cpath, _, cfunc), share in shares.items():
                areas[area_of(cpath, cfunc)] += tt * share / whole
        else:
            areas[area_of(path, func)] += tt
    lines = [
        f"self time by area, C functions counted in their callers' areas (total {total:.2f} s "
        "under the profiler):"
    ]
    for area, tt in areas.most_common(22):
        lines.append(f"  {tt:7.3f} s {100 * tt / total:5.1f}%  {area}")
    buf = io.StringIO()
    stats.stream = buf  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    text = buf.getvalue()
    for prefix in (
        str(tree) + "/",
        sys.prefix + "/lib/python3.11/site-packages/",
        sys.base_prefix + "/lib/python3.11/",
    ):
        text = text.replace(prefix, "")
    return "\n".join(lines) + "\n" + text


def callgrind_instructions(log: Path) -> int | None:
    """Instructions (Ir) valgrind's callgrind counted for the tool's process, from its log."""
    found = re.findall(r"Collected : (\d+)", log.read_text(errors="replace"))
    return int(found[-1]) if found else None


def import_times(server: Any, user: str, work: Path, rules: Rules, top: int) -> str:
    """`python -X importtime` over a real `mailrules run`: the costliest imports, and which of the
    heavy optional packages the run path loads at all."""
    config = write_mailrules_config(work, server, user, rules)
    cmd = [sys.executable, "-X", "importtime", "-m", "mailrules", "run", "--config", str(config)]
    done = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, env=mailrules_env(TREE), cwd=work, check=False
    )
    rows = []  # (cumulative us, self us, depth, module)
    for line in done.stderr.decode(errors="replace").splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)", line)
        if m:
            rows.append((int(m.group(2)), int(m.group(1)), len(m.group(3)) // 2, m.group(4)))
    top_level = sum(c for c, _, d, _ in rows if d == 0)
    loaded = {name for _, _, _, name in rows}
    heavy = (
        "apscheduler",
        "aiosmtpd",
        "authlib",
        "requests",
        "prometheus_client",
        "http.server",
        "asyncio",
        "lark",
        "email.parser",
        "sqlite3",
        "imapclient",
        "psycopg",
        "mailrules.daemon",
        "mailrules.smtp.sender",
        "smtplib",
        "mailrules.oauth",
        "cryptography",
        "click",
        "tomllib",
    )
    lines = [
        f"imports of one `mailrules run` process: {top_level / 1e6:.3f} s in all "
        f"({len(rows)} modules; exit {done.returncode})",
        "heavy or optional packages: " + ", ".join(f"{h} {'LOADED' if h in loaded else 'no'}" for h in heavy),
        f"{'cumul ms':>9} {'self ms':>8}  module (indented by depth)",
    ]
    for cum, own, depth, name in sorted(rows, key=lambda r: -r[0])[:top]:
        lines.append(f"{cum / 1000:9.1f} {own / 1000:8.1f}  {'  ' * depth}{name}")
    return "\n".join(lines)


def connect_time(server: Any, user: str, work: Path, rules: Rules, tool: str) -> tuple[float, float | None]:
    """(process start to its first connect() to Dovecot, process start to its first command after
    login), seconds: the tool under `strace -f -e trace=connect` (filtered in the kernel)."""
    cmd, env = tool_command(tool, server, user, work, rules)
    trace = work / f"strace-{user}.txt"
    wrap = ["strace", "-f", "--seccomp-bpf", "-ttt", "-e", "trace=connect", "-o", str(trace)]
    started_at = time.time()
    subprocess.run(
        wrap + cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=work,
        check=False,
    )
    stamps = [
        float(m.group(1))
        for m in re.finditer(
            rf"(\d+\.\d+) connect\(\d+, \{{sa_family=AF_INET, sin_port=htons\({server.port}\)",
            trace.read_text(errors="replace"),
        )
    ]
    first = server.first_command_at(user)
    return (
        min(stamps) - started_at if stamps else float("nan"),
        None if first is None else first - started_at,
    )


# ---------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------

TOOLS = ("mailrules", "mailrules-1c", "imapfilter", "bare")
DEFAULT_TOOLS = ("mailrules", "imapfilter", "bare")
#: user name prefix per tool (a user per tool, size and run); `mailrules:NAME` tools get x0, x1...
CODES = {"mailrules": "mr", "mailrules-1c": "m1", "imapfilter": "if", "bare": "ba"}


def tool_order(runs: list[Run]) -> list[str]:
    """The tools of `runs`: the known ones in TOOLS order, then the --alt variants."""
    seen = list(dict.fromkeys(r.tool for r in runs))
    return [t for t in TOOLS if t in seen] + [t for t in seen if t not in TOOLS]


def _med(values: list[float | None]) -> float:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else float("nan")


def summarize(runs: list[Run], sizes: list[int], n_rules: int) -> str:
    lines = []
    by: dict[tuple[str, int], list[Run]] = defaultdict(list)
    for r in runs:
        by[(r.tool, r.messages)].append(r)
    for n in sizes:
        lines.append(f"\n== {n:,} messages, {n_rules} rules, Dovecot 2.3 on loopback, STARTTLS ==")
        lines.append(
            f"{'tool':<12} {'wall s':>7} {'CPU s':>6} {'dovecot':>7} {'imap s':>7} {'1st cmd':>7} "
            f"{'KB in':>6} {'KB out':>7} {'runs':>4} {'commands':>8}  by kind"
        )
        med: dict[str, float] = {}
        cpu: dict[str, float] = {}
        dcpu: dict[str, float] = {}
        for tool in tool_order(runs):
            rs = by.get((tool, n))
            if not rs:
                continue
            med[tool] = statistics.median(r.seconds for r in rs)
            cpu[tool] = statistics.median(r.cpu for r in rs)
            dcpu[tool] = statistics.median(r.dovecot_cpu for r in rs)
            cmds = rs[0].commands
            kinds = ", ".join(f"{k} {v}" for k, v in cmds.most_common(6))
            imap_s = statistics.median(sum(r.server.values()) for r in rs)
            lines.append(
                f"{tool:<12} {med[tool]:>7.2f} {cpu[tool]:>6.2f} {dcpu[tool]:>7.2f} {imap_s:>7.2f} "
                f"{_med([r.first_command for r in rs]):>7.3f} {rs[0].bytes_in / 1e3:>6.0f} "
                f"{rs[0].bytes_out / 1e3:>7.0f} {len(rs):>4} {sum(cmds.values()):>8}  {kinds}"
            )
            if len(rs) > 1:
                lines.append(
                    f"{'':<12} runs: wall {'/'.join(f'{r.seconds:.2f}' for r in rs)}, "
                    f"CPU {'/'.join(f'{r.cpu:.2f}' for r in rs)}, "
                    f"dovecot {'/'.join(f'{r.dovecot_cpu:.2f}' for r in rs)}"
                )
        for mine in [t for t in tool_order(runs) if t.startswith("mailrules")]:
            if mine not in med:
                continue
            if mine != "mailrules" and "mailrules" in med:
                lines.append(
                    f"  {mine} / mailrules = {med[mine] / med['mailrules']:5.2f} wall, "
                    f"{cpu[mine] / max(cpu['mailrules'], 1e-3):5.2f} client CPU, "
                    f"{dcpu[mine] / max(dcpu['mailrules'], 1e-3):5.2f} Dovecot CPU"
                )
            for other in ("imapfilter", "bare"):
                if other in med:
                    ratio = med[mine] / med[other]
                    goal = 0.8 if other == "imapfilter" else 1.10
                    met = "met" if ratio <= goal else "NOT met"
                    lines.append(
                        f"  {mine} / {other:<10} = {ratio:5.2f} wall (goal <= {goal:.2f}: {met}), "
                        f"{cpu[mine] / max(cpu[other], 1e-3):5.2f} client CPU, "
                        f"{dcpu[mine] / max(dcpu[other], 1e-3):5.2f} Dovecot CPU"
                        + (" (goal <= 1.05)" if other == "bare" else "")
                    )
    lines.append(
        "  (wall: process start to exit; CPU: the tool's own process; dovecot: CPU of all Dovecot's "
        "processes meanwhile (/proc); imap s: summed time from each command's arrival at Dovecot to "
        "its tagged reply (rawlog); 1st cmd: process start to the first command after login; KB "
        "in/out: after login)"
    )
    for n in sizes:
        slow = [(tool, by[(tool, n)][0].server) for tool in tool_order(runs) if by.get((tool, n))]
        lines.append(f"\n== {n:,} messages: Dovecot seconds by command (first run) ==")
        for tool, server in slow:
            top = sorted(server.items(), key=lambda kv: -kv[1])[:6]
            lines.append(f"{tool:<12} " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    if len(sizes) > 1:
        lines.append("\n== commands by mailbox size (same rules): grows with rules, not messages? ==")
        lines.append(f"{'tool':<12} " + " ".join(f"{n:>10,}" for n in sizes))
        for tool in tool_order(runs):
            counts = [by[(tool, n)][0].total if by.get((tool, n)) else 0 for n in sizes]
            if any(counts):
                lines.append(f"{tool:<12} " + " ".join(f"{c:>10}" for c in counts))
    return "\n".join(lines)


def counts_table(fp: Fingerprint) -> str:
    return "  ".join(f"{name} {sum(c.values())}" for name, c in sorted(fp.items()) if sum(c.values()))


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    global TREE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=20_000, help="mailbox size (default 20000)")
    ap.add_argument(
        "--scale",
        type=int,
        nargs="*",
        default=[5_000],
        help="also run at these sizes (0 or none: skip; default 5000)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool and size, median reported")
    ap.add_argument(
        "--tools",
        default=",".join(DEFAULT_TOOLS),
        help="comma list of " + ",".join(TOOLS) + " (mailrules-1c: max_connections = 1, "
        "no search-ahead connection)",
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--rules",
        type=int,
        default=len(RULES),
        help=f"use the first N of the {len(RULES)} rules (command counts against rule count)",
    )
    ap.add_argument(
        "--rules-only",
        action="store_true",
        help="print the rule set as mailrules, imapfilter and bare see it; run nothing",
    )
    ap.add_argument(
        "--tree",
        type=Path,
        default=ROOT,
        help="run mailrules from this checkout (PYTHONPATH), e.g. a `git archive` of a commit",
    )
    ap.add_argument(
        "--alt",
        action="append",
        default=[],
        metavar="NAME=TREE",
        help="another checkout; tool `mailrules:NAME` (or `mailrules-1c:NAME`) runs it, "
        "alternating with the others (repeatable)",
    )
    ap.add_argument("--profile-tool", default="mailrules", help="the mailrules tool --profile runs")
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also N `mailrules run` processes per size under cProfile (CPU clock), stats summed",
    )
    ap.add_argument(
        "--profile-clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="the profiler's timer: the process's CPU time (default) or the wall clock",
    )
    ap.add_argument("--profile-dir", type=Path, help="keep the .pstats files here")
    ap.add_argument("--profile-top", type=int, default=30, help="functions listed per profile table")
    ap.add_argument(
        "--callgrind",
        action="store_true",
        help="also each tool once per size under valgrind --tool=callgrind: instructions",
    )
    ap.add_argument(
        "--imports",
        action="store_true",
        help="also one `mailrules run` under python -X importtime (first size)",
    )
    ap.add_argument(
        "--startup",
        type=int,
        default=0,
        metavar="N",
        help="also N runs per tool under strace: start to connect(), start to first command",
    )
    ap.add_argument("--keep", action="store_true", help="keep the Dovecot directory (rawlogs, logs)")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)
    TREE = args.tree.resolve()
    for alt in args.alt:
        name, _, path = alt.partition("=")
        TREES[name] = Path(path).resolve()

    rules = RULES[: args.rules]
    if args.rules_only:
        print(mailrules_text(rules))
        print(imapfilter_config(rules, 143, "USER", "PASSWORD"))
        print(bare_plan_text(rules))
        return 0

    import _dovecot

    from mailrules.demo.sample_mail import generate

    tools = [t for t in args.tools.split(",") if t]
    for i, t in enumerate(t for t in tools if ":" in t):
        CODES[t] = f"x{i}"
    unknown = [t for t in tools if base_tool(t) not in TOOLS or t.partition(":")[2] not in ("", *TREES)]
    if unknown:
        ap.error(f"unknown tool(s) {', '.join(unknown)}; known: {', '.join(TOOLS)} (+ :NAME of an --alt)")
    # The children import mailrules from these trees: compiled once here, as an installed wheel is
    # (with PYTHONDONTWRITEBYTECODE set, as in this project's environment and image, every run would
    # otherwise compile each module from source: ~0.15 s of CPU per process).
    for tree in {TREE, *TREES.values()}:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "mailrules")], check=True)
    sizes = [args.messages] + [n for n in args.scale if n and n != args.messages]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    users = [f"tpl{n}" for n in sizes]
    users += [f"{CODES[t]}{n}r{i}" for n in sizes for t in tools for i in range(args.repeat)]
    users += [f"pf{n}p{i}" for n in sizes for i in range(args.profile)]
    users += [f"cg{CODES[t]}{n}" for n in sizes for t in tools] if args.callgrind else []
    users += [f"st{CODES[t]}{i}" for t in tools for i in range(args.startup)]
    users += ["imports"]
    server = _dovecot.start(users)
    work = Path(tempfile.mkdtemp(prefix="mr-bench-work-"))
    print(
        f"Dovecot pid {server.proc.pid} on 127.0.0.1:{server.port}, data {server.directory}, work {work}; "
        f"mailrules from {TREE}"
    )
    runs: list[Run] = []
    extra: list[str] = []
    problems: list[str] = []
    try:
        for n in sizes:
            t0 = time.perf_counter()
            msgs = list(generate(n, seed=args.seed, now=now, years=3))
            msgs, moved = nudge_boundaries(msgs, now, dt.timedelta(hours=3))
            raw_mb = sum(len(m.raw) for m in msgs) / 1e6
            gen = time.perf_counter() - t0
            took = seed(server, f"tpl{n}", msgs)
            print(
                f"{n:,} messages ({raw_mb:.0f} MB; {moved} INTERNALDATEs moved off age-rule day "
                f"boundaries): generated in {gen:.1f} s, appended in {took:.1f} s"
            )
            for i in range(args.repeat):
                # rotate the order so no tool always runs first (page cache, Dovecot warm-up)
                order = tools[i % len(tools) :] + tools[: i % len(tools)]
                for tool in order:
                    user = f"{CODES[tool]}{n}r{i}"
                    server.clone_user(f"tpl{n}", user)
                    run = run_tool(tool, server, user, work, rules, n)
                    if i == 0:
                        run.fp = fingerprint(server, user)
                    runs.append(run)
                    status = f"FAILED {run.note}" if run.note else "ok"
                    print(
                        f"  {tool:<12} run {i + 1}: {run.seconds:6.2f} s wall, {run.cpu:6.2f} s CPU, "
                        f"Dovecot {run.dovecot_cpu:5.2f} s CPU, {sum(run.server.values()):6.2f} s imap, "
                        f"{run.total:5} commands  {status}"
                    )
            firsts = {r.tool: r for r in runs if r.messages == n and r.fp}
            ref = firsts.get("bare") or next(iter(firsts.values()), None)
            if ref is not None:
                print(f"  final state ({ref.tool}): {counts_table(ref.fp)}")
            for tool, r in firsts.items():
                if ref is None or r is ref:
                    continue
                d = diff_fingerprints(ref.fp, r.fp)
                if d:
                    problems.append(
                        f"{n} messages: {ref.tool} and {tool} end in different states:\n  " + "\n  ".join(d)
                    )
                    print(f"  final state of {tool}: DIFFERS from {ref.tool} (see below)")
                else:
                    print(
                        f"  final state of {tool}: identical to {ref.tool} (every message, mailbox and flag)"
                    )
            if args.callgrind:
                for tool in tools:
                    user = f"cg{CODES[tool]}{n}"
                    server.clone_user(f"tpl{n}", user)
                    wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.{user}"]
                    run = run_tool(tool, server, user, work, rules, n, wrap=wrap)
                    ir = callgrind_instructions(work / f"{tool}-{user}.log")
                    failed = f"  FAILED {run.note}" if run.note else ""
                    extra.append(
                        f"callgrind {n:>6,} {tool:<12} {ir or 0:>15,} instructions"
                        f"  ({run.seconds:.0f} s under valgrind){failed}"
                    )
                    print("  " + extra[-1])
            if args.profile:
                import pstats

                files = []
                cpus = []
                for i in range(args.profile):
                    user = f"pf{n}p{i}"
                    server.clone_user(f"tpl{n}", user)
                    out = (args.profile_dir or work) / f"mailrules-{n}-{i}.pstats"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    wall, cpu = profile_mailrules(
                        server, user, work, rules, out, args.profile_clock, args.profile_tool
                    )
                    files.append(out)
                    cpus.append(cpu)
                    print(f"  profile {i + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU under cProfile -> {out}")
                merged = (args.profile_dir or work) / f"mailrules-{n}.pstats"
                stats = pstats.Stats(*map(str, files))
                stats.dump_stats(str(merged))
                extra.append(
                    f"\n== cProfile of `mailrules run`, {n:,} messages: {args.profile} process(es) "
                    f"summed, {args.profile_clock} clock; CPU under the profiler "
                    f"{'/'.join(f'{c:.2f}' for c in cpus)} s ==\n"
                    + profile_report(merged, args.profile_top, tree_of(args.profile_tool))
                )
        if args.imports:
            server.clone_user(f"tpl{sizes[-1]}", "imports")
            extra.append(
                "\n== imports, `python -X importtime -m mailrules run` on "
                f"{sizes[-1]:,} messages ==\n" + import_times(server, "imports", work, rules, 40)
            )
        if args.startup:
            extra.append(
                "\n== process start to connect() and to the first command after login (strace), s =="
            )
            for tool in tools:
                got = []
                for i in range(args.startup):
                    user = f"st{CODES[tool]}{i}"
                    server.clone_user(f"tpl{sizes[-1]}", user)
                    got.append(connect_time(server, user, work, rules, tool))
                extra.append(
                    f"{tool:<12} connect {_med([g[0] for g in got]):.3f} "
                    f"({'/'.join(f'{g[0]:.3f}' for g in got)}), first command "
                    f"{_med([g[1] for g in got]):.3f} ({'/'.join(f'{g[1] or 0:.3f}' for g in got)})"
                )
        if dt.datetime.now(dt.UTC).date() != now.date():
            problems.append("the run crossed midnight UTC: imapfilter's is_older(N) moved by a day")
        print(summarize(runs, sizes, len(rules)))
        for line in extra:
            print(line)
        for p in problems:
            print("\nPROBLEM: " + p)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    [
                        {
                            "tool": r.tool,
                            "messages": r.messages,
                            "seconds": round(r.seconds, 3),
                            "cpu": round(r.cpu, 3),
                            "dovecot_cpu": round(r.dovecot_cpu, 3),
                            "first_command": None if r.first_command is None else round(r.first_command, 4),
                            "bytes_in": r.bytes_in,
                            "bytes_out": r.bytes_out,
                            "server": {k: round(v, 3) for k, v in r.server.items()},
                            "commands": dict(r.commands),
                            "note": r.note,
                        }
                        for r in runs
                    ],
                    indent=1,
                )
            )
    finally:
        _dovecot.stop(server, keep=args.keep)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if problems or any(r.note for r in runs) else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_bare":
        host, port, user, password, ca, count = sys.argv[2:8]
        bare_main(host, int(port), user, password, ca, RULES[: int(count)])
        sys.exit(0)
    sys.exit(main())
