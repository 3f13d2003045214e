"""Every form of the language parses into the expected AST (spec examples, precedence, `any`, case)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mailrules.dsl import ast
from mailrules.dsl.check_logic import shape
from mailrules.dsl.parser import parse_text

SPEC_EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "dsl" / "ok" / "spec_examples.rules"


def parse_ok(text: str) -> ast.RuleFile:
    rule_file, diags = parse_text(text, "t.rules")
    assert not diags, "\n".join(d.render() for d in diags)
    assert rule_file is not None
    return rule_file


def rule(text: str) -> ast.Rule:
    rules = parse_ok(text).rules
    assert len(rules) == 1
    return rules[0]


def cond(text: str) -> ast.Condition:
    return rule(f'rule "r" {{ when {text} then stop }}').condition


def action(text: str) -> ast.Action:
    actions = rule(f'rule "r" {{ then {text} }}').actions
    assert len(actions) == 1
    return actions[0]


# ---------------------------------------------------------------- spec examples


def test_spec_examples_parse() -> None:
    rf = parse_ok(SPEC_EXAMPLES.read_text(encoding="utf-8"))
    names = [r.name for r in rf.rules]
    assert names == [
        "GitHub notifications",
        "lists",
        "invoices",
        "big mail from bob",
        "yearly archive",
        "noise",
    ]
    gh, lists, invoices, bob, yearly, noise = rf.rules
    assert gh.mailboxes == ("INBOX",) and gh.accounts == () and isinstance(gh.trigger, ast.OnArrival)
    assert isinstance(gh.condition, ast.StringTest) and gh.condition.op == "contains"
    assert gh.condition.target.field == "from" and gh.condition.value == "notifications@github.com"
    assert isinstance(gh.actions[0], ast.Move) and gh.actions[0].dest.raw == "GitHub"
    assert gh.actions[1] == ast.SetFlag("\\Seen", True, gh.actions[1].span)

    assert isinstance(lists.condition, ast.RegexTest)
    assert lists.condition.regex.pattern == r"^<?([a-z0-9-]+)\." and lists.condition.regex.groups == 1
    dest = lists.actions[0].dest  # type: ignore[union-attr]
    assert isinstance(dest, ast.Template) and dest.literal_prefix == "Lists/"
    assert (
        isinstance(dest.parts[1], ast.Placeholder)
        and dest.parts[1].name == "match"
        and dest.parts[1].index == 1
    )

    assert isinstance(invoices.condition, ast.And)
    assert isinstance(invoices.condition.items[0], ast.Or)
    assert isinstance(invoices.condition.items[1], ast.HasAttachment)
    assert [type(a) for a in invoices.actions] == [ast.Copy, ast.SetFlag]

    assert isinstance(bob.condition, ast.And)
    assert bob.condition.items[1] == ast.SizeTest(">", 1024 * 1024, bob.condition.items[1].span)
    assert bob.actions[0] == ast.Forward("archive@example.org", bob.actions[0].span)
    assert bob.actions[1] == ast.Delete(False, bob.actions[1].span)

    assert yearly.mailboxes == ("INBOX",)
    assert isinstance(yearly.trigger, ast.At) and (yearly.trigger.days, yearly.trigger.hour) == ((), 3)
    age, seen, not_flagged = yearly.condition.items  # type: ignore[union-attr]
    assert age == ast.AgeTest(True, 365, "days", age.span)
    assert seen == ast.FlagTest("\\Seen", True, seen.span)
    assert isinstance(not_flagged, ast.Not) and isinstance(not_flagged.item, ast.FlagTest)
    assert isinstance(yearly.actions[0], ast.Archive) and yearly.actions[0].dest is not None

    assert noise.accounts == ("work",)
    assert isinstance(noise.condition, ast.Or)
    domain, header = noise.condition.items
    assert isinstance(domain, ast.DomainTest) and domain.domain == "marketing.example.com"
    assert isinstance(header, ast.StringTest) and header.target.header == "Precedence" and header.op == "is"

    t1, t2 = rf.tests
    assert t1.name == "GitHub mail is filed" and t1.given.path == "samples/github-pr.eml"
    assert [type(a) for a in t1.expect] == [ast.Move, ast.SetFlag]
    assert t2.expect == () and t2.given.mailbox == "INBOX" and t2.given.flags == ()


def test_spans_are_one_based_with_ends() -> None:
    r = rule('rule "x" {\n  when seen\n  then stop\n}')
    assert (r.span.line, r.span.column, r.span.end_line, r.span.end_column) == (1, 1, 4, 2)
    assert r.name_span is not None and (r.name_span.column, r.name_span.end_column) == (6, 9)
    assert (r.condition.span.line, r.condition.span.column) == (2, 8)


# ---------------------------------------------------------------- rule header and triggers


def test_header_clauses() -> None:
    r = rule(
        'rule "x" in "INBOX", "Lists/a" for account "work", "home" every 15 minutes limit 50 { then stop }'
    )
    assert r.mailboxes == ("INBOX", "Lists/a") and r.accounts == ("work", "home") and r.limit == 50
    assert r.trigger == ast.Every(15, "minutes", r.trigger.span)


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        ("on arrival", ast.OnArrival),
        ("manually", ast.Manually),
        ("every 2 hours", (2, "hours")),
        ("every 1 hour", (1, "hours")),
        ("every 1 minute", (1, "minutes")),
        ("every hour", (1, "hours")),
        ("every day at 03:00", ((), 3, 0)),
        ("every monday at 09:30", ((0,), 9, 30)),
        ("every Sunday, friday at 7:05", ((4, 6), 7, 5)),
        ("every weekday at 08:00", ((0, 1, 2, 3, 4), 8, 0)),
        ("every weekend at 10:00", ((5, 6), 10, 0)),
        ("every mon, wed at 10:00", ((0, 2), 10, 0)),
    ],
)
def test_triggers(trigger: str, expected: object) -> None:
    t = rule(f'rule "x" {trigger} {{ then stop }}').trigger
    if isinstance(expected, type):
        assert isinstance(t, expected)
    elif isinstance(t, ast.Every):
        assert (t.amount, t.unit) == expected
    else:
        assert isinstance(t, ast.At) and (t.days, t.hour, t.minute) == expected


def test_cron_trigger() -> None:
    t = rule('rule "x" cron "*/5 8-18 * * mon-fri" { then stop }').trigger
    assert isinstance(t, ast.Cron) and t.expression == "*/5 8-18 * * mon-fri"


def test_when_omitted_or_all_is_all() -> None:
    assert isinstance(rule('rule "x" { then stop }').condition, ast.All)
    assert isinstance(cond("all"), ast.All)


# ---------------------------------------------------------------- conditions


def test_precedence_not_and_or() -> None:
    c = cond("seen or not flagged and draft")
    assert isinstance(c, ast.Or)
    left, right = c.items
    assert isinstance(left, ast.FlagTest)
    assert isinstance(right, ast.And) and isinstance(right.items[0], ast.Not)
    assert isinstance(right.items[1], ast.FlagTest) and right.items[1].flag == "\\Draft"


def test_parentheses_group() -> None:
    c = cond("(seen or flagged) and not (draft or answered)")
    assert isinstance(c, ast.And)
    assert isinstance(c.items[0], ast.Or)
    assert isinstance(c.items[1], ast.Not) and isinstance(c.items[1].item, ast.Or)


def test_not_not() -> None:
    c = cond("not not seen")
    assert isinstance(c, ast.Not) and isinstance(c.item, ast.Not)


@pytest.mark.parametrize(
    ("text", "op"),
    [("contains", "contains"), ("is", "is"), ("starts with", "starts_with"), ("ends with", "ends_with")],
)
def test_string_ops(text: str, op: str) -> None:
    c = cond(f'subject {text} "x"')
    assert isinstance(c, ast.StringTest) and c.op == op and c.value == "x"


@pytest.mark.parametrize(
    "field", ["from", "sender", "to", "cc", "bcc", "recipient", "reply-to", "subject", "list", "body", "text"]
)
def test_every_field(field: str) -> None:
    c = cond(f'{field} contains "x"')
    assert isinstance(c, ast.StringTest) and c.target.field == field


def test_any_desugars_into_or() -> None:
    c = cond('subject contains any ["a", "b", "c"]')
    assert isinstance(c, ast.Or) and [i.value for i in c.items] == ["a", "b", "c"]  # type: ignore[union-attr]
    assert all(isinstance(i, ast.StringTest) and i.op == "contains" for i in c.items)
    for form, op in (("is any", "is"), ("starts with any", "starts_with"), ("ends with any", "ends_with")):
        c = cond(f'from {form} ["a", "b",]')
        assert isinstance(c, ast.Or) and {i.op for i in c.items} == {op}  # type: ignore[union-attr]
    c = cond("subject matches any [/a/, /b(c)/c]")
    assert isinstance(c, ast.Or) and [i.regex.pattern for i in c.items] == ["a", "b(c)"]  # type: ignore[union-attr]
    c = cond('from domain is any ["a.org", "@B.org"]')
    assert isinstance(c, ast.Or) and [i.domain for i in c.items] == ["a.org", "b.org"]  # type: ignore[union-attr]
    c = cond('attachment name ends with any [".pdf", ".doc"]')
    assert isinstance(c, ast.Or) and all(isinstance(i, ast.AttachmentNameTest) for i in c.items)
    single = cond('subject contains any ["only"]')
    assert isinstance(single, ast.StringTest)


def test_any_inside_and_keeps_precedence() -> None:
    c = cond('seen and subject is any ["a", "b"]')
    assert isinstance(c, ast.And) and isinstance(c.items[1], ast.Or)


def test_header_tests() -> None:
    c = cond('header "X-Spam" exists')
    assert c == ast.HeaderExists("X-Spam", c.span)
    c = cond('header "List-Id" matches /foo/')
    assert isinstance(c, ast.RegexTest) and c.target.header == "List-Id" and c.target.field is None


@pytest.mark.parametrize(
    ("text", "op", "size"),
    [
        ("size > 1 MB", ">", 1024**2),
        ("size < 20 KB", "<", 20 * 1024),
        ("size >= 2 GB", ">=", 2 * 1024**3),
        ("size <= 100 B", "<=", 100),
        ("size > 1mb", ">", 1024**2),
        ("size > 1.5 kb", ">", 1536),
        ("size > 500", ">", 500),
    ],
)
def test_sizes(text: str, op: str, size: int) -> None:
    c = cond(text)
    assert isinstance(c, ast.SizeTest) and (c.op, c.bytes) == (op, size)


@pytest.mark.parametrize(
    ("text", "older", "amount", "unit"),
    [
        ("older than 365 days", True, 365, "days"),
        ("newer than 1 day", False, 1, "days"),
        ("older than 2 weeks", True, 2, "weeks"),
        ("newer than 1 hour", False, 1, "hours"),
        ("older than 30 minutes", True, 30, "minutes"),
        ("older than 6 months", True, 6, "months"),
        ("older than 1 year", True, 1, "years"),
    ],
)
def test_ages(text: str, older: bool, amount: int, unit: str) -> None:
    c = cond(text)
    assert isinstance(c, ast.AgeTest) and (c.older, c.amount, c.unit) == (older, amount, unit)


@pytest.mark.parametrize("which", ["received", "sent"])
@pytest.mark.parametrize("relation", ["before", "after", "on"])
def test_dates(which: str, relation: str) -> None:
    c = cond(f"{which} {relation} 2024-02-29")
    assert isinstance(c, ast.DateTest) and (c.which, c.relation, c.date) == (
        which,
        relation,
        dt.date(2024, 2, 29),
    )


@pytest.mark.parametrize(
    ("word", "flag", "present"),
    [
        ("seen", "\\Seen", True),
        ("read", "\\Seen", True),
        ("unseen", "\\Seen", False),
        ("unread", "\\Seen", False),
        ("flagged", "\\Flagged", True),
        ("unflagged", "\\Flagged", False),
        ("answered", "\\Answered", True),
        ("unanswered", "\\Answered", False),
        ("draft", "\\Draft", True),
        ("deleted", "\\Deleted", True),
    ],
)
def test_flags(word: str, flag: str, present: bool) -> None:
    c = cond(word)
    assert isinstance(c, ast.FlagTest) and (c.flag, c.present) == (flag, present)


def test_keyword_attachment_tests() -> None:
    c = cond('tagged "$Work"')
    assert c == ast.KeywordTest("$Work", c.span)
    assert isinstance(cond("has attachment"), ast.HasAttachment)
    c = cond(r"attachment name matches /\.pdf$/")
    assert isinstance(c, ast.AttachmentNameTest) and c.op == "matches" and c.regex is not None
    assert c.regex.pattern == r"\.pdf$" and c.value is None
    c = cond('attachment name contains "invoice"')
    assert isinstance(c, ast.AttachmentNameTest) and (c.op, c.value, c.regex) == ("contains", "invoice", None)


def test_strings_and_regex_escapes() -> None:
    c = cond(r'subject is "say \"hi\" \\ bye"')
    assert isinstance(c, ast.StringTest) and c.value == 'say "hi" \\ bye'
    c = cond(r"subject matches /a\/b\d/ims")
    assert isinstance(c, ast.RegexTest) and c.regex.pattern == r"a/b\d" and c.regex.flags == "ims"
    c = cond("subject matches /Exact/c")
    assert isinstance(c, ast.RegexTest) and c.regex.case_sensitive


def test_comments_and_hash_in_strings() -> None:
    r = rule('# lead\nrule "x" { # c\n when subject contains "#1" # trailing\n then stop # end\n}\n# tail')
    assert isinstance(r.condition, ast.StringTest) and r.condition.value == "#1"


def test_keywords_are_case_insensitive() -> None:
    upper = rule(
        'RULE "x" IN "INBOX" EVERY Monday AT 09:00 LIMIT 3 { WHEN From CONTAINS "a" AND NOT Seen '
        'OR Size > 1 Mb THEN Move TO "y"; Mark READ }'
    )
    lower = rule(
        'rule "x" in "INBOX" every monday at 09:00 limit 3 { when from contains "a" and not seen '
        'or size > 1 mb then move to "y"; mark read }'
    )
    assert shape(upper) == shape(lower)


# ---------------------------------------------------------------- actions


def test_every_action() -> None:
    assert isinstance(action('move to "A/{year}/{month}/{day}"'), ast.Move)
    assert isinstance(action('copy to "B"'), ast.Copy)
    a = action("archive")
    assert isinstance(a, ast.Archive) and a.dest is None
    a = action('archive to "Archive/{year}"')
    assert isinstance(a, ast.Archive) and a.dest is not None and a.dest.raw == "Archive/{year}"
    assert action("delete") == ast.Delete(False, action("delete").span)
    a = action("delete permanently")
    assert isinstance(a, ast.Delete) and a.permanently
    a = action("mark unread")
    assert isinstance(a, ast.SetFlag) and (a.flag, a.on) == ("\\Seen", False)
    a = action("flag")
    assert isinstance(a, ast.SetFlag) and (a.flag, a.on) == ("\\Flagged", True)
    a = action("unflag")
    assert isinstance(a, ast.SetFlag) and (a.flag, a.on) == ("\\Flagged", False)
    a = action('tag "$Label"')
    assert isinstance(a, ast.Tag) and (a.keyword, a.on) == ("$Label", True)
    a = action('untag "$Label"')
    assert isinstance(a, ast.Tag) and not a.on
    assert isinstance(action('forward to "a@b.org"'), ast.Forward)
    assert isinstance(action('redirect to "a@b.org"'), ast.Redirect)
    assert isinstance(action("stop"), ast.Stop)


def test_action_separators() -> None:
    r = rule('rule "x" { then flag, mark read; tag "$a"\n stop }')
    assert [type(a) for a in r.actions] == [ast.SetFlag, ast.SetFlag, ast.Tag, ast.Stop]


def test_template_placeholders() -> None:
    a = action('move to "L/{from.domain}/{list}/{match.2}"')
    assert isinstance(a, ast.Move)
    names = [(p.name, p.index) for p in a.dest.parts if isinstance(p, ast.Placeholder)]
    assert names == [("from.domain", 0), ("list", 0), ("match", 2)]


# ---------------------------------------------------------------- test blocks


def test_given_clauses() -> None:
    rf = parse_ok(
        'test "t" {\n given "m.eml" flags seen, flagged, "$Work" tagged "$X" received 2020-01-02 10:30\n'
        ' in "Lists" account "work" now 2024-05-01 12:00\n expect move to "A", mark read\n}'
    )
    g = rf.tests[0].given
    assert g.flags == ("\\Seen", "\\Flagged", "$Work", "$X")
    assert g.received == dt.datetime(2020, 1, 2, 10, 30) and g.now == dt.datetime(2024, 5, 1, 12, 0)
    assert (g.mailbox, g.account) == ("Lists", "work")
    assert len(rf.tests[0].expect) == 2


def test_given_iso_datetime() -> None:
    rf = parse_ok('test "t" { given "m.eml" now 2024-05-01T12:00 received 2024-04-30 expect keep }')
    g = rf.tests[0].given
    assert g.now == dt.datetime(2024, 5, 1, 12, 0) and g.received == dt.datetime(2024, 4, 30)


def test_rules_and_tests_mix_in_one_file() -> None:
    rf = parse_ok('rule "a" { then stop }\ntest "t" { given "x.eml" expect keep }\nrule "b" { then stop }')
    assert [r.name for r in rf.rules] == ["a", "b"] and [t.name for t in rf.tests] == ["t"]


def test_recovery_keeps_good_rules() -> None:
    rf, diags = parse_text(
        'rule "a" { then stop }\nrule "b" { when then stop }\nrule "c" { then stop }', "t.rules"
    )
    assert rf is not None and [r.name for r in rf.rules] == ["a", "c"]
    assert len(diags) == 1 and diags[0].span.line == 2


def test_empty_file() -> None:
    rf = parse_ok("# nothing here\n")
    assert rf.rules == () and rf.tests == ()


def test_every_grammar_rule_has_a_builder_method() -> None:
    """Inline building needs a method per rule or alias; a missing one would leak a parse Tree."""
    from mailrules.dsl.parser import get_parser
    from mailrules.dsl.transform import AstBuilder

    parser = get_parser()
    # a `?rule` makes a node only when it has more than one child
    names = {r.alias or r.origin.name for r in parser.rules if not r.options.expand1 or len(r.expansion) > 1}
    names = {str(n) for n in names if not str(n).startswith("_")}
    missing = sorted(n for n in names if not callable(getattr(AstBuilder, n, None)))
    assert missing == []


def test_rule_names_in_the_parse_table_are_plain_strings() -> None:
    """build_parser swaps Lark's Token rule names for the table's own str keys (a lookup per
    reduction); with the tables loaded from the cache too."""
    from mailrules.dsl.parser import get_parser

    states = get_parser().parser.parser.parser.parse_table.states
    names = [a.origin.name for acts in states.values() for _, a in acts.values() if hasattr(a, "origin")]
    assert names and all(type(n) is str for n in names)


def test_header_clauses_in_any_order() -> None:
    a = rule('rule "x" limit 5 every 5 minutes for account "w" in "X" { then stop }')
    b = rule('rule "x" in "X" for account "w" every 5 minutes limit 5 { then stop }')
    assert shape(a) == shape(b)
