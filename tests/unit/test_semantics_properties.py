"""Property tests of the semantics: sanitized values stay one harmless segment; §6 rule order."""

from __future__ import annotations

import datetime as dt
import unicodedata
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mailrules.dsl import ast as A
from mailrules.dsl.semantics import (
    EvalContext,
    evaluate_condition,
    evaluate_message,
    render_template,
    sanitize_value,
)
from mailrules.message.view import MessageView
from mailrules.source import Span

EML = Path(__file__).resolve().parent.parent / "fixtures" / "eml"
SP = Span("p.rules", 1, 1)
CTX = EvalContext(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.UTC)
SEPARATORS = st.sampled_from(["/", ".", "\\", "|", ":"])
NASTY = st.text(alphabet=st.sampled_from(list("./\\*%~ \t\r\n\x00\x1b\u202e\u200bab_é")) | st.characters())


@settings(max_examples=400, deadline=None)
@given(NASTY, SEPARATORS)
def test_sanitized_value_is_one_harmless_segment(value: str, sep: str) -> None:
    out = sanitize_value(value, sep)
    assert out
    assert not set(out) & (set("/.\\*%") | set(sep))
    assert len(out) <= 100
    assert all(unicodedata.category(ch)[0] != "C" for ch in out)
    assert out == out.strip() and not out.startswith("~")


@settings(max_examples=200, deadline=None)
@given(NASTY, SEPARATORS)
def test_template_keeps_its_prefix_and_depth(value: str, sep: str) -> None:
    tpl = A.Template(
        f"Lists{sep}{{match.1}}",
        (A.TemplateText(f"Lists{sep}"), A.Placeholder("match", 1, SP)),
        SP,
    )
    ctx = EvalContext(CTX.now, CTX.tz, separator=sep)
    out = render_template(tpl, MessageView.from_bytes(b"x: y\n\n"), (value,), ctx)
    assert out.startswith(f"Lists{sep}")
    assert out.count(sep) == 1 and "*" not in out and "%" not in out


VIEWS = [MessageView.from_file(EML / n) for n in ("from-mum.eml", "github-pr.eml", "list-python.eml")]
CONDS: list[A.Condition] = [
    A.All(SP),
    A.Not(A.All(SP), SP),
    A.HeaderExists("List-Id", SP),
    A.StringTest(A.FieldRef("from", None, SP), "contains", "mum", SP),
    A.RegexTest(A.FieldRef("subject", None, SP), A.Regex(r"(\w+)", "", SP), SP),
]
ACTIONS: list[A.Action] = [
    A.SetFlag("\\Seen", True, SP),
    A.Tag("$X", True, SP),
    A.Forward("f@example.org", SP),
    A.Copy(A.Template("C", (A.TemplateText("C"),), SP), SP),
    A.Move(A.Template("M", (A.TemplateText("M"),), SP), SP),
    A.Move(A.Template("{list}", (A.Placeholder("list", 0, SP),), SP), SP),  # fails without List-Id
    A.Delete(False, SP),
    A.Archive(None, SP),
    A.Stop(SP),
]
RULES = st.lists(
    st.tuples(
        st.sampled_from(range(len(CONDS))),
        st.lists(st.sampled_from(range(len(ACTIONS))), min_size=1, max_size=4),
        st.sampled_from([("INBOX",), ("Other",)]),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(RULES, st.sampled_from(range(len(VIEWS))))
def test_rule_order_and_end_of_evaluation(
    spec: list[tuple[int, list[int], tuple[str, ...]]], vi: int
) -> None:
    view = VIEWS[vi]
    rules = [
        A.Rule(f"r{i}", mbx, (), A.OnArrival(SP), None, CONDS[c], tuple(ACTIONS[a] for a in acts), SP)
        for i, (c, acts, mbx) in enumerate(spec)
    ]
    out = evaluate_message(rules, view, account=None, mailbox="INBOX", ctx=CTX)
    expected: list[tuple[str, A.Action]] = []
    for r in rules:
        if r.mailboxes != ("INBOX",) or not evaluate_condition(r.condition, view, CTX).ok:
            continue
        expected += [(r.name, a) for a in r.actions]
        ended = any(
            isinstance(a, A.Stop) or (isinstance(a, A.REMOVING_ACTIONS) and not _fails(a, view))
            for a in r.actions
        )
        if ended:
            break
    assert [(p.rule.name, p.action) for p in out] == expected
    assert [p.error is not None for p in out] == [_fails(p.action, view) for p in out]


def _fails(a: A.Action, view: MessageView) -> bool:
    """Only `move to "{list}"` can fail here, on a message without List-Id."""
    return isinstance(a, A.Move) and a.dest.raw == "{list}" and view.list_id is None
