"""The Gmail dialect held to Google's documented transcripts (no Gmail is reachable from the tests).

Transcripts: Google, "IMAP Extensions" (developers.google.com/workspace/gmail/imap/imap-extensions):
    a010 FETCH 1:4 (X-GM-LABELS)
    * 1 FETCH (X-GM-LABELS (\\Inbox \\Sent Important "Muy Importante"))
    * 2 FETCH (X-GM-LABELS (foo))
    * 3 FETCH (X-GM-LABELS ())
    * 4 FETCH (X-GM-LABELS (\\Drafts))
    a011 STORE 1 +X-GM-LABELS (foo)
    * 1 FETCH (X-GM-LABELS (\\Inbox \\Sent Important "Muy Importante" foo))
    a012 SEARCH X-GM-LABELS foo
    * SEARCH 1 2
    a005 SEARCH X-GM-RAW "has:attachment in:unread"
    a006 FETCH 1 (X-GM-MSGID)
    * 1 FETCH (X-GM-MSGID 1278455344230334865)
The command writer must produce the documented bytes (with UID, as mailrules only sends UID
commands), and the parsers must read the documented answers.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imapclient import imap_utf7

from mailrules.compile import Dialect, FetchNeeds, plan_condition
from mailrules.compile import keys as K
from mailrules.compile.dialect import GMAIL_CAPS as GMAIL_CAPABILITIES
from mailrules.compile.gmail import age_query, list_query
from mailrules.compile.reference import search_matches
from mailrules.compile.serialize import SearchKeyError, label_arg, mutf7_encode, render, serialize
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text
from mailrules.dsl.semantics import EvalContext
from mailrules.engine.core import Engine
from mailrules.engine.ports import AccountContext, RunOptions
from mailrules.imap import gmail
from mailrules.imap.commands import SelectInfo
from mailrules.imap.dialects import describe_dialect
from mailrules.imap.session import ImapSession
from mailrules.imap.store import ImapStore
from mailrules.message.view import MessageView
from mailrules.source import Span
from tests.fakes import FakeServer, FakeStore, RecordingSender, oracle
from tests.unit.test_imap_writer import PARAMS, FakeClient, FakeImap, Handler

S = Span("gmail.rules", 1, 1)
NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
GMAIL = Dialect.named("gmail")


def plan(c: A.Condition) -> tuple[str, A.Condition | None]:
    p = plan_condition(c, GMAIL, NOW, dt.UTC)
    return render(serialize(p.server)), p.residual


# -- labels on the wire -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["foo", "Muy Importante", "Réunions", "日本語", "a&b", "Été/Hiver", "~x^", "&", "Ω&é", "tab\there"],
)
def test_modified_utf7_agrees_with_imapclient(name: str) -> None:
    assert mutf7_encode(name) == imap_utf7.encode(name).decode("ascii")
    assert imap_utf7.decode(mutf7_encode(name).encode("ascii")) == name


@pytest.mark.parametrize(
    ("label", "wire"),
    [
        ("foo", b"foo"),  # as in `a012 SEARCH X-GM-LABELS foo`
        ("Muy Importante", b'"Muy Importante"'),  # as Gmail writes it in its FETCH answer
        ("\\Inbox", b"\\Inbox"),  # system labels in the flag form of `(\Inbox \Sent ...)`
        ("\\Important", b"\\Important"),
        ("Réunions", b"R&AOk-unions"),  # "encoded in UTF-7 as appropriate"
        ("Clients/Acme Corp", b'"Clients/Acme Corp"'),
        ('say "hi"', b'"say \\"hi\\""'),
        ("nil", b'"nil"'),  # never the NIL atom
        ("50%", b'"50%"'),
    ],
)
def test_label_arguments(label: str, wire: bytes) -> None:
    assert label_arg(label) == wire


@pytest.mark.parametrize("bad", ["", "a\r\nb", "x\x00"])
def test_unsendable_labels_are_refused(bad: str) -> None:
    with pytest.raises(SearchKeyError):
        label_arg(bad)


def test_search_by_label_is_the_documented_key() -> None:
    assert serialize(K.GmLabels("foo")) == [b"X-GM-LABELS foo"]
    assert serialize(K.not_(K.GmLabels("Muy Importante"))) == [b'NOT X-GM-LABELS "Muy Importante"']


def test_raw_search_is_the_documented_key() -> None:
    assert serialize(K.GmRaw("has:attachment in:unread")) == [b'X-GM-RAW "has:attachment in:unread"']


# -- the planner's Gmail dialect ----------------------------------------------------------------------


def tagged(name: str) -> A.KeywordTest:
    return A.KeywordTest(name, S)


@pytest.mark.parametrize(
    ("name", "search", "exact"),
    [
        ("$Work", "X-GM-LABELS $Work", True),
        ("Muy Importante", 'X-GM-LABELS "Muy Importante"', True),
        ("\\Important", "X-GM-LABELS \\Important", True),
        ("\\Starred", "X-GM-LABELS \\Starred", True),
        ("\\Seen", "SEEN", True),  # an IMAP system flag stays a flag
        ("Réunions", "ALL", False),  # non-ASCII: labels fetched and compared here
    ],
)
def test_tagged_reads_labels(name: str, search: str, exact: bool) -> None:
    text, residual = plan(tagged(name))
    assert text == search
    assert (residual is None) == exact


def test_not_tagged_is_pushed_down() -> None:
    assert plan(A.Not(tagged("done"), S)) == ("NOT X-GM-LABELS done", None)


def test_tagged_elsewhere_stays_a_keyword() -> None:
    p = plan_condition(tagged("$Work"), Dialect.named("dovecot"), NOW, dt.UTC)
    assert render(serialize(p.server)) == "KEYWORD $Work"


@pytest.mark.parametrize(
    ("older", "amount", "unit", "query"),
    [
        (True, 3, "days", "older_than:2d"),
        (True, 36, "hours", None),  # a day and a half: no whole day to spare
        (True, 30, "minutes", None),
        (False, 7, "days", "newer_than:8d"),
        (False, 2, "hours", "newer_than:2d"),
        (True, 1, "years", "older_than:365d"),  # 2023-05-01 .. 2024-05-01 is 366 days
    ],
)
def test_age_queries_are_a_day_wider(older: bool, amount: int, unit: str, query: str | None) -> None:
    assert age_query(older, amount, unit, NOW, dt.UTC) == query


@pytest.mark.parametrize(
    ("value", "query"),
    [
        ("python-dev.python.org", "list:python-dev.python.org"),
        ("dev.lists.example.org", "list:dev.lists.example.org"),
        ("python", None),  # not a whole identifier: Gmail's token rules are its own
        ("Dev <dev.lists.example.org>", None),
        ("日本.example", None),
    ],
)
def test_list_queries(value: str, query: str | None) -> None:
    assert list_query(value) == query


def test_age_and_list_add_raw_prefilters_and_keep_the_residual() -> None:
    age = A.AgeTest(True, 3, "days", S)
    text, residual = plan(age)
    assert text.endswith(" X-GM-RAW older_than:2d") and residual == age
    lst = A.StringTest(A.FieldRef("list", None, S), "is", "python-dev.python.org", S)
    text, residual = plan(lst)
    assert text == "X-GM-RAW list:python-dev.python.org" and residual == lst


# -- the reference reading of the X-GM keys (fake store, property tests) --------------------------------


def view(raw: bytes, flags: tuple[str, ...] = (), age: dt.timedelta = dt.timedelta(days=1)) -> MessageView:
    return MessageView.from_bytes(raw, flags=flags, internaldate=NOW - age, uid=1)


def test_reference_labels_ignore_ascii_case_only() -> None:
    v = view(b"Subject: x\r\n\r\n", ("\\Seen", "Muy Importante", "$work"))
    assert search_matches(K.GmLabels("muy importante"), v, now=NOW)
    assert search_matches(K.GmLabels("$WORK"), v, now=NOW)
    assert not search_matches(K.GmLabels("foo"), v, now=NOW)


def test_reference_gmail_terms() -> None:
    v = view(b"List-Id: Python <python-dev.python.org>\r\n\r\nhi", age=dt.timedelta(days=3, hours=1))
    assert search_matches(K.GmRaw("older_than:2d list:python-dev.python.org"), v, now=NOW)
    assert not search_matches(K.GmRaw("older_than:4d"), v, now=NOW)
    assert search_matches(K.GmRaw("newer_than:4d"), v, now=NOW)
    assert not search_matches(K.GmRaw("list:python.org"), v, now=NOW)
    assert not search_matches(K.GmRaw("has:attachment"), v, now=NOW)
    assert search_matches(K.GmRaw("category:promotions"), v, now=NOW)  # unknown: no filter


# -- the session and store against Google's transcripts ----------------------------------------------

GMAIL_CAPS = " ".join(GMAIL_CAPABILITIES)
LIST_ANSWER = [  # Google's `a004 LIST "" "*"` transcript
    b'* LIST (\\HasNoChildren) "/" "INBOX"',
    b'* LIST (\\Noselect \\HasChildren) "/" "[Gmail]"',
    b'* LIST (\\HasNoChildren \\All) "/" "[Gmail]/All Mail"',
    b'* LIST (\\HasNoChildren \\Drafts) "/" "[Gmail]/Drafts"',
    b'* LIST (\\HasNoChildren \\Important) "/" "[Gmail]/Important"',
    b'* LIST (\\HasNoChildren \\Sent) "/" "[Gmail]/Sent Mail"',
    b'* LIST (\\HasNoChildren \\Junk) "/" "[Gmail]/Spam"',
    b'* LIST (\\HasNoChildren \\Flagged) "/" "[Gmail]/Starred"',
    b'* LIST (\\HasNoChildren \\Trash) "/" "[Gmail]/Trash"',
]


class GmailClient(FakeClient):
    """imapclient's select_folder as Gmail would answer it; the rest goes through FakeImap."""

    def __init__(self, imap: FakeImap) -> None:
        super().__init__(imap)
        self.selects: list[str] = []

    def select_folder(self, name: str, readonly: bool = False) -> dict[bytes, Any]:
        self.selects.append(name)
        return {
            b"UIDVALIDITY": 11 if "Trash" in name else 1,
            b"EXISTS": 4,
            b"READ-WRITE": True,
            b"PERMANENTFLAGS": (b"\\Seen", b"\\Deleted", b"\\*"),
        }


def gmail_session(handler: Handler, caps: str = GMAIL_CAPS) -> tuple[ImapSession, FakeImap, GmailClient]:
    imap = FakeImap(handler)
    client = GmailClient(imap)
    s = ImapSession(client, PARAMS)
    s._caps = frozenset(caps.upper().split())
    return s, imap, client


def test_store_label_is_the_documented_command_and_the_echo_is_read() -> None:
    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        return [
            b'* 1 FETCH (X-GM-LABELS (\\Inbox \\Sent Important "Muy Importante" foo) UID 1)',
            tag + b" OK STORE (Success)",
        ]

    s, imap, _ = gmail_session(handler)
    echoed = gmail.store_labels(s, [1], ["foo"], True, 7000)
    assert imap.commands == [b"T1 UID STORE 1 +X-GM-LABELS (foo)"]
    assert echoed == {1: ("\\Inbox", "\\Sent", "Important", "Muy Importante", "foo")}
    assert "FETCH" not in imap.untagged_responses  # the echo is consumed, not left to pile up


def test_search_by_label_and_raw_query_as_documented() -> None:
    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        if b"X-GM-RAW" in cmd:
            return [b"* SEARCH 123 12344 5992", tag + b" OK SEARCH (Success)"]
        return [b"* SEARCH 1 2", tag + b" OK SEARCH (Success)"]

    s, imap, _ = gmail_session(handler, "IMAP4rev1 X-GM-EXT-1")  # no ESEARCH: the plain form
    store = ImapStore(s)
    assert store.search(K.GmLabels("foo")) == [1, 2]
    assert store.search(K.GmRaw("has:attachment in:unread")) == [123, 5992, 12344]
    assert imap.commands == [
        b"T1 UID SEARCH X-GM-LABELS foo",
        b'T2 UID SEARCH X-GM-RAW "has:attachment in:unread"',
    ]


def test_search_with_esearch_on_gmail() -> None:
    s, imap, _ = gmail_session(lambda t, c: [b'* ESEARCH (TAG "' + t + b'") UID ALL 1:2', t + b" OK"])
    assert ImapStore(s).search(K.not_(K.GmLabels("Muy Importante"))) == [1, 2]
    assert imap.commands == [b'T1 UID SEARCH RETURN (ALL) NOT X-GM-LABELS "Muy Importante"']


def test_fetched_labels_join_the_flags_when_flags_are_needed() -> None:
    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        return [  # Google's `a010 FETCH 1:4 (X-GM-LABELS)` answers, with the FLAGS and UID we ask too
            b'* 1 FETCH (X-GM-LABELS (\\Inbox \\Sent Important "Muy Importante") FLAGS (\\Seen) UID 1)',
            b"* 2 FETCH (X-GM-LABELS (foo) FLAGS () UID 2)",
            b"* 3 FETCH (X-GM-LABELS () FLAGS (\\Flagged) UID 3)",
            b"* 4 FETCH (X-GM-LABELS (\\Drafts) FLAGS () UID 4)",
            b"* 5 FETCH (X-GM-LABELS (R&AOk-unions 2024) FLAGS () UID 5)",
            tag + b" OK FETCH (Success)",
        ]

    s, imap, _ = gmail_session(handler)
    views = ImapStore(s).fetch_views([1, 2, 3, 4, 5], FetchNeeds(flags=True))
    assert imap.commands == [b"T1 UID FETCH 1:5 (FLAGS X-GM-LABELS)"]
    assert views[1].flags == frozenset({"\\Seen", "\\Inbox", "\\Sent", "Important", "Muy Importante"})
    assert views[2].flags == frozenset({"foo"})
    assert views[3].flags == frozenset({"\\Flagged"})
    assert views[4].flags == frozenset({"\\Drafts"})
    assert views[5].flags == frozenset({"Réunions", "2024"})
    # and the language reads them: `tagged "muy importante"`, `tagged "Réunions"` (compared here)
    from mailrules.dsl.semantics import EvalContext, evaluate_condition

    ctx = EvalContext(now=NOW, tz=dt.UTC)
    assert evaluate_condition(tagged("muy importante"), views[1], ctx).ok
    assert evaluate_condition(tagged("réunions"), views[5], ctx).ok


def test_no_labels_fetched_when_flags_are_not_needed_or_not_gmail() -> None:
    s, imap, _ = gmail_session(lambda t, c: [t + b" OK"])
    ImapStore(s).fetch_views([1], FetchNeeds(size=True))
    s2, imap2, _ = gmail_session(lambda t, c: [t + b" OK"], "IMAP4rev1 UIDPLUS")
    ImapStore(s2).fetch_views([1], FetchNeeds(flags=True))
    assert imap.commands == [b"T1 UID FETCH 1 (RFC822.SIZE)"]
    assert imap2.commands == [b"T1 UID FETCH 1 (FLAGS)"]


def test_gmail_ids_are_unsigned_64_bit() -> None:
    assert gmail.gm_id(1278455344230334865) == 1278455344230334865  # `* 1 FETCH (X-GM-MSGID ...)`
    assert gmail.gm_id(b"1266894439832287888") == 1266894439832287888
    assert gmail.gm_id(2**64) is None and gmail.gm_id(b"NIL") is None and gmail.gm_id(-1) is None


def test_special_uses_come_from_list_and_all_mail_is_the_archive() -> None:
    s, imap, _ = gmail_session(lambda t, c: [*LIST_ANSWER, t + b" OK Success"])
    uses = ImapStore(s).special_use()
    assert imap.commands == [b'T1 LIST (SPECIAL-USE) "" "*"']
    assert uses["\\Archive"] == uses["\\All"] == "[Gmail]/All Mail"
    assert (uses["\\Trash"], uses["\\Junk"]) == ("[Gmail]/Trash", "[Gmail]/Spam")
    assert gmail.never_watched("[Gmail]/All Mail", uses) is not None
    assert gmail.never_watched("[Gmail]/Spam", uses) is not None
    assert gmail.never_watched("INBOX", uses) is None
    # a German account: the names differ, the attributes do not
    assert gmail.special_uses({"\\All": "[Google Mail]/Alle Nachrichten"})["\\Archive"] == (
        "[Google Mail]/Alle Nachrichten"
    )
    assert gmail.special_uses({"\\All": "A", "\\Archive": "B"})["\\Archive"] == "B"


def test_archive_from_a_label_removes_only_the_inbox_label() -> None:
    echo = b"* 3 FETCH (X-GM-LABELS (Lists) UID 9)"
    s, imap, _ = gmail_session(lambda t, c: [echo, t + b" OK STORE (Success)"])
    ImapStore(s).archive_in_place([9])
    assert imap.commands == [b"T1 UID STORE 9 -X-GM-LABELS (\\Inbox)"]
    assert gmail.archive_moves("INBOX") and gmail.archive_moves("inbox")
    assert not gmail.archive_moves("Lists")


def test_delete_permanently_goes_through_the_trash() -> None:
    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        if cmd.startswith(b"LIST"):
            return [*LIST_ANSWER, tag + b" OK Success"]
        if cmd.startswith(b"UID MOVE"):
            return [
                b"* OK [COPYUID 11 7:8 41:42] (Success)",
                b"* 1 EXPUNGE",
                b"* 1 EXPUNGE",
                tag + b" OK MOVE (Success)",
            ]
        return [tag + b" OK Success"]

    s, imap, client = gmail_session(handler)
    store = ImapStore(s)
    store.select("INBOX")
    store.delete_permanently([7, 8])
    assert imap.commands == [
        b'T1 LIST (SPECIAL-USE) "" "*"',
        b'T2 UID MOVE 7:8 "[Gmail]/Trash"',  # out of every label, into the trash
        b"T3 UID STORE 41:42 +FLAGS.SILENT (\\Deleted)",  # deleting from the trash is for good
        b"T4 UID EXPUNGE 41:42",
    ]
    assert client.selects == ["INBOX", "[Gmail]/Trash", "INBOX"]


def test_delete_permanently_in_the_trash_itself_expunges_there() -> None:
    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        return [*LIST_ANSWER, tag + b" OK Success"] if cmd.startswith(b"LIST") else [tag + b" OK"]

    s, imap, client = gmail_session(handler)
    store = ImapStore(s)
    store.select("[Gmail]/Trash")
    store.delete_permanently([3])
    assert imap.commands[1:] == [b"T2 UID STORE 3 +FLAGS.SILENT (\\Deleted)", b"T3 UID EXPUNGE 3"]
    assert client.selects == ["[Gmail]/Trash"]


def test_tag_with_a_system_label_is_a_label_and_system_flags_stay_flags() -> None:
    s, imap, _ = gmail_session(lambda t, c: [t + b" OK"])
    store = ImapStore(s)
    store.select("INBOX")
    store.store_flags([4], ["\\Important", "\\Seen"], True)
    assert imap.commands == [
        b"T1 UID STORE 4 +X-GM-LABELS (\\Important)",
        b"T2 UID STORE 4 +FLAGS.SILENT (\\Seen)",
    ]


# -- the engine contract under the Gmail and Microsoft dialects (fake store, naive oracle) -----------

G_CONDITIONS = [
    'tagged "$Work"',
    'not tagged "$Work"',
    'tagged "Done"',
    "older than 3 days",
    "newer than 10 days",
    'list is "dev.lists.example.org"',
    "has attachment",
    "seen",
    'subject contains "invoice"',
    "all",
]
G_ACTIONS = [
    'tag "$Work"',
    'untag "$Work"',
    'tag "Done"',
    'tag "Clients/Acme Corp"',
    'untag "Done"',
    "archive",
    'move to "A"',
    'copy to "Lists"',
    "delete",
    "mark read",
    "stop",
]
G_EXTRAS = ["", "List-Id: Dev <dev.lists.example.org>\r\n", "List-Id: <other.example.org>\r\n"]
G_NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


@st.composite
def gmail_rule_sets(draw: st.DrawFn) -> str:
    out = []
    for i in range(draw(st.integers(1, 4))):
        conds = draw(st.lists(st.sampled_from(G_CONDITIONS), min_size=1, max_size=3))
        joiners = [draw(st.sampled_from([" and ", " or ", " and not "])) for _ in conds[1:]]
        cond = conds[0] + "".join(j + c for j, c in zip(joiners, conds[1:]))
        acts = draw(st.lists(st.sampled_from(G_ACTIONS), min_size=1, max_size=3))
        scope = draw(st.sampled_from(["", ' in "INBOX", "A"']))
        out.append(f'rule "r{i}"{scope} {{ when {cond} then {", ".join(acts)} }}')
    return "\n".join(out)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    gmail_rule_sets(),
    st.lists(
        st.tuples(
            st.sampled_from(G_EXTRAS),
            st.sampled_from([[], ["\\Seen"], ["$Work"]]),
            st.sampled_from([1, 2, 5, 20, 40]),
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(["gmail", "microsoft"]),
    st.booleans(),
)
def test_engine_equals_the_oracle_under_gmail_and_microsoft(
    text: str, messages: list[tuple[str, list[str], int]], dialect: str, arrival: bool
) -> None:
    rf, diags = parse_text(text, "g.rules")
    assert rf is not None and not [d for d in diags if d.severity == "error"], diags
    server = FakeServer()
    for i, (extra, flags, days) in enumerate(messages):
        raw = f"From: a@example.com\r\nSubject: invoice {i}\r\nMessage-ID: <{i}@t>\r\n{extra}\r\nbody\r\n"
        server.append("INBOX", raw.encode(), flags, G_NOW - dt.timedelta(days=days, hours=i))
    server.mailbox("A")
    expected = copy.deepcopy(server)
    ctx = EvalContext(G_NOW, dt.UTC)
    account = AccountContext("g", sender=RecordingSender())
    oracle(expected, rf.rules, account, ["INBOX", "A"], ctx, gmail=dialect == "gmail")
    store = FakeStore(server, Dialect.named(dialect), G_NOW)
    engine = Engine(RunOptions(G_NOW, dt.UTC, "run"))
    for mailbox in ("INBOX", "A"):
        uids = sorted(server.mailbox(mailbox).messages) if arrival else None
        engine.process(store, AccountContext("g", sender=RecordingSender()), mailbox, rf.rules, uids)
    assert server.state() == expected.state()
    if dialect == "gmail":  # tags went to labels, never to the flags
        kept = [m for mb in server.mailboxes.values() for m in mb.messages.values()]
        assert all(not ({"Done", "Clients/Acme Corp"} & m.flags) for m in kept)


# -- what doctor says -----------------------------------------------------------------------------------


def test_doctor_describes_gmail() -> None:
    lines = describe_dialect(GMAIL, max_connections=8)
    assert lines[0] == "Gmail: archive removes the INBOX label; 15 connections at most, budget 8"
    assert "[Gmail]/All Mail and [Gmail]/Spam are never watched by default" in "\n".join(lines)
    german = {
        "\\All": "[Google Mail]/Alle Nachrichten",
        "\\Junk": "[Google Mail]/Spam",
        "\\Trash": "[Google Mail]/Papierkorb",
    }
    text = "\n".join(describe_dialect(GMAIL, max_connections=16, special_use=german))
    assert "over Gmail's limit" in text and "delete moves to [Google Mail]/Papierkorb" in text


def test_the_session_itself_takes_all_mail_for_the_archive() -> None:
    # doctor's destinations read the session's special uses: they must agree with the store's
    german = [line.replace(b"[Gmail]/All Mail", b"[Google Mail]/Alle Nachrichten") for line in LIST_ANSWER]
    s, imap, _ = gmail_session(lambda t, c: [*german, t + b" OK Success"])
    assert s.special_use()["\\Archive"] == "[Google Mail]/Alle Nachrichten"
    assert len(imap.commands) == 1  # no second LIST for well-known names


def test_a_label_store_tells_its_modseq_to_the_store_listener() -> None:
    from mailrules.imap.modseq import record_own_changes

    def handler(tag: bytes, cmd: bytes) -> list[bytes]:
        return [b"* 1 FETCH (X-GM-LABELS (foo) UID 7 MODSEQ (4242))", tag + b" OK STORE (Success)"]

    s, imap, _ = gmail_session(handler)
    s.selected = SelectInfo("INBOX", 11, 8, 1, 4000, frozenset({"\\*"}), False)
    noted: list[tuple[str, str, int, dict[int, int]]] = []
    record_own_changes(s, "g", lambda a, m, v, c: noted.append((a, m, v, dict(c))))
    assert gmail.store_labels(s, [7], ["foo"], True, 7000) == {7: ("foo",)}
    assert noted == [("g", "INBOX", 11, {7: 4242})]
    assert "FETCH" not in imap.untagged_responses
