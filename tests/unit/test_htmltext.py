"""HTML to text: what the HTML tokenizer calls text stays, markup goes, hostile input ends."""

from __future__ import annotations

import html
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrules.message.htmltext import html_to_text


def words(s: str) -> str:
    return " ".join(s.split())


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ("<p>Hello <b>world</b></p>", "Hello world"),
        ("a < b and c > d", "a < b and c > d"),  # `<` before a space is text (§13.2.5.6)
        ("1<2", "1<2"),
        ("x <3 y", "x <3 y"),
        ("<a href='x>y'>link</a> text", "link text"),  # a quoted value may hold `>`
        ('<a title="a > b" href=x>t</a>', "t"),
        ('<a b=c"d>e</a>', "e"),  # a quote inside an unquoted value is a character
        ("<!-- hidden -->shown", "shown"),
        ("<!---->x<!-->y<!--->z", "x y z"),  # empty and abruptly closed comments
        ("<!-- a --!> b", "b"),
        ("<!DOCTYPE html><html>t</html>", "t"),
        ("<?xml version='1.0'?>t", "t"),
        ("<![CDATA[x]]>t", "]]>t"[3:]),  # in HTML content CDATA is a bogus comment up to `>`
        ("a</>b", "a b"),  # `</>` is dropped
        ("a</ 1>b", "a b"),  # `</` + non-letter: a bogus comment
        ("<script>var s = '<p>no</p>';</script>yes", "yes"),
        ("<SCRIPT type=x>no</ScRiPt >yes", "yes"),
        ("<style>p { color: red }</style>seen", "seen"),
        ("<script>no</scripts>still script</script>after", "after"),
        ("<scripts>text</scripts>", "text"),  # not a script element
        ("&lt;tag&gt; &#65;&#x42; caf&eacute; &nbsp;", "<tag> AB café"),
        ("&am<b>p;", "&am p;"),  # a tag splits what would be a character reference
        ("<p\nclass=x>multi</p>", "multi"),
        ("<title>Subject line</title>", "Subject line"),
    ],
)
def test_text_as_a_browser_sees_it(source: str, text: str) -> None:
    assert words(html_to_text(source)) == text


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ("before<!-- never closed <p>after", "before"),
        ("before<a href='never closed>after", "before"),
        ("before<script>never closed", "before"),
        ("before<a", "before"),
        ("before<!doctype", "before"),
        ("before</a", "before"),
        ("before<", "before<"),
        ("before</", "before</"),
    ],
)
def test_a_construct_left_open_swallows_the_rest(source: str, text: str) -> None:
    assert words(html_to_text(source)) == text


HOSTILE = ("<", "<!--", "<a ", "<a b='", "</", "<?", "<!", "a<b", "<<a", "<a>", "&")


@pytest.mark.parametrize("fragment", HOSTILE)
def test_hostile_repetitions_give_the_expected_text(fragment: str) -> None:
    source = fragment * 20_000
    out = html_to_text(source)
    if fragment in ("<", "&"):
        assert out == html.unescape(source)  # all text: no `<` there starts markup
    elif fragment == "a<b":
        assert out == "a "  # then one start tag `<ba<ba<b...`, never closed
    elif fragment == "<<a":
        assert out == "< "  # a `<` before `<` is text; `<a<<a...` is one tag, never closed
    else:
        assert out.strip() == ""


# The stripping mailrules used before: on well-formed HTML the new text is the same.
_OLD_DROP = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_OLD_TAG = re.compile(r"<[^>]*>")

_WELL_FORMED = st.recursive(
    st.text(alphabet="abc xyz&;é\n", max_size=8).map(html.escape),
    lambda inner: (
        st.builds(
            lambda tag, attr, body: f"<{tag}{attr}>{body}</{tag}>",
            st.sampled_from(["p", "b", "div", "a", "td"]),
            st.sampled_from(["", " class=x", ' href="u?a=1&amp;b=2"', " title='t'"]),
            st.lists(inner, max_size=3).map("".join),
        )
        | st.builds(lambda body: f"<!-- {body} -->", st.text(alphabet="ab <>", max_size=6))
        | st.builds(lambda body: f"<script>{body}</script>", st.text(alphabet="ab <>/", max_size=6))
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_WELL_FORMED, max_size=5).map("".join))
def test_well_formed_html_reads_as_before(source: str) -> None:
    old = html.unescape(_OLD_TAG.sub(" ", _OLD_DROP.sub(" ", source)))
    assert html_to_text(source) == old
