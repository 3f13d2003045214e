"""The one walk over a condition's atoms (its tests), for the planner, the engine and the checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Union

from mailrules.dsl import ast

#: A leaf of a condition: a test, or `all`. And, Or and Not are the only other nodes.
Atom = Union[
    ast.StringTest,
    ast.RegexTest,
    ast.DomainTest,
    ast.AddressPartTest,
    ast.HeaderExists,
    ast.SizeTest,
    ast.AgeTest,
    ast.DateTest,
    ast.FlagTest,
    ast.KeywordTest,
    ast.HasAttachment,
    ast.AttachmentNameTest,
    ast.GmailSearch,
    ast.GmailCategory,
    ast.ThreadTagged,
    ast.All,
]


def atoms(cond: ast.Condition) -> Iterator[Atom]:
    """Every atom of `cond`, left to right as written, under any And, Or and Not.

    Iterative: a condition built by code may be deeper than the parser's nesting limit.
    """
    stack: list[ast.Condition] = [cond]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.And | ast.Or):
            stack.extend(reversed(node.items))
        elif isinstance(node, ast.Not):
            stack.append(node.item)
        else:
            yield node


def regexes(cond: ast.Condition) -> Iterator[ast.Regex]:
    """The regular expressions of `cond`'s `matches` tests (fields and attachment names), in order."""
    for atom in atoms(cond):
        if isinstance(atom, ast.RegexTest | ast.AttachmentNameTest | ast.AddressPartTest) and atom.regex:
            yield atom.regex


def server_only(cond: ast.Condition) -> list[ast.GmailSearch | ast.GmailCategory | ast.ThreadTagged]:
    """The tests of `cond` that only a server answers (Gmail's search, threads), left to right."""
    return [a for a in atoms(cond) if isinstance(a, ast.SERVER_ONLY)]


def gmail_only(cond: ast.Condition) -> list[ast.GmailSearch | ast.GmailCategory]:
    """The tests of `cond` that only Gmail answers (its search), left to right."""
    return [a for a in atoms(cond) if isinstance(a, ast.GMAIL_ONLY)]
