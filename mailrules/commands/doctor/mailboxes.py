"""`mailrules doctor`'s mailbox rows: how names map on this server, where archive and delete go, and
whether each mailbox the rules read or file into exists (or will be created)."""

from __future__ import annotations

from mailrules.accounts import configured_names, mailboxes_of
from mailrules.commands.doctor.net import Clock
from mailrules.commands.doctor.report import Check, Status
from mailrules.config import AccountSettings
from mailrules.dsl import ast as A
from mailrules.imap import destinations as D
from mailrules.imap import names as N
from mailrules.imap.commands import MailboxInfo
from mailrules.imap.special_use import attributes_to_uses


def mailbox_checks(
    session: D.Lister, account: AccountSettings, rules: list[A.Rule] | None, rows: list[Check]
) -> None:
    """LIST; the name mapping and the names that cannot exist here; Trash, Archive, Junk and Sent;
    then every mailbox the rules read or file into (`rules` None: the rules did not load)."""
    clock = Clock()
    listing = session.list_mailboxes()
    rows.append(Check("LIST", "OK", f"{len(listing)} mailboxes", clock.ms()))
    ns = session.namespaces
    _names(ns, account, rules, rows)
    _destinations(session, account, rules, listing, rows)
    if rules is None:
        return
    sources = {b: "rules read it" for b in mailboxes_of(rules, account.name)}
    for box in account.watch:
        sources.setdefault(box, "watched")
    for box, how in sources.items():
        if ns.refusal(box) is None:  # a refused name has its FAIL row under "mailbox names"
            rows.append(_box_row(f"mailbox {box!r}", box, how, listing, ns, account, destination=False))
    for raw, tpl in _filed_into(rules).items():
        if tpl.is_literal:
            if ns.refusal(raw) is None:
                rows.append(
                    _box_row(
                        f"mailbox {raw!r}", raw, "rules file into it", listing, ns, account, destination=True
                    )
                )
        elif account.create_mailboxes:
            rows.append(Check(f"mailbox {raw!r}", "INFO", "named per message: created when first needed"))
        else:
            rows.append(
                Check(
                    f"mailbox {raw!r}",
                    "WARN",
                    "named per message: must already exist",
                    hint="create_mailboxes = false: a missing one makes the action fail",
                )
            )


def _filed_into(rules: list[A.Rule]) -> dict[str, A.Template]:
    """The destinations the rules move, copy or archive into, as written (once each, in order)."""
    out: dict[str, A.Template] = {}
    for a in (a for r in rules for a in r.actions):
        if isinstance(a, A.Move | A.Copy | A.Archive) and a.dest is not None:
            out.setdefault(a.dest.raw, a.dest)
    return out


def _names(ns: N.Namespaces, account: AccountSettings, rules: list[A.Rule] | None, rows: list[Check]) -> None:
    """The mapping in words (names.describe) with the written names it changes, then a FAIL row for
    each name that cannot exist on this server (names.check_names)."""
    written = [name for _, name in configured_names(account)]
    if rules is not None:
        written += mailboxes_of(rules, account.name)
        written += [raw for raw, tpl in _filed_into(rules).items() if tpl.is_literal]
    # A name used as written needs no line; a refused one gets its FAIL row below.
    changed = [n for n in written if ns.refusal(n) is None and ns.to_server(n) != n]
    head, *rest = N.describe(ns, changed)
    rows.append(
        Check(
            "mailbox names",
            "INFO",
            head.removeprefix("mailbox names: "),
            details={"prefix": ns.personal, "separator": ns.separator, "source": ns.source},
        )
    )
    rows += [Check("mailbox names", "INFO", line.strip()) for line in rest]
    for diagnostic in N.check_names(ns, rules or (), configured_names(account)):
        span = diagnostic.span
        where = f"written at {span.short}" if span.line else f"set by {span.file} in the configuration"
        rows.append(Check("mailbox names", "FAIL", diagnostic.message, hint=where))


def _destinations(
    session: D.Lister,
    account: AccountSettings,
    rules: list[A.Rule] | None,
    listing: list[MailboxInfo],
    rows: list[Check],
) -> None:
    """The summary line (separator, prefix, where Trash will be), then one row per use: where it
    goes, and whether it exists or will be created."""
    lines = D.destination_lines(
        session, archive=account.archive, trash=account.trash, create_mailboxes=account.create_mailboxes
    )
    rows.append(Check("destinations", "INFO", lines[0]))
    actions = [a for r in rules or () for a in r.actions]
    needed = {
        "\\Trash": any(isinstance(a, A.Delete) and not a.permanently for a in actions),
        "\\Archive": any(isinstance(a, A.Archive) and a.dest is None for a in actions),
    }
    configured = {"\\Trash": account.trash, "\\Archive": account.archive}
    special, marked = session.special_use(), attributes_to_uses(listing)
    ns = session.namespaces
    found = [D.resolve(use, configured.get(use), special, ns, listing) for use in D.DEFAULT_NAMES]
    for dest, line in zip(found, lines[1:], strict=True):
        word = dest.use.lstrip("\\")
        how = dest.origin
        if how == "SPECIAL-USE" and special.get(dest.use) not in marked.values():
            how = "name fallback (no SPECIAL-USE mark)"
        details = {"mailbox": dest.portable, "server": dest.server, "source": how, "exists": dest.exists}
        need = needed.get(dest.use, False)
        hint = ""
        status: Status
        if dest.refusal is not None:
            status = "FAIL" if need else "WARN"
            hint = f"set {word.lower()} to a name this server allows"
        elif dest.exists:
            status = "OK"
        elif account.create_mailboxes:
            status = "OK" if need else "INFO"
        elif need:
            status, hint = "FAIL", f"create {dest.server!r} on the server, or set create_mailboxes = true"
        else:
            status = "INFO"
        rows.append(Check(word.lower(), status, line.removeprefix(f"{word}: "), hint=hint, details=details))


def _box_row(
    label: str,
    name: str,
    how: str,
    listing: list[MailboxInfo],
    ns: N.Namespaces,
    account: AccountSettings,
    destination: bool,
) -> Check:
    """One mailbox a rule reads (`destination` False) or files into: exists, will be created, or FAIL."""
    server = ns.to_server(name)
    details = {"mailbox": name, "source": how}
    shown = repr(name)
    if server != name:
        details["server"] = server
        shown += f" (on the server {server!r})"
    if D.listed(name, listing, ns):
        return Check(label, "OK", f"{shown} exists ({how})", details=details)
    if destination and account.create_mailboxes:
        return Check(label, "OK", f"{shown} will be created when first used ({how})", details=details)
    if destination:
        hint = f"create {server!r} on the server, or set create_mailboxes = true"
    else:
        hint = f"create {server!r} on the server, or fix the rule's `in` clause (or `watch`)"
    return Check(label, "FAIL", f"{shown} does not exist ({how})", hint=hint, details=details)
