"""Differential: `run_rules` on a real Dovecot ends where the naive per-message oracle does (language.md §6).

Each case draws a random rule set and a generated mailbox from its seed, appends the mailbox to a fresh
Dovecot user and to a FakeServer, runs the set-based engine through ImapStore (real SEARCH, FETCH, MOVE,
STORE, UID EXPUNGE, real SMTP to a sink) and `tests.fakes.oracle` on the fake, and compares which
messages (by bytes) are in which mailbox with which flags, and what was forwarded or redirected.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
from pathlib import Path

import pytest

from mailrules.dsl import ast as A
from mailrules.engine import AccountContext
from mailrules.imap.session import ImapSession
from mailrules.runner import mailboxes_of, run_rules
from mailrules.sample_mail import generate
from mailrules.semantics import EvalContext
from tests.fakes import FakeServer, RecordingSender, oracle
from tests.integration.helpers import Received, append, load, placement, smtp_sink, snapshot, write_config
from tests.integration.servers import DovecotServer

pytestmark = pytest.mark.integration

#: more cases for a bug hunt: MAILRULES_DIFF_CASES=200
CASES = int(os.environ.get("MAILRULES_DIFF_CASES", "10"))

CONDITIONS = [
    'from contains "github.com"',
    'from is "bob@example.com"',
    'from domain is "example.com"',
    'subject contains "invoice"',
    "subject matches /\\[([a-z-]+)\\]/",
    'subject starts with "["',
    "list matches /<([a-z0-9-]+)\\./",
    'list contains "python"',
    'header "Precedence" is "bulk"',
    'header "X-GitHub-Reason" exists',
    "seen",
    "unseen",
    "flagged",
    'tagged "$Work"',
    "has attachment",
    "attachment name matches /\\.pdf$/",
    "size > 2 KB",
    "older than 60 days",
    "newer than 2 years",
    "received before 2025-01-01",
    "sent after 2024-06-01",
    'body contains "discussion"',
    'to is "me@example.com"',
    "all",
]
ACTIONS = [
    'move to "A"',
    'move to "M/{year}-{month}"',
    'copy to "C"',
    'copy to "A"',
    "archive",
    'archive to "Y/{year}"',
    "delete",
    "delete permanently",
    "mark read",
    "mark unread",
    "flag",
    "unflag",
    'tag "$Work"',
    'untag "$Work"',
    'forward to "f@example.net"',
    'redirect to "r@example.net"',
    "stop",
]


def rule_set(rng: random.Random) -> str:
    out = []
    for i in range(rng.randint(2, 5)):
        conds = rng.sample(CONDITIONS, rng.randint(1, 3))
        cond = conds[0] + "".join(rng.choice([" and ", " or ", " and not "]) + c for c in conds[1:])
        pool = ACTIONS + (['move to "Lists/{match.1}"'] * 3 if any("(" in c for c in conds) else [])
        acts = [rng.choice(pool) for _ in range(rng.randint(1, 3))]
        scope = rng.choice(["", "", "", ' in "INBOX", "A"'])
        out.append(f'rule "r{i}"{scope} {{ when {cond} then {", ".join(acts)} }}')
    return "\n".join(out) + "\n"


def recovered(sent: list[Received], originals: list[bytes]) -> list[tuple[str, str, bytes]]:
    """(kind, recipient, original bytes) of what the sink got, as `oracle` reports sends."""
    # SMTP carries CRLF lines only: a bare LF in the original (the generator's base64 ends with
    # one) goes out as CRLF, RFC 5321 §2.3.8.
    on_wire = [(re.sub(rb"(?<!\r)\n", b"\r\n", o), o) for o in originals]
    out = []
    for m in sent:
        (to,) = m.rcpt_tos
        if b"Content-Type: message/rfc822" in m.content:
            kind = "forward"
            found = [o for w, o in on_wire if w + b"\r\n--=_mailrules_" in m.content]
        else:
            kind = "redirect"
            found = [o for w, o in on_wire if m.content.endswith(w)]
        assert len(found) == 1, m.content[:3000]
        out.append((kind, to, found[0]))
    return sorted(out)


@pytest.mark.parametrize("seed", range(CASES))
def test_run_on_dovecot_equals_per_message_oracle(dovecot: DovecotServer, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    text = rule_set(rng)
    messages = []
    for s in generate(rng.randint(30, 60), seed=seed, now=now):
        flags = list(s.flags) + (["$Work"] if rng.random() < 0.2 else [])
        messages.append((s.raw, flags, s.internaldate))

    params = dovecot.params(*dovecot.fresh_user())
    assert not any(append(params, "INBOX", messages))
    with ImapSession.connect(params) as s:
        s.create("A")
    fake = FakeServer()
    for raw, flags, when in messages:
        fake.append("INBOX", raw, flags, when)
    fake.mailbox("A")

    with smtp_sink() as (sink, port):
        settings, rules = load(write_config(tmp_path, params, text, smtp_port=port))
        result = run_rules(settings, rules, now=now)
    assert not result.errors, result.errors

    order = mailboxes_of(rules, "main")
    account = AccountContext("main", sender=RecordingSender())
    expected_sent = oracle(fake, rules, account, order, EvalContext(now, dt.UTC, "/"))
    got = placement(snapshot(params))
    expected = fake.state()
    assert _diff(got, expected) == [], f"rules:\n{text}"
    originals = [raw for raw, _, _ in messages]
    assert recovered(sink.messages, originals) == expected_sent, f"rules:\n{text}"
    _check_failures_are_template_errors(result.reports, rules)


def _diff(
    got: dict[str, list[tuple[bytes, frozenset[str]]]],
    expected: dict[str, list[tuple[bytes, frozenset[str]]]],
) -> list[str]:
    """Readable differences: mailbox, Message-ID line, flags."""

    def label(raw: bytes) -> str:
        for line in raw.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                return line.decode(errors="replace")
        return repr(raw[:60])

    out = []
    for name in sorted(set(got) | set(expected)):
        g = sorted((label(r), sorted(f)) for r, f in got.get(name, []))
        e = sorted((label(r), sorted(f)) for r, f in expected.get(name, []))
        for item in g:
            if item not in e:
                out.append(f"{name}: engine has {item}")
        for item in e:
            if item not in g:
                out.append(f"{name}: oracle has {item}")
    return out


def _check_failures_are_template_errors(reports: list, rules: tuple[A.Rule, ...]) -> None:
    # The only failures a healthy server allows are templates that cannot be filled ({match.1} of a
    # rule whose `matches` test did not match, a missing List-Id...): never an IMAP or SMTP error.
    for r in reports:
        for rr in r.rules:
            for key, n in rr.outcomes.items():
                if key.endswith(" failed"):
                    assert key.split()[0] in ("move", "copy", "archive"), (rr.rule, key, n)
