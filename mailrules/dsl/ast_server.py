"""AST nodes of the tests only a server can answer (Gmail's search), and what a test block declares of them.

They are part of `ast.Condition` and re-exported by `mailrules.dsl.ast`; kept here so that the
AST module stays one screenful per part.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailrules.source import Span

#: Gmail's inbox categories, as `category:` takes them in its search (Gmail's search operators).
GMAIL_CATEGORIES = ("primary", "social", "promotions", "updates", "forums")


@dataclass(frozen=True, slots=True)
class GmailSearch:
    """`gmail search "category:promotions older_than:1y"`: Gmail's own search (X-GM-RAW), whole.

    Only Gmail answers it; no local check can: a rule with it runs only on Gmail accounts.
    """

    query: str
    span: Span


@dataclass(frozen=True, slots=True)
class GmailCategory:
    """`category is "promotions"`: the message is in this Gmail inbox category (X-GM-RAW category:)."""

    category: str  # one of GMAIL_CATEGORIES, lower case
    span: Span


#: The tests only a server answers (the planner makes them exact there, or refuses the rule).
SERVER_ONLY = (GmailSearch, GmailCategory)


@dataclass(frozen=True, slots=True)
class GmailFacts:
    """`given "x.eml" gmail [category promotions] [search "older_than:1y"]...`: the message is on
    Gmail (tags are labels), in this category, and Gmail's search finds it for these queries."""

    category: str | None = None
    searches: tuple[str, ...] = ()


def normal_query(query: str) -> str:
    """A Gmail query compared as a test block declares it: white space runs as one space, no case."""
    return " ".join(query.split()).casefold()
