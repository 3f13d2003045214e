"""Portable mailbox names: "/" between levels, relative to the personal namespace (RFC 2342).

Rules and configuration name mailboxes one way on every server: `/` separates levels and a name
is relative to the account's personal namespace. The session maps each name once, where it goes
on the wire (SELECT, COPY, MOVE, APPEND, CREATE), from what NAMESPACE says, or, without NAMESPACE
(pymap), from the root's delimiter in `LIST "" ""` and an empty prefix:

    NAMESPACE personal          "Lists/python"       "inbox"  "INBOX.Lists"        "v1.2"
    "" "/" (Dovecot, pymap)     Lists/python         INBOX    INBOX.Lists          v1.2
    "INBOX." "." (Cyrus)        INBOX.Lists.python   INBOX    INBOX.Lists (as is)  refused
    "INBOX/" "/" (Cyrus unix)   INBOX/Lists/python   INBOX    INBOX/INBOX.Lists    INBOX/v1.2
    "" "." (Cyrus altnamespace,
      Dovecot Maildir++)        Lists.python         INBOX    refused              refused

A name that starts with the personal prefix as the server writes it (`INBOX.Lists` on Cyrus) or
with another namespace's non-empty prefix (`user.bob.`, `Shared Folders/`) is already the server's
and is taken as is. A name whose first level is INBOX keeps it at the top: `INBOX/Sub` is
`INBOX.Sub` on a "." server. A level that holds the server's separator (`v1.2` where "." separates
levels) cannot exist there and is refused with the server's rules in the message (UnportableName).

Names the server hands out (LIST) are `ServerName`s: passed back, they are never mapped again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailrules.dsl import ast as A
from mailrules.errors import ImapError
from mailrules.source import Diagnostic, Span

#: The hierarchy separator of every name in rules and configuration.
PORTABLE_SEPARATOR = "/"


class ServerName(str):
    """A mailbox name as the server spells it (from LIST): the mapping leaves it alone."""

    __slots__ = ()


class UnportableName(ImapError):
    """A portable name that cannot exist on this server; the message says the server's rules."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "permanent")


@dataclass(frozen=True, slots=True)
class Namespaces:
    """The personal namespace (prefix, separator) and the other namespaces' prefixes of one account.

    `separator` None: a flat server (no hierarchy). `source`: "NAMESPACE" (RFC 2342) or "LIST"
    (no NAMESPACE: the root's delimiter from `LIST "" ""`, an empty prefix).
    """

    personal: str = ""
    separator: str | None = PORTABLE_SEPARATOR
    others: tuple[str, ...] = ()
    source: str = "NAMESPACE"

    @classmethod
    def from_response(
        cls,
        personal: Sequence[tuple[str, str | None]] | None,
        others: Iterable[Sequence[tuple[str, str | None]] | None] = (),
    ) -> Namespaces:
        """From NAMESPACE's three lists of (prefix, delimiter) (RFC 2342 §5): the first personal
        namespace is the one rules are relative to; every non-empty prefix is kept for `as is`."""
        first = personal[0] if personal else ("", PORTABLE_SEPARATOR)
        prefixes = {p for group in (personal or (), *others) for p, _ in (group or ()) if p}
        prefixes.discard(first[0])
        return cls(first[0], first[1], tuple(sorted(prefixes, key=len, reverse=True)), "NAMESPACE")

    @classmethod
    def from_list_root(cls, delimiter: str | None) -> Namespaces:
        """Without NAMESPACE: the root's delimiter (`LIST "" ""`, RFC 9051 §6.3.9), no prefix."""
        return cls("", delimiter, (), "LIST")

    # -- portable -> server ---------------------------------------------------------------------------

    def to_server(self, name: str) -> str:
        """The server's name for `name` (a ServerName is returned unchanged); UnportableName when it
        cannot exist there."""
        if isinstance(name, ServerName):
            return name
        if name.upper() == "INBOX":
            return "INBOX"
        if self.personal and _starts(name, self.personal):
            return self.personal + name[len(self.personal) :]  # `inbox.x` is `INBOX.x`
        if any(name.startswith(p) for p in self.others):
            return name
        levels = name.split(PORTABLE_SEPARATOR)
        sep = self.separator
        if sep is None:
            if len(levels) > 1:
                raise UnportableName(
                    self._refusal(
                        name, "the server has no hierarchy (no separator), so a name cannot have levels"
                    )
                )
            return self.personal + name
        if any(not level for level in levels):
            raise UnportableName(self._refusal(name, 'a level is empty (a leading, trailing or doubled "/")'))
        if sep != PORTABLE_SEPARATOR:
            bad = [level for level in levels if sep in level]
            if bad:
                raise UnportableName(
                    self._refusal(
                        name,
                        f"{sep!r} separates levels here, so a level cannot contain it ({bad[0]!r}); "
                        f'write levels with "/" and rename the level',
                    )
                )
        if levels[0].upper() == "INBOX":
            # INBOX stays at the top whatever the prefix (RFC 3501 §5.1: INBOX is case-insensitive).
            return sep.join(["INBOX", *levels[1:]])
        return self.personal + sep.join(levels)

    def refusal(self, name: str) -> str | None:
        """Why `name` cannot exist on this server, or None when it maps."""
        try:
            self.to_server(name)
        except UnportableName as exc:
            return str(exc)
        return None

    def _refusal(self, name: str, why: str) -> str:
        return f"mailbox {name!r} cannot exist on this server: {why} ({self.summary()})"

    # -- server -> portable ---------------------------------------------------------------------------

    def to_portable(self, server: str) -> str | None:
        """The portable name that maps to the server name `server`, None when there is none (a
        name outside the personal namespace, or a level holding "/" on a "." server)."""
        if server.upper() == "INBOX":
            return "INBOX"
        if any(server.startswith(p) for p in self.others):
            return server
        sep = self.separator
        rest = server
        if self.personal:
            if _starts(server, self.personal):
                rest = server[len(self.personal) :]
            elif not (sep and server.upper().startswith("INBOX" + sep)):
                return None
        if sep is not None and sep != PORTABLE_SEPARATOR:
            levels = rest.split(sep)
            if any(PORTABLE_SEPARATOR in level for level in levels):
                return None
            rest = PORTABLE_SEPARATOR.join(levels)
        # Under an INBOX prefix a first level named INBOX needs the prefix spelled out.
        for candidate in (rest, f"INBOX{PORTABLE_SEPARATOR}{rest}"):
            if self.refusal(candidate) is None and self.to_server(candidate) == server:
                return candidate
        return None

    # -- words for doctor and explain -------------------------------------------------------------------

    def summary(self) -> str:
        """`personal prefix "INBOX.", separator "."` (and where that came from)."""
        sep = "none (flat)" if self.separator is None else repr(self.separator)
        origin = "NAMESPACE" if self.source == "NAMESPACE" else 'no NAMESPACE; LIST "" ""'
        return f"personal prefix {self.personal!r}, separator {sep}, from {origin}"


def _starts(name: str, prefix: str) -> bool:
    """`name` starts with `prefix`, an INBOX head compared case-insensitively (RFC 3501 §5.1)."""
    if name.startswith(prefix):
        return True
    head = prefix[:6]
    return (
        head.upper() in ("INBOX.", "INBOX/")
        and name[:6].upper() == head.upper()
        and name[6:].startswith(prefix[6:])
    )


#: NAMESPACE as measured on the servers mailrules is tested against (docs/operations.md), for
#: `mailrules explain --server NAME`, which has no connection to ask.
KNOWN_NAMESPACES: dict[str, Namespaces] = {
    "dovecot": Namespaces("", "/"),  # the test suite's `separator = /`; Maildir++ default is "."
    "cyrus": Namespaces("INBOX.", ".", ("user.",)),  # Debian's defaults
    "cyrus-altnamespace": Namespaces("", ".", ("Shared Folders.", "Other Users.")),
    "pymap": Namespaces("", "/", (), "LIST"),
    "gmail": Namespaces("", "/"),
}


def describe(ns: Namespaces, names: Iterable[str] = ()) -> list[str]:
    """Lines for `mailrules doctor` and `explain --server`: the namespace, the rules of the
    mapping, and what each of `names` becomes (or why it is refused)."""
    lines = [f"mailbox names: {ns.summary()}"]
    if ns.separator == PORTABLE_SEPARATOR and not ns.personal:
        lines.append('names in rules and configuration are used as written ("/" between levels)')
    else:
        example = ns.to_server("Lists/python") if ns.separator is not None else ns.to_server("Lists")
        shown = "Lists/python" if ns.separator is not None else "Lists"
        lines.append(f'names in rules and configuration use "/" between levels: {shown!r} is {example!r}')
        if ns.personal:
            lines.append(f"a name starting with {ns.personal!r} is the server's own and is used as written")
        if ns.separator is not None and ns.separator != PORTABLE_SEPARATOR:
            lines.append(f"a level cannot contain {ns.separator!r} (it separates levels on this server)")
    for name in dict.fromkeys(names):
        why = ns.refusal(name)
        lines.append(f"  {name!r} -> {ns.to_server(name)!r}" if why is None else f"  {name!r}: {why}")
    return lines


# -- names a rule set writes ---------------------------------------------------------------------------


def template_sample(t: A.Template) -> str:
    """The template with each placeholder as one harmless level part (values are sanitised: no
    separator of any server can come from them, semantics.sanitize_value)."""
    return "".join(p.text if isinstance(p, A.TemplateText) else "x" for p in t.parts)


def rule_mailboxes(rules: Iterable[A.Rule]) -> list[tuple[str, Span]]:
    """Every mailbox name written in `rules`: scopes (`in ...`) and destinations (templates with
    each placeholder as a sample value), with where each is written."""
    out: list[tuple[str, Span]] = []
    for rule in rules:
        out += [(m, rule.span) for m in rule.mailboxes]
        for action in rule.actions:
            dest = getattr(action, "dest", None)
            if isinstance(dest, A.Template):
                out.append((template_sample(dest), dest.span))
    return out


def check_names(
    ns: Namespaces, rules: Iterable[A.Rule], configured: Iterable[tuple[str, str]] = ()
) -> list[Diagnostic]:
    """Diagnostics for every name in `rules` and in `configured` ((setting, name) pairs, e.g.
    ("accounts.work.trash", "Deleted.Items")) that cannot exist on this server. The daemon and
    `mailrules run` call it once connected: a refused name is an error before any mail moves."""
    out: list[Diagnostic] = []
    for name, span in rule_mailboxes(rules):
        why = ns.refusal(name)
        if why is not None:
            out.append(Diagnostic(span, why))
    for setting, name in configured:
        why = ns.refusal(name)
        if why is not None:
            out.append(Diagnostic(Span(setting, 0, 0), why))
    return out
