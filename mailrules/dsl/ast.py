"""The typed AST of the rule language: frozen dataclasses, tuple fields, a Span on every node."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal, Union

from mailrules.dsl.ast_server import GMAIL_CATEGORIES as GMAIL_CATEGORIES
from mailrules.dsl.ast_server import GMAIL_ONLY as GMAIL_ONLY
from mailrules.dsl.ast_server import SERVER_ONLY as SERVER_ONLY
from mailrules.dsl.ast_server import Given as Given
from mailrules.dsl.ast_server import GmailCategory as GmailCategory
from mailrules.dsl.ast_server import GmailFacts as GmailFacts
from mailrules.dsl.ast_server import GmailSearch as GmailSearch
from mailrules.dsl.ast_server import ThreadFacts as ThreadFacts
from mailrules.dsl.ast_server import ThreadTagged as ThreadTagged
from mailrules.dsl.ast_triggers import At as At
from mailrules.dsl.ast_triggers import Cron as Cron
from mailrules.dsl.ast_triggers import Every as Every
from mailrules.dsl.ast_triggers import FlagChange as FlagChange
from mailrules.dsl.ast_triggers import Manually as Manually
from mailrules.dsl.ast_triggers import OnArrival as OnArrival
from mailrules.dsl.ast_triggers import Trigger as Trigger
from mailrules.source import Span

# ---------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------

#: Fields of the language. `recipient` = to, cc or bcc. `list` is the List-Id header.
FieldName = Literal[
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "recipient",
    "reply-to",
    "subject",
    "list",
    "body",
    "text",
    "envelope to",
    "envelope from",
]
ADDRESS_FIELDS: frozenset[str] = frozenset(
    {"from", "sender", "to", "cc", "bcc", "recipient", "reply-to", "envelope to", "envelope from"}
)
#: The headers that stand for the SMTP envelope, which an IMAP client never sees: the delivery
#: agent's Delivered-To (and Postfix's X-Original-To) for `envelope to`, Return-Path for `from`.
ENVELOPE_HEADERS: dict[str, tuple[str, ...]] = {
    "envelope to": ("Delivered-To", "X-Original-To"),
    "envelope from": ("Return-Path",),
}

#: String operators. `is` on an address field compares with each address (not the display name).
StringOp = Literal["contains", "is", "starts_with", "ends_with"]


@dataclass(frozen=True, slots=True)
class Regex:
    """`/pattern/flags`: Python `re` syntax; case-insensitive unless the `c` flag is given."""

    pattern: str
    flags: str  # as written after the closing slash, e.g. "" or "c" or "ims"
    span: Span

    @property
    def case_sensitive(self) -> bool:
        return "c" in self.flags

    @property
    def groups(self) -> int:
        import re

        try:
            return re.compile(self.pattern).groups
        except re.error:
            return 0


@dataclass(frozen=True, slots=True)
class FieldRef:
    """Either a named field (`from`, `subject`, ...) or `header "X-Name"`."""

    field: FieldName | None
    header: str | None  # set when written `header "X-Name"`
    span: Span

    def __str__(self) -> str:
        return f'header "{self.header}"' if self.header is not None else str(self.field)


@dataclass(frozen=True, slots=True)
class StringTest:
    """`FIELD contains|is|starts with|ends with "S"`. `X any [...]` is desugared into an Or."""

    target: FieldRef
    op: StringOp
    value: str
    span: Span


@dataclass(frozen=True, slots=True)
class RegexTest:
    """`FIELD matches /RE/`: search over the decoded field; captures feed `{match.N}`."""

    target: FieldRef
    regex: Regex
    span: Span


@dataclass(frozen=True, slots=True)
class DomainTest:
    """`FIELD domain is "example.org"`: some address's domain is it or a subdomain of it."""

    target: FieldRef  # an address field
    domain: str  # lower-cased, without leading "@" or "."
    span: Span


#: Parts of an address: Sieve's :localpart (RFC 5228) and subaddress :user, :detail (RFC 5233).
AddressPart = Literal["user", "detail", "localpart"]


@dataclass(frozen=True, slots=True)
class AddressPartTest:
    """`FIELD user|detail|localpart OP "S"` or `... matches /RE/`, over every address of the field.

    `localpart` is what comes before the `@`; `user` the local part up to the first `+`, `detail`
    what follows it (an address without `+` has no detail: a `detail` test is false for it).
    """

    target: FieldRef  # an address field
    part: AddressPart
    op: StringOp | Literal["matches"]
    value: str | None  # for string ops
    regex: Regex | None  # for matches
    span: Span


@dataclass(frozen=True, slots=True)
class HeaderExists:
    """`header "X-Name" exists`."""

    header: str
    span: Span


@dataclass(frozen=True, slots=True)
class SizeTest:
    """`size > 1 MB` (RFC822.SIZE). `op` is one of > < >= <=; `bytes` is the size in octets."""

    op: Literal[">", "<", ">=", "<="]
    bytes: int
    span: Span


AgeUnit = Literal["minutes", "hours", "days", "weeks", "months", "years"]


@dataclass(frozen=True, slots=True)
class AgeTest:
    """`older than N UNIT` / `newer than N UNIT`, by INTERNALDATE, relative to now."""

    older: bool
    amount: int
    unit: AgeUnit
    span: Span


@dataclass(frozen=True, slots=True)
class DateTest:
    """`received|sent before|after|on YYYY-MM-DD`.

    `received` uses INTERNALDATE (day in the configured time zone); `sent` uses the date part
    of the `Date:` header as written. A message without a valid `Date:` matches no `sent` test.
    """

    which: Literal["received", "sent"]
    relation: Literal["before", "after", "on"]
    date: dt.date
    span: Span


#: System flags the language names. `read` is written as `seen`.
SystemFlag = Literal["\\Seen", "\\Flagged", "\\Answered", "\\Draft", "\\Deleted"]


@dataclass(frozen=True, slots=True)
class FlagTest:
    """`seen`, `unseen`, `flagged`, ...: `present=False` for the negative forms (unseen, unread)."""

    flag: SystemFlag
    present: bool
    span: Span


@dataclass(frozen=True, slots=True)
class KeywordTest:
    """`tagged "$Label"`: an IMAP keyword is set."""

    keyword: str
    span: Span


@dataclass(frozen=True, slots=True)
class HasAttachment:
    """`has attachment`: a MIME part with Content-Disposition attachment, or with a file name."""

    span: Span


@dataclass(frozen=True, slots=True)
class AttachmentNameTest:
    """`attachment name OP S` or `attachment name matches /RE/`, over every attachment's name."""

    op: StringOp | Literal["matches"]
    value: str | None  # for string ops
    regex: Regex | None  # for matches
    span: Span


@dataclass(frozen=True, slots=True)
class All:
    """`when all`, or no `when`: every message in scope."""

    span: Span


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Condition, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Condition, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Not:
    item: Condition
    span: Span


Condition = Union[
    StringTest,
    RegexTest,
    DomainTest,
    AddressPartTest,
    HeaderExists,
    SizeTest,
    AgeTest,
    DateTest,
    FlagTest,
    KeywordTest,
    HasAttachment,
    AttachmentNameTest,
    GmailSearch,
    GmailCategory,
    ThreadTagged,
    All,
    And,
    Or,
    Not,
]

# ---------------------------------------------------------------------------
# Templates (mailbox names in move / copy / archive)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemplateText:
    text: str


@dataclass(frozen=True, slots=True)
class Placeholder:
    """`{year}`, `{month}`, `{day}`, `{from.domain}`, `{list}`, `{match.N}` (index = N)."""

    name: Literal["year", "month", "day", "from.domain", "list", "match"]
    index: int  # N for match, 0 otherwise
    span: Span
    filters: tuple[Literal["lower", "upper", "capitalize"], ...] = ()  # `{list|lower}`, in order


@dataclass(frozen=True, slots=True)
class Template:
    """A mailbox or tag name with placeholders; `raw` is the text as written (without quotes)."""

    raw: str
    parts: tuple[TemplateText | Placeholder, ...]
    span: Span

    @property
    def is_literal(self) -> bool:
        return all(isinstance(p, TemplateText) for p in self.parts)

    @property
    def literal_prefix(self) -> str:
        """The text before the first placeholder: a substituted value never escapes it."""
        out = []
        for p in self.parts:
            if not isinstance(p, TemplateText):
                break
            out.append(p.text)
        return "".join(out)


# ---------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Move:
    dest: Template
    span: Span


@dataclass(frozen=True, slots=True)
class Copy:
    dest: Template
    span: Span


@dataclass(frozen=True, slots=True)
class Archive:
    """`archive` (dest None: the account's archive mailbox) or `archive to F`."""

    dest: Template | None
    span: Span


@dataclass(frozen=True, slots=True)
class Delete:
    """`delete` (move to trash) or `delete permanently` (\\Deleted + UID EXPUNGE of these UIDs)."""

    permanently: bool
    span: Span


@dataclass(frozen=True, slots=True)
class SetFlag:
    """`mark read|unread` (\\Seen), `flag|unflag` (\\Flagged), `mark [not] important` (Gmail's
    \\Important label; the keyword $Important of RFC 8457 elsewhere): `on` says set or clear."""

    flag: Literal["\\Seen", "\\Flagged", "\\Important"]
    on: bool
    span: Span


@dataclass(frozen=True, slots=True)
class Tag:
    """`tag "$Label"` / `untag "$Label"`; `keyword` is the name as written. A name with
    placeholders (`tag "lists/{list}"`) has its `template`, rendered for each message."""

    keyword: str
    on: bool
    span: Span
    template: Template | None = None


@dataclass(frozen=True, slots=True)
class Forward:
    """`forward to "addr"`: a new message with the original attached as message/rfc822."""

    address: str
    span: Span


@dataclass(frozen=True, slots=True)
class Redirect:
    """`redirect to "addr"`: the original, unchanged, to a new envelope recipient."""

    address: str
    span: Span


@dataclass(frozen=True, slots=True)
class Stop:
    span: Span


Action = Union[Move, Copy, Archive, Delete, SetFlag, Tag, Forward, Redirect, Stop]

#: Actions after which no later rule sees the message.
REMOVING_ACTIONS = (Move, Archive, Delete)

# Triggers: mailrules/dsl/ast_triggers.py (re-exported above).

# ---------------------------------------------------------------------------
# Rules, tests, files
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """`rule NAME [in ...] [for account ...] [TRIGGER] [limit N] { when ... then ... }`."""

    name: str
    mailboxes: tuple[str, ...]  # default ("INBOX",)
    accounts: tuple[str, ...]  # empty: every account
    trigger: Trigger
    limit: int | None
    condition: Condition
    actions: tuple[Action, ...]
    span: Span
    name_span: Span | None = None
    group: str | None = None  # `group "NAME" TRIGGER { ... }`: runs with the group, in order

    def applies_to(self, account: str | None, mailbox: str) -> bool:
        """In scope for this account (None: any) and mailbox (INBOX compared case-insensitively)."""
        if account is not None and self.accounts and account not in self.accounts:
            return False
        norm = mailbox.upper() if mailbox.upper() == "INBOX" else mailbox
        return any((m.upper() if m.upper() == "INBOX" else m) == norm for m in self.mailboxes)


@dataclass(frozen=True, slots=True)
class TestBlock:
    """`test "name" { given ... expect ACTIONS | keep }`; `expect` is empty for keep."""

    name: str
    given: Given
    expect: tuple[Action, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class RuleFile:
    path: str
    rules: tuple[Rule, ...]
    tests: tuple[TestBlock, ...]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Every rule file of a directory, in lexical file order; rules in file then position order."""

    files: tuple[RuleFile, ...]
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(r for f in self.files for r in f.rules)

    @property
    def tests(self) -> tuple[TestBlock, ...]:
        return tuple(t for f in self.files for t in f.tests)

    def rule(self, name: str) -> Rule | None:
        for r in self.rules:
            if r.name.casefold() == name.casefold():
                return r
        return None
