"""Server dialects: which SEARCH features the connected IMAP server offers, from its CAPABILITY list."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def _caps(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Post-login capabilities of Dovecot 2.3 (default config) and Gmail, as recorded in imap-notes.md.
DOVECOT_CAPS = _caps(
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS "
    "THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS "
    "LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH "
    "LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY "
    "SPECIAL-USE"
)
GMAIL_CAPS = _caps(
    "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS COMPRESS=DEFLATE "
    "ENABLE MOVE CONDSTORE ESEARCH UTF8=ACCEPT LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE "
    "APPENDLIMIT=35651584"
)
# Exchange Online after login (third-party transcripts, imap-notes.md "Provider specifics"): no
# SPECIAL-USE, ESEARCH, CONDSTORE/QRESYNC, ENABLE, WITHIN, UTF8/I18NLEVEL or COMPRESS.
MICROSOFT_CAPS = _caps(
    "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CLIENTACCESSRULES "
    "CLIENTNETWORKPRESENCELOCATION BACKENDAUTHENTICATE CHILDREN IDLE NAMESPACE LITERAL+"
)
RFC3501_CAPS = ("IMAP4rev1",)
# Capabilities only Exchange (Online and on-premises) advertises; the bare "IMAP4" (RFC 1730) is
# in every Exchange CAPABILITY seen and in no other server's we target.
_EXCHANGE_CAPS = frozenset(
    {"CLIENTACCESSRULES", "CLIENTNETWORKPRESENCELOCATION", "BACKENDAUTHENTICATE", "IMAP4"}
)
#: RFC 7162 §4: command lines near 8 KB; the UID set gets 7,000 bytes, the rest of the line 1 KB.
UID_SET_BYTES = 7000
#: Exchange's MaxCommandSize bounds the whole line: 10,240 bytes by default, settable from 1,024
#: (Set-ImapSettings); Exchange Online publishes none and answered a 40 KB UID SEARCH with
#: `BAD Command Error. 10` (third-party report). 4,000 keeps a command with a long mailbox name
#: near 5 KB.
MICROSOFT_UID_SET_BYTES = 4000


@dataclass(frozen=True, slots=True)
class Dialect:
    """What the planner and serializer may use on one server.

    `utf8_search`: SEARCH CHARSET UTF-8 is known to work (IMAP4rev2 requires it; RFC 3501 only
    requires US-ASCII, and Exchange 2010 answered BADCHARSET), so non-ASCII values may go out as
    literals. `gmail`: X-GM-EXT-1; Gmail's text search is word-based, so text keys are not exact,
    tags are labels (X-GM-LABELS) and X-GM-RAW prefilters what SEARCH cannot say. `microsoft`:
    Exchange (Online or on-premises), which advertises little and limits command length.
    `uid_set_bytes`: the longest UID set one command may carry.
    """

    name: str = "rfc3501"
    within: bool = False
    esearch: bool = False
    condstore: bool = False
    gmail: bool = False
    utf8_search: bool = False
    #: Seconds the server's clock (and the moment a plan's SEARCH runs) may be off from the `now`
    #: it was planned with: OLDER/YOUNGER are widened by it and checked on INTERNALDATE. 0 trusts
    #: the clocks and makes OLDER/YOUNGER exact.
    clock_skew: int = 300
    literal_plus: bool = False
    literal_minus: bool = False
    move: bool = False
    uidplus: bool = False
    special_use: bool = False
    microsoft: bool = False
    uid_set_bytes: int = UID_SET_BYTES
    #: The server can tell which messages share a thread: THREAD=REFERENCES (RFC 5256), or
    #: Gmail's X-GM-THRID. `thread tagged` needs it.
    threads: bool = False

    @classmethod
    def from_capabilities(
        cls, caps: Iterable[str | bytes], name: str = "server", *, clock_skew: int = 300
    ) -> Dialect:
        """The dialect of a server advertising `caps` (after login: capabilities change then)."""
        c = {(x.decode("ascii", "replace") if isinstance(x, bytes) else x).upper() for x in caps}
        rev2 = "IMAP4REV2" in c
        microsoft = bool(c & _EXCHANGE_CAPS) and "X-GM-EXT-1" not in c
        return cls(
            name=name,
            clock_skew=clock_skew,
            within="WITHIN" in c,
            esearch="ESEARCH" in c or rev2,
            condstore="CONDSTORE" in c or "QRESYNC" in c,
            gmail="X-GM-EXT-1" in c,
            # I18NLEVEL (RFC 5255) servers implement charset-aware search; rev2 must take UTF-8.
            utf8_search=rev2 or any(x.startswith(("UTF8=", "I18NLEVEL=")) for x in c) or "X-GM-EXT-1" in c,
            literal_plus="LITERAL+" in c,
            literal_minus="LITERAL-" in c,
            move="MOVE" in c or rev2,
            uidplus="UIDPLUS" in c or rev2,
            special_use="SPECIAL-USE" in c,
            microsoft=microsoft,
            uid_set_bytes=MICROSOFT_UID_SET_BYTES if microsoft else UID_SET_BYTES,
            threads="THREAD=REFERENCES" in c or "X-GM-EXT-1" in c,
        )

    @classmethod
    def named(cls, name: str) -> Dialect:
        """A known server: "rfc3501" (plain IMAP4rev1), "dovecot" (2.3 defaults), "gmail" or "microsoft"."""
        table = {
            "rfc3501": RFC3501_CAPS,
            "dovecot": DOVECOT_CAPS,
            "gmail": GMAIL_CAPS,
            "microsoft": MICROSOFT_CAPS,
        }
        try:
            caps = table[name.lower()]
        except KeyError:
            raise ValueError(f"unknown dialect {name!r}; expected one of {', '.join(table)}") from None
        return cls.from_capabilities(caps, name=name.lower())
