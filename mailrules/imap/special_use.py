"""Special-use mailbox resolution (RFC 6154): extended LIST, then LIST attributes, then well-known names."""

from __future__ import annotations

from collections.abc import Iterable

from mailrules.imap.commands import MailboxInfo

USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")

# Used only when the server marks nothing: names seen on Dovecot, Exchange, Apple Mail and Gmail.
FALLBACK_NAMES: dict[str, tuple[str, ...]] = {
    "\\Archive": ("Archive", "Archives", "[Gmail]/All Mail"),
    "\\Trash": ("Trash", "Deleted Items", "Deleted Messages", "[Gmail]/Trash"),
    "\\Sent": ("Sent", "Sent Items", "Sent Messages", "[Gmail]/Sent Mail"),
    "\\Junk": ("Junk", "Spam", "Junk E-mail", "Junk Email", "[Gmail]/Spam"),
    "\\Drafts": ("Drafts", "[Gmail]/Drafts"),
}


def attributes_to_uses(mailboxes: Iterable[MailboxInfo]) -> dict[str, str]:
    """{use: mailbox} from LIST attributes; the first mailbox listed wins (RFC 6154 §2 allows several)."""
    canonical = {u.lower(): u for u in USES}
    found: dict[str, str] = {}
    for box in mailboxes:
        if any(f.lower() == "\\noselect" or f.lower() == "\\nonexistent" for f in box.flags):
            continue
        for flag in box.flags:
            use = canonical.get(flag.lower())
            if use and use not in found:
                found[use] = box.name
    return found


def names_to_uses(mailboxes: Iterable[MailboxInfo], known: dict[str, str]) -> dict[str, str]:
    """Fill uses missing from `known` by well-known names, also under `INBOX<sep>` (Courier, Cyrus)."""
    boxes = [b for b in mailboxes if not any(f.lower() == "\\noselect" for f in b.flags)]
    result = dict(known)
    for use, candidates in FALLBACK_NAMES.items():
        if use in result:
            continue
        for cand in candidates:
            hit = _find(boxes, cand)
            if hit is not None:
                result[use] = hit
                break
    return result


def _find(boxes: list[MailboxInfo], cand: str) -> str | None:
    for exact in (True, False):
        for box in boxes:
            names = [cand]
            if box.delimiter:
                names.append(f"INBOX{box.delimiter}{cand}")
                names.append(cand.replace("/", box.delimiter))
            if exact and box.name in names:
                return box.name
            if not exact and box.name.lower() in (n.lower() for n in names):
                return box.name
    return None
