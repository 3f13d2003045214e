"""Benchmark: mailrules vs imapfilter vs a bare imaplib script, same 20 rules, same mailbox, on Dovecot.

    .venv/bin/python bench/run_bench.py                  # 20,000 messages, scaling run at 5,000
    .venv/bin/python bench/run_bench.py --messages 5000 --scale 0 --repeat 3
    .venv/bin/python bench/run_bench.py --rules-only     # print the three rule sets, run nothing
    .venv/bin/python bench/run_bench.py --profile        # + mailrules in-process under cProfile

A private Dovecot 2.3 on loopback (bench/_dovecot.py) gets one "template" user seeded by MULTIAPPEND
with `mailrules.demo.sample_mail.generate(N, seed, years=3)` (flags and INTERNALDATE kept); every run
then gets a fresh user holding a `cp -a` of the template's maildir (same messages, UIDs, flags and
Dovecot indexes). Each tool runs as its own process over STARTTLS with certificate checks:

* mailrules: `mailrules run --config ...` (the CLI: rules loaded and checked, journal in SQLite,
  one INFO log line per action to a file);
* imapfilter: a generated Lua config, `imapfilter -t <ca> -c <config>`;
* bare: this file's `_bare` mode, plain imaplib: one UID SEARCH per rule and one UID STORE / UID MOVE
  per action, with the rule set's meaning hard-coded (no parsing, no journal, no per-message work
  except where a regex and a template destination make it unavoidable).

Commands are counted from Dovecot's rawlog of each user (the same counter for all three), wall
time is from process start to exit. The final state of every run (per mailbox: Message-ID, \\Seen,
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
    BenchRule("CI failures stay visible",
              'from contains "builds@ci.example.com" and subject contains "failed"', "flag",
              "box:contain_from('builds@ci.example.com') * box:contain_subject('failed')",
              ("mark_flagged()",),
              'FROM "builds@ci.example.com" SUBJECT "failed"', (("flag", "\\Flagged"),)),
    BenchRule("CI passes",
              'from contains "builds@ci.example.com" and subject contains "passed"',
              'mark read; move to "CI"',
              "box:contain_from('builds@ci.example.com') * box:contain_subject('passed')",
              ("mark_seen()", "move_messages(account['CI'])"),
              'FROM "builds@ci.example.com" SUBJECT "passed"', (("flag", "\\Seen"), ("move", "CI"))),
    BenchRule("GitHub, read",
              'from contains "notifications@github.com" and seen', 'move to "GitHub/Read"',
              "box:contain_from('notifications@github.com') * box:is_seen()",
              ("move_messages(account['GitHub/Read'])",),
              'FROM "notifications@github.com" SEEN', (("move", "GitHub/Read"),)),
    BenchRule("GitHub",
              'header "X-GitHub-Reason" exists', 'move to "GitHub"',
              "box:contain_field('X-GitHub-Reason', '')", ("move_messages(account['GitHub'])",),
              'HEADER X-GitHub-Reason ""', (("move", "GitHub"),)),
    BenchRule("Old list mail",
              'header "List-Id" exists and older than 365 days', "archive",
              "box:contain_field('List-Id', '') * box:is_older(365)", ("move_messages(account['Archive'])",),
              f'HEADER List-Id "" OLDER {365 * DAY}', (("move", "Archive"),)),
    BenchRule("Lists",
              r"list matches /^([a-z0-9-]+)\./", 'move to "Lists/{match.1}"',
              "", (), 'HEADER List-Id ""', (), special="lists"),
    BenchRule("Invoices",
              'from contains "billing@hosting.example.net" and subject contains "invoice"',
              'flag; move to "Finance/Invoices"',
              "box:contain_from('billing@hosting.example.net') * box:contain_subject('invoice')",
              ("mark_flagged()", "move_messages(account['Finance/Invoices'])"),
              'FROM "billing@hosting.example.net" SUBJECT "invoice"',
              (("flag", "\\Flagged"), ("move", "Finance/Invoices"))),
    BenchRule("Factures",
              'from contains "billing@hosting.example.net"', 'move to "Finance/Factures"',
              "box:contain_from('billing@hosting.example.net')",
              ("move_messages(account['Finance/Factures'])",),
              'FROM "billing@hosting.example.net"', (("move", "Finance/Factures"),)),
    BenchRule("Receipts",
              'from contains "store@shop.example.com"', 'mark read; move to "Finance/Receipts"',
              "box:contain_from('store@shop.example.com')",
              ("mark_seen()", "move_messages(account['Finance/Receipts'])"),
              'FROM "store@shop.example.com"', (("flag", "\\Seen"), ("move", "Finance/Receipts"))),
    BenchRule("Read newsletters",
              'header "List-Unsubscribe" exists and seen', "delete",
              "box:contain_field('List-Unsubscribe', '') * box:is_seen()",
              ("move_messages(account['Trash'])",),
              'HEADER List-Unsubscribe "" SEEN', (("move", "Trash"),)),
    BenchRule("Newsletters",
              'header "List-Unsubscribe" exists', 'move to "Later"',
              "box:contain_field('List-Unsubscribe', '')", ("move_messages(account['Later'])",),
              'HEADER List-Unsubscribe ""', (("move", "Later"),)),
    BenchRule("Marketing",
              'header "Precedence" contains "bulk"', "mark read; delete",
              "box:contain_field('Precedence', 'bulk')", ("mark_seen()", "move_messages(account['Trash'])"),
              'HEADER Precedence "bulk"', (("flag", "\\Seen"), ("move", "Trash"))),
    BenchRule("Big mail",
              "size > 1000000", 'move to "Big"',
              "box:is_larger(1000000)", ("move_messages(account['Big'])",),
              "LARGER 1000000", (("move", "Big"),)),
    BenchRule("Mum",
              'from contains "mum@family.example"', "flag",
              "box:contain_from('mum@family.example')", ("mark_flagged()",),
              'FROM "mum@family.example"', (("flag", "\\Flagged"),)),
    BenchRule("Quarterly numbers",
              'from contains "alice@work.example" and subject contains "Quarterly"', 'move to "Work/Reports"',
              "box:contain_from('alice@work.example') * box:contain_subject('Quarterly')",
              ("move_messages(account['Work/Reports'])",),
              'FROM "alice@work.example" SUBJECT "Quarterly"', (("move", "Work/Reports"),)),
    BenchRule("Work",
              'from contains "alice@work.example"', 'mark read; move to "Work"',
              "box:contain_from('alice@work.example')", ("mark_seen()", "move_messages(account['Work'])"),
              'FROM "alice@work.example"', (("flag", "\\Seen"), ("move", "Work"))),
    BenchRule("Café",
              'subject contains "Café"', "flag",
              "box:contain_subject('Café')", ("mark_flagged()",),
              "SUBJECT {utf8}", (("flag", "\\Flagged"),), utf8="Café"),
    BenchRule("Old flagged",
              "flagged and older than 730 days", 'move to "Keep"',
              "box:is_flagged() * box:is_older(730)", ("move_messages(account['Keep'])",),
              f"FLAGGED OLDER {730 * DAY}", (("move", "Keep"),)),
    BenchRule("Old read mail",
              "seen and not flagged and older than 180 days", "archive",
              "box:is_seen() * box:is_unflagged() * box:is_older(180)",
              ("move_messages(account['Archive'])",),
              f"SEEN UNFLAGGED OLDER {180 * DAY}", (("move", "Archive"),)),
    BenchRule("Stale unread",
              "not seen and older than 14 days", "mark read",
              "box:is_unseen() * box:is_older(14)", ("mark_seen()",),
              f"UNSEEN OLDER {14 * DAY}", (("flag", "\\Seen"),)),
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
            "UID FETCH (List-Id) -> regex -> one UID MOVE per Lists/<name>" if r.special else "")
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

    params = ConnectionParams("127.0.0.1", server.port, "starttls", user, server.users[user],
                              ca_file=str(server.ca_file), timeout=300)
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
        lines.append(f"{name}: {sum(x.values())} vs {sum(y.values())} messages; "
                     f"{sum(only_a.values())} only in the first, {sum(only_b.values())} only in the second")
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

    @property
    def total(self) -> int:
        return sum(self.commands.values())


Rules = tuple[BenchRule, ...]


def write_mailrules_config(work: Path, server: Any, user: str, rule_set: Rules = RULES) -> Path:
    rules = work / "rules.d"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "bench.rules").write_text(mailrules_text(rule_set), encoding="utf-8")
    config = work / f"mailrules-{user}.toml"
    config.write_text(
        f'rules = "{rules}"\nstate = "{work / f"state-{user}.db"}"\ntimezone = "UTC"\n\n'
        '[metrics]\nlisten = ""\n\n'
        f'[accounts.bench]\nhost = "127.0.0.1"\nport = {server.port}\ntls = "starttls"\n'
        f'ca_file = "{server.ca_file}"\nusername = "{user}"\npassword = "{server.users[user]}"\n'
        'create_mailboxes = true\n'
    )
    return config


def run_tool(tool: str, server: Any, user: str, work: Path, rules: Rules) -> tuple[float, float, str]:
    """Start `tool` against `user`, wait for it; (wall seconds, its CPU seconds, note)."""
    env = dict(os.environ)
    if tool == "mailrules":
        config = write_mailrules_config(work, server, user, rules)
        cmd = [str(Path(sys.executable).parent / "mailrules"), "run", "--config", str(config)]
    elif tool == "imapfilter":
        lua = work / f"imapfilter-{user}.lua"
        lua.write_text(imapfilter_config(rules, server.port, user, server.users[user]), encoding="utf-8")
        env["HOME"] = str(work)  # its certificates file and history stay in the work directory
        cmd = ["imapfilter", "-t", str(server.ca_file), "-c", str(lua)]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_bare", "127.0.0.1", str(server.port), user,
               server.users[user], str(server.ca_file), str(len(rules))]
    log = work / f"{tool}-{user}.log"
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:]
        return seconds, cpu, f"exit {proc.returncode}: {tail}"
    return seconds, cpu, ""


def profile_mailrules(server: Any, user: str, work: Path, rules: Rules, top: int) -> str:
    """mailrules' run_rules in this process under cProfile; the hot spots as text."""
    import cProfile
    import io
    import logging
    import pstats

    from mailrules.commands.run import open_store, run_rules
    from mailrules.config import load_config
    from mailrules.dsl.loader import load_rule_set

    config = write_mailrules_config(work, server, user, rules)
    settings = load_config(config)
    rule_set = load_rule_set(settings.rules).rule_set
    logging.getLogger().handlers[:] = [logging.FileHandler(work / "profile.log")]
    logging.getLogger().setLevel(logging.INFO)
    prof = cProfile.Profile()
    started = time.perf_counter()
    with open_store(settings) as state:
        prof.enable()
        run_rules(settings, rule_set.rules, state=state)
        prof.disable()
    seconds = time.perf_counter() - started
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return f"run_rules under cProfile: {seconds:.2f} s wall\n" + buf.getvalue()


# ---------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------

TOOLS = ("mailrules", "imapfilter", "bare")


def summarize(runs: list[Run], sizes: list[int], n_rules: int) -> str:
    lines = []
    by: dict[tuple[str, int], list[Run]] = defaultdict(list)
    for r in runs:
        by[(r.tool, r.messages)].append(r)
    for n in sizes:
        lines.append(f"\n== {n:,} messages, {n_rules} rules, Dovecot 2.3 on loopback, STARTTLS ==")
        lines.append(f"{'tool':<11} {'wall s':>7} {'CPU s':>6} {'imap s':>7} {'runs':>5} {'commands':>9}  "
                     "by kind")
        med: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for tool in TOOLS:
            rs = by.get((tool, n))
            if not rs:
                continue
            med[tool] = statistics.median(r.seconds for r in rs)
            cpu[tool] = statistics.median(r.cpu for r in rs)
            cmds = rs[0].commands
            kinds = ", ".join(f"{k} {v}" for k, v in cmds.most_common(6))
            all_s = "/".join(f"{r.seconds:.2f}" for r in rs)
            imap_s = statistics.median(sum(r.server.values()) for r in rs)
            lines.append(f"{tool:<11} {med[tool]:>7.2f} {cpu[tool]:>6.2f} {imap_s:>7.2f} {len(rs):>5} "
                         f"{sum(cmds.values()):>9}  {kinds}"
                         + (f"  [{all_s}]" if len(rs) > 1 else ""))
        if "mailrules" in med:
            for other in ("imapfilter", "bare"):
                if other in med:
                    ratio = med["mailrules"] / med[other]
                    goal = "goal < 1.00" if other == "imapfilter" else "goal <= 1.10"
                    met = "met" if ratio <= (1.0 if other == "imapfilter" else 1.10) else "NOT met"
                    lines.append(f"  mailrules / {other:<10} = {ratio:5.2f} wall ({goal}: {met}), "
                                 f"{cpu['mailrules'] / max(cpu[other], 1e-3):5.2f} client CPU")
    lines.append("  (wall: process start to exit; CPU: the tool's own process; imap s: summed time from each "
                 "command's arrival at Dovecot to its tagged reply, from the rawlog)")
    for n in sizes:
        slow = [(tool, by[(tool, n)][0].server) for tool in TOOLS if by.get((tool, n))]
        lines.append(f"\n== {n:,} messages: Dovecot seconds by command (first run) ==")
        for tool, server in slow:
            top = sorted(server.items(), key=lambda kv: -kv[1])[:5]
            lines.append(f"{tool:<11} " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    if len(sizes) > 1:
        lines.append("\n== commands by mailbox size (same rules): grows with rules, not messages? ==")
        lines.append(f"{'tool':<11} " + " ".join(f"{n:>10,}" for n in sizes))
        for tool in TOOLS:
            counts = [by[(tool, n)][0].total if by.get((tool, n)) else 0 for n in sizes]
            lines.append(f"{tool:<11} " + " ".join(f"{c:>10}" for c in counts))
    return "\n".join(lines)


def counts_table(fp: Fingerprint) -> str:
    return "  ".join(f"{name} {sum(c.values())}" for name, c in sorted(fp.items()) if sum(c.values()))


# ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=20_000, help="mailbox size (default 20000)")
    ap.add_argument("--scale", type=int, default=5_000,
                    help="also run at this size to compare command counts (0: skip; default 5000)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool and size, median reported")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma list of mailrules,imapfilter,bare")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rules", type=int, default=len(RULES),
                    help=f"use the first N of the {len(RULES)} rules (command counts against rule count)")
    ap.add_argument("--rules-only", action="store_true",
                    help="print the rule set as mailrules, imapfilter and bare see it; run nothing")
    ap.add_argument("--profile", action="store_true", help="also profile mailrules in-process (cProfile)")
    ap.add_argument("--keep", action="store_true", help="keep the Dovecot directory (rawlogs, logs)")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)

    rules = RULES[: args.rules]
    if args.rules_only:
        print(mailrules_text(rules))
        print(imapfilter_config(rules, 143, "USER", "PASSWORD"))
        print(bare_plan_text(rules))
        return 0

    import _dovecot

    from mailrules.demo.sample_mail import generate

    tools = [t for t in args.tools.split(",") if t]
    sizes = [args.messages] + ([args.scale] if args.scale and args.scale != args.messages else [])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    users = [f"tpl{n}" for n in sizes]
    users += [f"{t[:2]}{n}r{i}" for n in sizes for t in tools for i in range(args.repeat)]
    users += ["prof"]
    server = _dovecot.start(users)
    work = Path(tempfile.mkdtemp(prefix="mr-bench-work-"))
    print(f"Dovecot pid {server.proc.pid} on 127.0.0.1:{server.port}, data {server.directory}, work {work}")
    runs: list[Run] = []
    problems: list[str] = []
    try:
        for n in sizes:
            t0 = time.perf_counter()
            msgs = list(generate(n, seed=args.seed, now=now, years=3))
            msgs, moved = nudge_boundaries(msgs, now, dt.timedelta(hours=3))
            raw_mb = sum(len(m.raw) for m in msgs) / 1e6
            gen = time.perf_counter() - t0
            took = seed(server, f"tpl{n}", msgs)
            print(f"{n:,} messages ({raw_mb:.0f} MB; {moved} INTERNALDATEs moved off age-rule day "
                  f"boundaries): generated in {gen:.1f} s, appended in {took:.1f} s")
            for i in range(args.repeat):
                # rotate the order so no tool always runs first (page cache, Dovecot warm-up)
                order = tools[i % len(tools):] + tools[: i % len(tools)]
                for tool in order:
                    user = f"{tool[:2]}{n}r{i}"
                    server.clone_user(f"tpl{n}", user)
                    seconds, cpu, note = run_tool(tool, server, user, work, rules)
                    run = Run(tool, n, seconds, cpu, server.count_commands(user),
                              server.server_seconds(user), note=note)
                    if i == 0:
                        run.fp = fingerprint(server, user)
                    runs.append(run)
                    status = f"FAILED {note}" if note else "ok"
                    print(f"  {tool:<10} run {i + 1}: {seconds:6.2f} s wall, {cpu:6.2f} s CPU, "
                          f"{sum(run.server.values()):6.2f} s in Dovecot, {run.total:6} commands  {status}")
            firsts = {r.tool: r for r in runs if r.messages == n and r.fp}
            ref = firsts.get("bare") or next(iter(firsts.values()))
            print(f"  final state ({ref.tool}): {counts_table(ref.fp)}")
            for tool, r in firsts.items():
                if r is ref:
                    continue
                d = diff_fingerprints(ref.fp, r.fp)
                if d:
                    problems.append(f"{n} messages: {ref.tool} and {tool} end in different states:\n  "
                                    + "\n  ".join(d))
                    print(f"  final state of {tool}: DIFFERS from {ref.tool} (see below)")
                else:
                    print(f"  final state of {tool}: identical to {ref.tool} "
                          "(every message, mailbox and flag)")
        if dt.datetime.now(dt.UTC).date() != now.date():
            problems.append("the run crossed midnight UTC: imapfilter's is_older(N) moved by a day")
        print(summarize(runs, sizes, len(rules)))
        for p in problems:
            print("\nPROBLEM: " + p)
        if args.profile:
            server.clone_user(f"tpl{sizes[0]}", "prof")
            print("\n" + profile_mailrules(server, "prof", work, rules, 25))
        if args.json:
            Path(args.json).write_text(json.dumps([
                {"tool": r.tool, "messages": r.messages, "seconds": round(r.seconds, 3),
                 "cpu": round(r.cpu, 3), "server": {k: round(v, 3) for k, v in r.server.items()},
                 "commands": dict(r.commands), "note": r.note} for r in runs], indent=1))
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
