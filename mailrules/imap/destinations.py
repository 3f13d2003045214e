"""Where archive, delete, junk and sent mail go on one account: configured, SPECIAL-USE, else a default name.

The order (issue 12): a configured name (`archive`, `trash`); else the mailbox the server marks with
the use (RFC 6154 SPECIAL-USE, or a well-known name LIST shows: special_use.py); else the default
name ("Trash", "Archive", "Junk", "Sent") in the personal namespace, which the portable mapping
puts where the server keeps personal mailboxes (`INBOX.Trash` on Cyrus), created on first use
when `create_mailboxes` allows (the engine's create-and-retry, commands._with_trycreate).

`mailrules doctor` reports each with `destination_lines`; the engine gets the same names from
`ImapStore.special_use` and falls back to the same defaults.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from mailrules.imap.commands import MailboxInfo
from mailrules.imap.names import Namespaces, ServerName

#: The default portable name of each use the engine or doctor looks for.
DEFAULT_NAMES: dict[str, str] = {
    "\\Trash": "Trash",
    "\\Archive": "Archive",
    "\\Junk": "Junk",
    "\\Sent": "Sent",
}


class Lister(Protocol):
    """What `destinations` needs of a session (ImapSession is one)."""

    @property
    def namespaces(self) -> Namespaces: ...

    def list_mailboxes(self, pattern: str = "*") -> list[MailboxInfo]: ...

    def special_use(self) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class Destination:
    """One use's mailbox on one account: its portable and server names and where it came from."""

    use: str  # "\\Trash"
    portable: str
    server: str | None  # None: the name cannot exist on this server (`refusal` says why)
    origin: str  # "configured" | "SPECIAL-USE" | "default"
    exists: bool
    refusal: str | None = None

    def describe(self, create_mailboxes: bool) -> str:
        """`Trash: 'Trash' is 'INBOX.Trash' (default name in the personal namespace): missing, created
        on first use`."""
        word = self.use.lstrip("\\")
        origin = {
            "configured": "configured",
            "SPECIAL-USE": f"the server's {self.use} mailbox",
            "default": f"no {self.use} mailbox: the default name in the personal namespace",
        }[self.origin]
        shown = (
            repr(self.portable)
            if self.server in (None, self.portable)
            else (f"{self.portable!r} is {self.server!r}")
        )
        if self.refusal is not None:
            return f"{word}: {shown} ({origin}): {self.refusal}"
        if self.exists:
            state = "exists"
        elif create_mailboxes:
            state = "missing, created on first use"
        else:
            state = "missing, and create_mailboxes = false: actions into it fail"
        return f"{word}: {shown} ({origin}): {state}"


def listed(name: str, listing: Iterable[MailboxInfo], ns: Namespaces) -> bool:
    """Whether the portable `name` is a selectable mailbox in `listing` (LIST's server names)."""
    if ns.refusal(name) is not None:
        return False
    server = ns.to_server(name)
    want = "INBOX" if server.upper() == "INBOX" else server
    for box in listing:
        if any(f.lower() in ("\\noselect", "\\nonexistent") for f in box.flags):
            continue
        if ("INBOX" if box.name.upper() == "INBOX" else box.name) == want:
            return True
    return False


def resolve(
    use: str,
    configured: str | None,
    special: dict[str, str],
    ns: Namespaces,
    listing: Iterable[MailboxInfo],
) -> Destination:
    """The mailbox for `use`: `configured`, else `special` ({use: server name}, from LIST), else the
    default name; with whether LIST shows it."""
    boxes = list(listing)
    if configured:
        name, origin = configured, "configured"
    elif use in special:
        server = special[use]
        portable = ns.to_portable(server)
        name, origin = (portable if portable is not None else ServerName(server)), "SPECIAL-USE"
    else:
        name, origin = DEFAULT_NAMES[use], "default"
    why = ns.refusal(name)
    server_name = None if why is not None else ns.to_server(name)
    return Destination(use, name, server_name, origin, listed(name, boxes, ns), why)


def destinations(
    session: Lister,
    *,
    archive: str | None = None,
    trash: str | None = None,
) -> list[Destination]:
    """Trash, Archive, Junk and Sent of the session's account (one LIST, SPECIAL-USE as cached)."""
    listing = session.list_mailboxes()
    special = session.special_use()
    ns = session.namespaces
    configured = {"\\Trash": trash, "\\Archive": archive}
    return [resolve(use, configured.get(use), special, ns, listing) for use in DEFAULT_NAMES]


def destination_lines(
    session: Lister,
    *,
    archive: str | None = None,
    trash: str | None = None,
    create_mailboxes: bool = True,
) -> list[str]:
    """Doctor's lines: the namespace in one line, then one line per destination."""
    ns = session.namespaces
    found = destinations(session, archive=archive, trash=trash)
    sep = "none" if ns.separator is None else repr(ns.separator)
    head = f"separator {sep}, personal prefix {ns.personal!r}"
    trash_dest = found[0]
    if trash_dest.server is not None and not trash_dest.exists and create_mailboxes:
        head += f"; Trash will be {trash_dest.server!r} (created on first use)"
    return [head] + [d.describe(create_mailboxes) for d in found]
