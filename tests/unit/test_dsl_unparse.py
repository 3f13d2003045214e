"""AST back to text (dsl/unparse.py): golden spellings, and parse(unparse(x)) == x up to spans."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailrules.dsl import ast as A
from mailrules.dsl import unparse
from mailrules.dsl.check import check_rule_set
from mailrules.dsl.check_logic import shape
from mailrules.dsl.lexemes import header_name_problem, keyword_problem, label_problem, mailbox_problem
from mailrules.dsl.parser import parse_text
from mailrules.dsl.transform_base import FIELDS
from mailrules.source import Span

S = Span("u.rules", 1, 1)


def parse_condition(text: str) -> A.Condition:
    rf, diags = parse_text(f'rule "x" {{ when {text} then flag }}', "u.rules")
    assert rf is not None and not diags, diags
    return rf.rules[0].condition


def parse_rule(text: str) -> A.Rule:
    rf, diags = parse_text(text, "u.rules")
    assert rf is not None and not diags, diags
    (rule,) = rf.rules
    return rule


# -- conditions ---------------------------------------------------------------------------------

CONDITIONS = [
    # (as a user may write it, the canonical spelling)
    ('FROM Contains "a"', 'from contains "a"'),
    ('subject starts with "Re:"', 'subject starts with "Re:"'),
    ('reply-to ends with "@x.org"', 'reply-to ends with "@x.org"'),
    ('header "X-Spam" is "yes"', 'header "X-Spam" is "yes"'),
    ('header "X-Spam" exists', 'header "X-Spam" exists'),
    ("list matches /^<?([a-z0-9-]+)\\./", "list matches /^<?([a-z0-9-]+)\\./"),
    ("subject matches /a\\/b/cm", "subject matches /a\\/b/cm"),
    ('from domain is "@Example.ORG"', 'from domain is "example.org"'),
    ("size > 1 mb", "size > 1 MB"),
    ("size >= 1.5 MB", "size >= 1536 KB"),
    ("size < 20 KB", "size < 20 KB"),
    ("size <= 100", "size <= 100 B"),
    ("size > 3 GB", "size > 3 GB"),
    ("older than 1 years", "older than 1 year"),
    ("newer than 2 day", "newer than 2 days"),
    ("received on 2024-01-02", "received on 2024-01-02"),
    ("sent before 0999-12-31", "sent before 0999-12-31"),
    ("read", "seen"),
    ("unread", "unseen"),
    ("unflagged", "unflagged"),
    ("not flagged", "not flagged"),
    ("undeleted", "undeleted"),
    ("unanswered and undraft", "unanswered and undraft"),
    ('tagged "$Work"', 'tagged "$Work"'),
    ("has attachment", "has attachment"),
    ('attachment name ends with ".pdf"', 'attachment name ends with ".pdf"'),
    ("attachment name matches /\\.pdf$/", "attachment name matches /\\.pdf$/"),
    ("all", "all"),
    ('subject contains any ["a", "b"]', 'subject contains "a" or subject contains "b"'),
    ('from domain is any ["a.org", "b.org"]', 'from domain is "a.org" or from domain is "b.org"'),
    ('FROM User IS "bob"', 'from user is "bob"'),
    ('to detail is any ["a", "b"]', 'to detail is "a" or to detail is "b"'),
    ("recipient localpart matches /^x/c", "recipient localpart matches /^x/c"),
    ("reply-to detail matches any [/a/, /b/]", "reply-to detail matches /a/ or reply-to detail matches /b/"),
    ('Envelope TO detail ends with "s"', 'envelope to detail ends with "s"'),
    ('envelope from domain is "x.org"', 'envelope from domain is "x.org"'),
    ('envelope from contains "bounce"', 'envelope from contains "bounce"'),
    # structure: not > and > or; a compound inside a compound is parenthesised
    ("seen or not flagged and draft", "seen or (not flagged and draft)"),
    ("(seen or flagged) and draft", "(seen or flagged) and draft"),
    ("seen and (flagged and draft)", "seen and (flagged and draft)"),
    ("seen and flagged and draft", "seen and flagged and draft"),
    ("seen or (flagged or draft)", "seen or (flagged or draft)"),
    ("not (seen and flagged)", "not (seen and flagged)"),
    ("not not seen", "not not seen"),
    ("not all", "not all"),
    ("((seen))", "seen"),
]


@pytest.mark.parametrize(("written", "canonical"), CONDITIONS)
def test_condition_spelling(written: str, canonical: str) -> None:
    cond = parse_condition(written)
    assert unparse.condition(cond) == canonical
    assert unparse.unparse(cond) == canonical
    assert shape(parse_condition(canonical)) == shape(cond)


def test_strings_and_regexes_are_escaped_as_the_lexer_reads_them() -> None:
    value = 'say "hi" \\o/ é \t'
    test = A.StringTest(A.FieldRef("subject", None, S), "is", value, S)
    assert unparse.condition(test) == 'subject is "say \\"hi\\" \\\\o/ é \t"'
    assert shape(parse_condition(unparse.condition(test))) == shape(test)
    header = A.HeaderExists('X-"q"', S)
    assert unparse.condition(header) == 'header "X-\\"q\\"" exists'
    # `/` is escaped in a pattern; an escape already there (`\\`, `\.`) is kept as it is
    rx = A.Regex("a/b\\\\/c\\.d", "m", S)
    assert unparse.regex(rx) == "/a\\/b\\\\\\/c\\.d/m"
    back = parse_condition(f"subject matches {unparse.regex(rx)}")
    assert isinstance(back, A.RegexTest) and back.regex.pattern == rx.pattern and back.regex.flags == "m"


def test_explain_hook_writes_each_atom() -> None:
    cond = parse_condition('not (seen or from is "a") and all')
    text = unparse.condition(cond, lambda a: f"<{unparse.atom(a)}>")
    assert text == 'not (<seen> or <from is "a">) and <all>'


def test_conditions_the_parser_never_makes() -> None:
    seen = A.FlagTest("\\Seen", True, S)
    assert unparse.condition(A.And((), S)) == "all"
    assert unparse.condition(A.Or((), S)) == "not all"
    assert unparse.condition(A.Not(A.Or((), S), S)) == "not not all"
    assert unparse.condition(A.And((seen,), S)) == "seen"
    assert unparse.condition(A.Or((A.And((seen,), S), seen), S)) == "seen or seen"


# -- actions, triggers, templates --------------------------------------------------------------


def T(raw: str) -> A.Template:
    return A.Template(raw, (A.TemplateText(raw),), S)


ACTIONS: list[tuple[A.Action, str]] = [
    (A.Move(T("GitHub"), S), 'move to "GitHub"'),
    (A.Copy(T('a"b\\c'), S), 'copy to "a\\"b\\\\c"'),
    (A.Archive(None, S), "archive"),
    (A.Archive(T("Archive/{year}"), S), 'archive to "Archive/{year}"'),
    (A.Delete(False, S), "delete"),
    (A.Delete(True, S), "delete permanently"),
    (A.SetFlag("\\Seen", True, S), "mark read"),
    (A.SetFlag("\\Seen", False, S), "mark unread"),
    (A.SetFlag("\\Flagged", True, S), "flag"),
    (A.SetFlag("\\Flagged", False, S), "unflag"),
    (A.Tag("$X", True, S), 'tag "$X"'),
    (A.Tag("Label with spaces", False, S), 'untag "Label with spaces"'),
    (A.Forward("a@b.org", S), 'forward to "a@b.org"'),
    (A.Redirect("a@b.org", S), 'redirect to "a@b.org"'),
    (A.Stop(S), "stop"),
]


@pytest.mark.parametrize(("action", "text"), ACTIONS)
def test_action_spelling(action: A.Action, text: str) -> None:
    assert unparse.action(action) == text
    assert unparse.unparse(action) == text


def test_a_destination_replaces_the_template() -> None:
    assert unparse.action(A.Move(T("L/{year}"), S), "L/2023") == 'move to "L/2023"'
    assert unparse.action(A.Archive(None, S), "Archive") == "archive"


TRIGGERS = [
    ("", "on arrival"),
    ("on arrival", "on arrival"),
    ("every 15 minutes", "every 15 minutes"),
    ("every 1 hours", "every 1 hour"),
    ("every hour", "every 1 hour"),
    ("every minute", "every 1 minute"),
    ("every day at 3:00", "every day at 03:00"),
    ("every mon at 09:00", "every monday at 09:00"),
    ("every friday, MON at 18:05", "every monday, friday at 18:05"),
    ("every weekday at 08:30", "every weekday at 08:30"),
    ("every mon, tue, wed, thu, fri at 12:00", "every weekday at 12:00"),
    ("every sat, sun at 10:00", "every weekend at 10:00"),
    ("every weekday, weekend at 10:00", "every monday, tuesday, wednesday, thursday, friday, saturday, "
     "sunday at 10:00"),
    ('cron "0 9 * * 1-5"', 'cron "0 9 * * 1-5"'),
    ("manually", "manually"),
    ("ON FLAG change", "on flag change"),
]  # fmt: skip


@pytest.mark.parametrize(("written", "canonical"), TRIGGERS)
def test_trigger_spelling(written: str, canonical: str) -> None:
    rule = parse_rule(f'rule "r" {written} {{ then flag }}')
    assert unparse.trigger(rule.trigger) == canonical
    assert shape(parse_rule(f'rule "r" {canonical} {{ then flag }}').trigger) == shape(rule.trigger)


def test_template_pieces() -> None:
    rule = parse_rule('rule "r" { when list matches /(x)/ then move to "L/{list}/{match.1}" }')
    move = rule.actions[0]
    assert isinstance(move, A.Move)
    assert unparse.unparse(move.dest) == '"L/{list}/{match.1}"'
    assert [unparse.unparse(p) for p in move.dest.parts] == ["L/", "{list}", "/", "{match.1}"]
    assert unparse.unparse(A.FieldRef(None, "X-A", S)) == 'header "X-A"'


# -- rules, test blocks, files -----------------------------------------------------------------

CANONICAL_FILE = """\
rule "GitHub \\"notifications\\"" {
    when from contains "notifications@github.com"
    then move to "GitHub"
         mark read
}

rule "weekly" in "INBOX", "Later" for account "work", "home" every sunday at 04:00 limit 500 {
    when older than 90 days and seen and not flagged
    then delete
}

rule "everything" manually {
    when all
    then stop
}

test "filed" {
    given "samples/github-pr.eml"
    expect move to "GitHub", mark read
}

test "with state" {
    given "m.eml" flags seen, "$Work" received 2020-01-01 10:05 in "Later" account "w" now 2024-05-01
    expect keep
}
"""


def test_a_canonical_file_is_a_fixed_point() -> None:
    rf, diags = parse_text(CANONICAL_FILE, "c.rules")
    assert rf is not None and not diags, diags
    assert unparse.rule_file(rf) == CANONICAL_FILE
    assert unparse.unparse(rf) == CANONICAL_FILE


def test_a_rule_written_otherwise_comes_back_canonical() -> None:
    rule = parse_rule(
        'RULE "x" limit 3 every MON at 9:00 in "INBOX" {\n  when from contains "a" and not seen '
        'then move to "A"; flag, stop }'
    )
    assert unparse.rule(rule) == (
        'rule "x" every monday at 09:00 limit 3 {\n'
        '    when from contains "a" and not seen\n'
        '    then move to "A"\n'
        "         flag\n"
        "         stop\n"
        "}"
    )
    given = A.Given("m.eml", ("\\Seen",), dt.datetime(2020, 1, 1), "INBOX", None, None, S)
    block = A.TestBlock("t", given, (), S)
    text = 'test "t" {\n    given "m.eml" flags seen received 2020-01-01\n    expect keep\n}'
    assert unparse.block(block) == text


def test_not_a_node() -> None:
    with pytest.raises(TypeError):
        unparse.unparse("seen")
    with pytest.raises(TypeError):
        unparse.action(A.All(S))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        unparse.trigger(A.All(S))  # type: ignore[arg-type]


# -- parse(unparse(x)) == x up to spans, for generated rule files ------------------------------
# The strategies make what the parser makes: the values its builder accepts (dsl/lexemes.py) and
# its shapes (an `and`/`or` has two items or more; a template's text pieces are merged).

LINE = st.characters(exclude_categories=["Cs"], exclude_characters="\n")
TEXT = st.text(LINE, max_size=12)
NAME = TEXT.filter(lambda s: bool(s.strip()))
ASCII_NAME = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=10)
HEADER = ASCII_NAME.filter(lambda s: header_name_problem(s) is None)
KEYWORD = ASCII_NAME.filter(lambda s: keyword_problem(s) is None)
LABEL = NAME.filter(
    lambda s: (keyword_problem(s) is None or label_problem(s) is None) and "{" not in s and "}" not in s
)
MAILBOX = NAME.filter(lambda s: mailbox_problem(s) is None)
ADDRESS_CHARS = st.sampled_from("abcXYZ019.-_+é")
ADDRESS_PART = st.text(ADDRESS_CHARS, min_size=1, max_size=6)
ADDRESS = st.builds(lambda a, b: f"{a}@{b}", ADDRESS_PART, ADDRESS_PART)


def _domain(value: str) -> str:
    """What the builder makes of `domain is "value"`."""
    return value.strip().lower().lstrip("@.")


DOMAIN = TEXT.map(_domain).filter(
    lambda d: bool(d) and d == _domain(d) and not any(c.isspace() or c in "@,<>" for c in d)
)
# A pattern as split_regex leaves it: plain characters (`/` included) and escape pairs but `\/`.
PATTERN = st.lists(
    st.one_of(LINE.filter(lambda c: c != "\\"), LINE.filter(lambda c: c != "/").map(lambda c: "\\" + c)),
    min_size=1,
    max_size=8,
).map("".join)
FLAGS = st.lists(st.sampled_from("imsx"), max_size=3, unique=True).map("".join) | st.sampled_from(["c", "cm"])
REGEX = st.builds(A.Regex, PATTERN, FLAGS, st.just(S))
STRING_OP = st.sampled_from(["contains", "is", "starts_with", "ends_with"])
FIELD = st.one_of(
    st.sampled_from([*FIELDS, "envelope to", "envelope from"]).map(lambda f: A.FieldRef(f, None, S)),  # type: ignore[arg-type]
    HEADER.map(lambda h: A.FieldRef(None, h, S)),
)
ADDRESS_FIELD = st.sampled_from(sorted(A.ADDRESS_FIELDS)).map(lambda f: A.FieldRef(f, None, S))  # type: ignore[arg-type]
PART = st.sampled_from(["user", "detail", "localpart"])
DATE = st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31))
ATOMS: st.SearchStrategy[A.Condition] = st.one_of(
    st.builds(A.StringTest, FIELD, STRING_OP, TEXT, st.just(S)),
    st.builds(A.RegexTest, FIELD, REGEX, st.just(S)),
    st.builds(A.DomainTest, ADDRESS_FIELD, DOMAIN, st.just(S)),
    st.builds(A.AddressPartTest, ADDRESS_FIELD, PART, STRING_OP, TEXT, st.none(), st.just(S)),
    st.builds(A.AddressPartTest, ADDRESS_FIELD, PART, st.just("matches"), st.none(), REGEX, st.just(S)),
    st.builds(A.HeaderExists, HEADER, st.just(S)),
    st.builds(A.SizeTest, st.sampled_from([">", "<", ">=", "<="]), st.integers(0, 2**40), st.just(S)),
    st.builds(A.AgeTest, st.booleans(), st.integers(0, 10**6),
              st.sampled_from(["minutes", "hours", "days", "weeks", "months", "years"]), st.just(S)),
    st.builds(A.DateTest, st.sampled_from(["received", "sent"]), st.sampled_from(["before", "after", "on"]),
              DATE, st.just(S)),
    st.builds(A.FlagTest, st.sampled_from(["\\Seen", "\\Flagged", "\\Answered", "\\Draft", "\\Deleted"]),
              st.booleans(), st.just(S)),
    st.builds(A.KeywordTest, KEYWORD, st.just(S)),
    st.builds(A.HasAttachment, st.just(S)),
    st.builds(A.AttachmentNameTest, STRING_OP, TEXT, st.none(), st.just(S)),
    st.builds(A.AttachmentNameTest, st.just("matches"), st.none(), REGEX, st.just(S)),
    st.builds(A.GmailSearch, NAME.filter(lambda q: "\r" not in q and "\x00" not in q), st.just(S)),
    st.builds(A.GmailCategory, st.sampled_from(A.GMAIL_CATEGORIES), st.just(S)),
    st.builds(A.ThreadTagged, LABEL, st.just(S)),
    st.builds(A.All, st.just(S)),
)  # fmt: skip


def _compound(children: st.SearchStrategy[A.Condition]) -> st.SearchStrategy[A.Condition]:
    items = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(
        st.builds(A.And, items, st.just(S)),
        st.builds(A.Or, items, st.just(S)),
        st.builds(A.Not, children, st.just(S)),
    )


CONDITIONS_ = st.recursive(ATOMS, _compound, max_leaves=8)


def _template(pieces: list[str | tuple[str, int, tuple[str, ...]]]) -> A.Template:
    """Text pieces and (placeholder, N) pieces, as split_template makes them from the text."""
    parts: list[A.TemplateText | A.Placeholder] = []
    for piece in pieces:
        if isinstance(piece, str):
            if parts and isinstance(parts[-1], A.TemplateText):
                parts[-1] = A.TemplateText(parts[-1].text + piece)
            elif piece:
                parts.append(A.TemplateText(piece))
        else:
            parts.append(A.Placeholder(piece[0], piece[1], S, piece[2]))  # type: ignore[arg-type]
    raw = "".join(unparse.unparse(p) for p in parts)
    return A.Template(raw, tuple(parts), S)


FILTERS_ = st.lists(st.sampled_from(["lower", "upper", "capitalize"]), max_size=2).map(tuple)
TEMPLATE = st.lists(
    st.one_of(
        st.text(LINE.filter(lambda c: c not in "{}"), min_size=1, max_size=8),
        st.tuples(st.sampled_from(["year", "month", "day", "from.domain", "list"]), st.just(0), FILTERS_),
        st.tuples(st.just("match"), st.integers(0, 12), FILTERS_),
    ),
    max_size=4,
).map(_template)


def _tag_template(pieces: list[str | tuple[str, int, tuple[str, ...]]], on: bool) -> A.Tag:
    """A tag with at least one placeholder and text a label may hold (no control character)."""
    t = _template([*pieces, ("list", 0, ())])
    return A.Tag(t.raw, on, S, t)


TAG_TEMPLATE = st.builds(
    _tag_template,
    st.lists(
        st.one_of(
            st.text(
                st.characters(min_codepoint=32, max_codepoint=126).filter(lambda c: c not in "{}\\"),
                min_size=1,
                max_size=8,
            ),
            st.tuples(st.just("match"), st.integers(0, 12), FILTERS_),
        ),
        max_size=3,
    ),
    st.booleans(),
)
ACTIONS_ = st.one_of(
    st.builds(A.Move, TEMPLATE, st.just(S)),
    st.builds(A.Copy, TEMPLATE, st.just(S)),
    st.builds(A.Archive, st.none() | TEMPLATE, st.just(S)),
    st.builds(A.Delete, st.booleans(), st.just(S)),
    st.builds(A.SetFlag, st.sampled_from(["\\Seen", "\\Flagged", "\\Important"]), st.booleans(), st.just(S)),
    st.builds(A.Tag, LABEL, st.booleans(), st.just(S)),
    TAG_TEMPLATE,
    st.builds(A.Forward, ADDRESS, st.just(S)),
    st.builds(A.Redirect, ADDRESS, st.just(S)),
    st.builds(A.Stop, st.just(S)),
)
TRIGGERS_ = st.one_of(
    st.builds(A.OnArrival, st.just(S)),
    st.builds(A.Every, st.integers(0, 10**4), st.sampled_from(["minutes", "hours"]), st.just(S)),
    st.builds(A.At, st.lists(st.integers(0, 6), unique=True).map(lambda d: tuple(sorted(d))),
              st.integers(0, 23), st.integers(0, 59), st.just(S)),
    st.builds(A.Cron, TEXT, st.just(S)),
    st.builds(A.Manually, st.just(S)),
    st.builds(A.FlagChange, st.just(S)),
)  # fmt: skip
RULES = st.builds(
    A.Rule,
    name=NAME,
    mailboxes=st.lists(MAILBOX, min_size=1, max_size=3).map(tuple) | st.just(("INBOX",)),
    accounts=st.lists(NAME, max_size=2).map(tuple),
    trigger=TRIGGERS_,
    limit=st.none() | st.integers(0, 10**6),
    condition=CONDITIONS_,
    actions=st.lists(ACTIONS_, min_size=1, max_size=3).map(tuple),
    span=st.just(S),
)
MINUTE = st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59)).map(
    lambda d: d.replace(second=0, microsecond=0)
)
GIVEN = st.builds(
    A.Given,
    path=NAME,
    flags=st.lists(st.sampled_from(["\\Seen", "\\Flagged", "\\Answered", "\\Draft", "\\Deleted"]) | KEYWORD,
                   unique=True, max_size=3).map(tuple),
    received=st.none() | MINUTE,
    mailbox=MAILBOX,
    account=st.none() | TEXT,
    now=st.none() | MINUTE,
    span=st.just(S),
    gmail=st.none() | st.builds(A.GmailFacts, st.none() | st.sampled_from(A.GMAIL_CATEGORIES),
                                st.lists(NAME, unique=True, max_size=2).map(tuple)),
    thread=st.none() | st.builds(A.ThreadFacts,
                                 st.lists(LABEL, min_size=1, max_size=2, unique=True).map(tuple)),
)  # fmt: skip
TESTS = st.builds(A.TestBlock, NAME, GIVEN, st.lists(ACTIONS_, max_size=3).map(tuple), st.just(S))
SCHEDULES = st.one_of(
    st.builds(A.Every, st.integers(0, 10**4), st.sampled_from(["minutes", "hours"]), st.just(S)),
    st.builds(A.At, st.lists(st.integers(0, 6), unique=True).map(lambda d: tuple(sorted(d))),
              st.integers(0, 23), st.integers(0, 59), st.just(S)),
    st.builds(A.Cron, TEXT, st.just(S)),
)  # fmt: skip
GROUP = st.builds(
    lambda name, trigger, rules: [dataclasses.replace(r, group=name, trigger=trigger) for r in rules],
    NAME,
    SCHEDULES,
    st.lists(RULES, min_size=1, max_size=2),
)
ITEMS = st.lists(st.one_of(RULES.map(lambda r: [r]), GROUP), max_size=3).map(
    lambda items: [r for i in items for r in i]
)


def _groups_apart(rules: list[A.Rule]) -> bool:
    """Two groups written one after the other have different names (else they read as one)."""
    pairs = itertools.pairwise(rules)
    return all(a.group is None or a.group != b.group or a.trigger == b.trigger for a, b in pairs)


FILES = st.builds(
    A.RuleFile,
    st.just("g.rules"),
    ITEMS.filter(_groups_apart).map(tuple),
    st.lists(TESTS, max_size=2).map(tuple),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FILES)
def test_parse_of_unparse_is_the_same_ast(rule_file: A.RuleFile) -> None:
    text = unparse.rule_file(rule_file)
    back, diags = parse_text(text, "g.rules")
    assert back is not None and not diags, (text, diags)
    assert shape(back) == shape(rule_file), text
    assert unparse.rule_file(back) == text  # and the text is canonical: a fixed point


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONDITIONS_)
def test_a_condition_comes_back(cond: A.Condition) -> None:
    text = unparse.condition(cond)
    assert shape(parse_condition(text)) == shape(cond), text


def test_the_checker_writes_names_and_tests_as_the_language_does() -> None:
    text = (
        'rule "say \\"hi\\"" { when older than 1 month and newer than 1 day then flag }\n'
        'rule "say \\"hi\\"" { then flag }\n'
    )
    rf, diags = parse_text(text, "c.rules")
    assert rf is not None and not diags
    messages = [d.message for d in check_rule_set(A.RuleSet((rf,)))]
    assert messages == [
        'rule "say \\"hi\\"" can never match: no message is both older than 1 month and newer than 1 day',
        'duplicate rule name "say \\"hi\\""; rule names are unique across the rule set '
        "(first defined at c.rules:1:6)",
    ]
