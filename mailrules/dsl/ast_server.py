"""AST nodes of the tests only a server can answer (Gmail's search, threads), and of a test block's
`given` (which declares what the server would answer for its message).

They are part of `ast.Condition` and re-exported by `mailrules.dsl.ast`; kept here so that the
AST module stays one screenful per part.
"""

from __future__ import annotations

import datetime as dt
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


@dataclass(frozen=True, slots=True)
class ThreadTagged:
    """`thread tagged "killed"`: some message of this message's thread, in the mailbox being read,
    has the keyword (a Gmail label on Gmail). Threads are the server's: THREAD=REFERENCES
    (RFC 5256), or Gmail's own (X-GM-THRID); a server with neither cannot answer it."""

    keyword: str
    span: Span


#: The tests only a server answers (the planner makes them exact there, or refuses the rule).
SERVER_ONLY = (GmailSearch, GmailCategory, ThreadTagged)
#: Of those, the ones only Gmail answers.
GMAIL_ONLY = (GmailSearch, GmailCategory)


@dataclass(frozen=True, slots=True)
class GmailFacts:
    """`given "x.eml" gmail [category promotions] [search "older_than:1y"]...`: the message is on
    Gmail (tags are labels), in this category, and Gmail's search finds it for these queries."""

    category: str | None = None
    searches: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ThreadFacts:
    """`given "x.eml" thread tagged "killed"`: a message of its thread (in its mailbox) has these
    keywords; what the server's threads would say, which one message cannot."""

    tags: tuple[str, ...] = ()


def normal_query(query: str) -> str:
    """A Gmail query compared as a test block declares it: white space runs as one space, no case."""
    return " ".join(query.split()).casefold()


@dataclass(frozen=True, slots=True)
class Given:
    """`given "file.eml" [flags seen, flagged] [tagged "$X"] [received 2020-01-01] [in "Mbox"]
    [account "work"] [now 2024-05-01T12:00] [gmail ...] [thread tagged "k"] [changed]`. The path is relative
    to the rule file."""

    path: str
    flags: tuple[str, ...]  # IMAP flags and keywords, e.g. ("\\Seen", "$Work")
    received: dt.datetime | None
    mailbox: str  # default "INBOX"
    account: str | None  # None: account filters of rules are ignored
    now: dt.datetime | None
    span: Span
    gmail: GmailFacts | None = None  # `gmail [category X] [search "q"]`: on Gmail, with these facts
    thread: ThreadFacts | None = None  # `thread tagged "k"`: what its thread holds
    #: `changed`: someone else just changed its flags (to `flags`): the `on flag change` rules run
    #: on it, and only they; without it they do not (language.md, Test blocks)
    changed: bool = False
