"""The one walk over a condition's atoms (dsl/walk.py) and the folds built on it."""

from __future__ import annotations

from mailrules.compile.needs import FetchNeeds, fetch_needs
from mailrules.dsl import ast as A
from mailrules.dsl import unparse
from mailrules.dsl.parser import parse_text
from mailrules.dsl.walk import atoms, regexes
from mailrules.engine import prefetch
from mailrules.source import Span

S = Span("w.rules", 1, 1)


def cond(text: str) -> A.Condition:
    rf, diags = parse_text(f'rule "x" {{ when {text} then flag }}', "w.rules")
    assert rf is not None and not diags, diags
    return rf.rules[0].condition


def test_atoms_in_written_order_under_and_or_not() -> None:
    c = cond('seen and not (from matches /a/ or tagged "$X") or not not all and size > 1 KB')
    assert [unparse.atom(a) for a in atoms(c)] == [
        "seen",
        "from matches /a/",
        'tagged "$X"',
        "all",
        "size > 1 KB",
    ]
    assert list(atoms(cond("has attachment"))) == [A.HasAttachment(cond("has attachment").span)]


def test_a_condition_deeper_than_the_recursion_limit() -> None:
    deep: A.Condition = A.FlagTest("\\Seen", True, S)
    for i in range(5000):
        deep = A.Not(deep, S) if i % 2 else A.And((deep, A.KeywordTest(f"$k{i}", S)), S)
    found = list(atoms(deep))
    assert len(found) == 2501 and found[0] == A.FlagTest("\\Seen", True, S)
    assert len(prefetch.tested_flags(deep)) == 2501


def test_regexes_of_fields_and_attachment_names() -> None:
    c = cond('subject matches /a/ and not attachment name matches /b/c or attachment name is "x"')
    assert [(r.pattern, r.flags) for r in regexes(c)] == [("a", ""), ("b", "c")]


def test_the_folds_on_it() -> None:
    c = cond('flagged and not tagged "$Work" or from contains "a" and received on 2024-01-01')
    assert prefetch.tested_flags(c) == {"\\flagged", "$work"}
    assert fetch_needs(c) == FetchNeeds(frozenset({"From"}), internaldate=True, flags=True)
