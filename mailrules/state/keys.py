"""The keys of the state: at-most-once keys of sends, and run ids.

Plain functions of what the engine knows, kept apart from the SQLite store so that the engine
(which codes against the Journal port) and every state backend compute the same keys.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

__all__ = ["intent_key", "message_intent_key", "new_run_id"]


def intent_key(
    account: str, mailbox: str, uidvalidity: int, uid: int, rule: str, action: str, address: str
) -> str:
    """The stable idempotency key of one forward/redirect of one message to one address.

    The same message (UIDVALIDITY + UID), rule, action ("forward" or "redirect") and address
    always give the same key, so a later run that matches the message again finds the intent.
    `/` and `%` inside a part are escaped, so that a mailbox or rule name with a slash cannot
    make two different sends share a key.
    """
    parts = (account, mailbox, str(uidvalidity), str(uid), rule, action, address.lower())
    return "/".join(p.replace("%", "%25").replace("/", "%2F") for p in parts)


def message_intent_key(
    account: str, message_id: str, rule: str, action: str, address: str, *, digest: str | None = None
) -> str:
    """The idempotency key by Message-ID, used when the message has one.

    It survives what a UID does not: a UIDVALIDITY change (the daemon then reprocesses a window
    of mail) and the message being moved to another mailbox where a rule matches it again.
    `digest` (of the header block, engine/loops.py `header_digest`) keeps a stranger who sends
    first under a predicted Message-ID from taking the key of the real message; keys written
    without one (before it was added) have the `message-id` form and still mean "sent".
    """
    if digest is None:
        parts: tuple[str, ...] = (account, "message-id", message_id, rule, action, address.lower())
    else:
        parts = (account, "message-headers", message_id, digest, rule, action, address.lower())
    return "/".join(p.replace("%", "%25").replace("/", "%2F") for p in parts)


def new_run_id(now: datetime | None = None) -> str:
    """A short run id that sorts by start time (UTC, to the second): `20261126T150812-ab12cd`."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
