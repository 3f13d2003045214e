"""The connected server's dialect in words, for `mailrules doctor`: what it is and what differs there."""

from __future__ import annotations

from mailrules.compile.dialect import Dialect
from mailrules.imap import gmail
from mailrules.imap.pacing import MICROSOFT_TRANSFER_BATCH, MICROSOFT_TRANSFER_TIMEOUT, Pacing

#: Exchange's default MaxConnectionsPerUser on-premises (Set-ImapSettings); Exchange Online
#: publishes no number (third-party reports say 20).
EXCHANGE_MAX_CONNECTIONS = 16


def dialect_name(dialect: Dialect) -> str:
    """ "Gmail", "Microsoft 365 / Exchange" or "IMAP server"."""
    if dialect.gmail:
        return "Gmail"
    if dialect.microsoft:
        return "Microsoft 365 / Exchange"
    return "IMAP server"


def describe_dialect(
    dialect: Dialect,
    *,
    max_connections: int | None = None,
    special_use: dict[str, str] | None = None,
    archive: str | None = None,
    trash: str | None = None,
) -> list[str]:
    """Sentences for `doctor`: the first names the dialect and its main differences, the others
    say what mailrules does about each capability the server lacks.

    `max_connections`: the account's budget; `special_use`: the store's {use: mailbox} if known;
    `archive`, `trash`: the account's configured overrides of them (None: the server's).
    """
    uses = special_use or {}
    missing = _missing(dialect, uses)
    if dialect.gmail:
        lines = _gmail(max_connections, uses, archive, trash)
    elif dialect.microsoft:
        lines = _microsoft(dialect, max_connections, [m.split(":")[0][3:] for m in missing])
    else:
        lacks = "it lacks what follows" if missing else "it has every extension mailrules uses"
        budget = f", budget {max_connections} connections" if max_connections is not None else ""
        lines = [f"IMAP server ({dialect.name}){budget}: {lacks}"]
    return lines + missing


def _gmail(budget: int | None, uses: dict[str, str], archive: str | None, trash: str | None) -> list[str]:
    # Gmail's names are localised ("[Google Mail]/Papierkorb"): the ones it marks SPECIAL-USE
    # are the truth; the English names stand in only when doctor could not ask.
    all_mail = uses.get("\\All", "[Gmail]/All Mail")
    gmail_trash = uses.get("\\Trash", "[Gmail]/Trash")
    spam = uses.get("\\Junk", "[Gmail]/Spam")
    cap = gmail.GMAIL_MAX_CONNECTIONS
    budget_text = f", budget {budget}" if budget is not None else ""
    over = " (over Gmail's limit: logins will be refused)" if budget is not None and budget > cap else ""
    if archive is None or archive == all_mail:
        archiving = (
            f"archive from INBOX moves to {all_mail}; from a label's mailbox it removes only the \\Inbox "
            "label; a move from a label's mailbox removes that label only"
        )
    else:
        archiving = (
            f"archive moves to {archive} (the configured archive; All Mail is {all_mail}); "
            "a move from a label's mailbox removes that label only"
        )
    if trash is None or trash == gmail_trash:
        deleting = f"delete moves to {gmail_trash} (every label goes)"
    else:
        deleting = (
            f"delete moves to {trash} (the configured trash, not Gmail's {gmail_trash}: "
            f"the message stays in {all_mail})"
        )
    return [
        f"Gmail: archive removes the INBOX label; {cap} connections at most{budget_text}{over}",
        "a tag is a Gmail label (X-GM-LABELS), and `tagged` searches labels",
        archiving,
        f"{deleting}; delete permanently moves to {gmail_trash} and expunges it from there",
        f"{all_mail} and {spam} are never watched by default ({all_mail} holds every message again)",
        "Gmail's search matches words: string tests are checked here; X-GM-RAW prefilters "
        "`has attachment`, `older/newer than` and `list is`",
    ]


def _microsoft(dialect: Dialect, budget: int | None, lacks: list[str]) -> list[str]:
    pacing = Pacing.for_dialect(dialect)
    budget_text = f", budget {budget}" if budget is not None else ""
    no = f"no {', '.join(lacks)}; " if lacks else ""
    return [
        f"Microsoft 365 / Exchange: {no}{EXCHANGE_MAX_CONNECTIONS} connections per user by default "
        f"on-premises (Exchange Online publishes no number){budget_text}",
        f"UID sets of at most {pacing.uid_set_bytes:,} bytes per command, {MICROSOFT_TRANSFER_BATCH} "
        f"messages per MOVE/COPY, each given {MICROSOFT_TRANSFER_TIMEOUT:.0f} s and more to finish",
        "throttling answers (`Request is throttled`, `Server Unavailable`) hold the connection back "
        "for the time suggested (mailrules_imap_throttled_total), and the actions are tried again",
        "an expired OAuth2 token (`BYE Session invalidated - AccessTokenExpired`) means refresh, "
        "then reconnect",
    ]


def _missing(dialect: Dialect, uses: dict[str, str]) -> list[str]:
    out: list[str] = []
    if not dialect.special_use:
        found = ", ".join(f"{u[1:]} = {m}" for u, m in sorted(uses.items()) if u in ("\\Archive", "\\Trash"))
        out.append(
            "no SPECIAL-USE: Trash and Archive found by name"
            + (f" ({found})" if found else " (Deleted Items, Archive, ...)")
        )
    if not dialect.move:
        out.append("no MOVE: a move is COPY, \\Deleted on those UIDs, UID EXPUNGE of those UIDs")
    if not dialect.uidplus:
        out.append(
            "no UIDPLUS: `delete permanently` is refused, moves leave \\Deleted originals, "
            "and undo cannot find moved messages (no COPYUID)"
        )
    if not dialect.esearch:
        out.append("no ESEARCH: plain SEARCH answers")
    if not dialect.condstore:
        out.append("no CONDSTORE: flags are read again rather than synchronised")
    if not dialect.within:
        out.append("no WITHIN: `older/newer than` is searched as whole days and checked here")
    if not dialect.utf8_search:
        out.append("no UTF-8 SEARCH: non-ASCII text is prefiltered by its ASCII part and checked here")
    return out
