"""What the client must fetch to evaluate a residual: the headers each field reads, and the FETCH items."""

from __future__ import annotations

from dataclasses import dataclass

from mailrules.compile.serialize import is_atom
from mailrules.dsl import ast as A
from mailrules.dsl.walk import atoms

#: The header each language field reads (body and text read the whole message).
FIELD_HEADERS: dict[str, tuple[str, ...]] = {
    "from": ("From",),
    "sender": ("Sender",),
    "to": ("To",),
    "cc": ("Cc",),
    "bcc": ("Bcc",),
    "recipient": ("To", "Cc", "Bcc"),
    "reply-to": ("Reply-To",),
    "subject": ("Subject",),
    "list": ("List-Id",),
    "body": (),
    "text": (),
    "envelope to": A.ENVELOPE_HEADERS["envelope to"],
    "envelope from": A.ENVELOPE_HEADERS["envelope from"],
}


@dataclass(frozen=True, slots=True)
class FetchNeeds:
    """What the residual needs fetched. `body` means the whole message (BODY.PEEK[])."""

    headers: frozenset[str] = frozenset()
    body: bool = False
    bodystructure: bool = False
    internaldate: bool = False
    size: bool = False
    flags: bool = False

    def fetch_items(self) -> list[str]:
        """The IMAP FETCH data items (RFC 9051 §6.4.5); `.PEEK` so that \\Seen is not set."""
        items: list[str] = []
        if self.body:
            items.append("BODY.PEEK[]")
        elif self.headers:
            names = sorted(self.headers, key=str.lower)
            fields = " ".join(
                h if is_atom(h) else '"' + h.replace("\\", "\\\\").replace('"', '\\"') + '"' for h in names
            )
            items.append(f"BODY.PEEK[HEADER.FIELDS ({fields})]")
        if self.bodystructure:
            items.append("BODYSTRUCTURE")
        if self.internaldate:
            items.append("INTERNALDATE")
        if self.size:
            items.append("RFC822.SIZE")
        if self.flags:
            items.append("FLAGS")
        return items

    @property
    def nothing(self) -> bool:
        return not (
            self.headers or self.body or self.bodystructure or self.internaldate or self.size or self.flags
        )


def fetch_needs(residual: A.Condition | None) -> FetchNeeds:
    """What must be fetched to evaluate `residual` on the client."""
    if residual is None:
        return FetchNeeds()
    headers: set[str] = set()
    flags = {"body": False, "bodystructure": False, "internaldate": False, "size": False, "flags": False}
    for c in atoms(residual):
        if isinstance(c, A.StringTest | A.RegexTest | A.DomainTest | A.AddressPartTest):
            t = c.target
            if t.header is not None:
                headers.add(t.header)
            elif t.field in ("body", "text"):
                flags["body"] = True
            elif t.field is not None:
                headers.update(FIELD_HEADERS[t.field])
        elif isinstance(c, A.HeaderExists):
            headers.add(c.header)
        elif isinstance(c, A.HasAttachment | A.AttachmentNameTest):
            flags["bodystructure"] = True
        elif isinstance(c, A.DateTest):
            if c.which == "sent":
                headers.add("Date")
            else:
                flags["internaldate"] = True
        elif isinstance(c, A.AgeTest):
            flags["internaldate"] = True
        elif isinstance(c, A.SizeTest):
            flags["size"] = True
        elif isinstance(c, A.FlagTest | A.KeywordTest):
            flags["flags"] = True
    return FetchNeeds(frozenset(headers), **flags)
