"""Tests only a server answers (Gmail's search, threads): which servers can, and why one cannot."""

from __future__ import annotations

from mailrules.compile.dialect import Dialect
from mailrules.dsl import ast as A
from mailrules.dsl import unparse
from mailrules.dsl.walk import atoms
from mailrules.errors import MailrulesError

__all__ = ["ServerOnlyError", "server_refusal"]


class ServerOnlyError(MailrulesError):
    """A test only a server answers (Gmail's search) planned for a server that does not offer it."""


def server_refusal(cond: A.Condition, dialect: Dialect) -> str | None:
    """Why this server cannot answer `cond` (a Gmail search elsewhere than on Gmail, a thread test
    where the server tells no threads), or None."""
    for a in atoms(cond):
        if isinstance(a, A.GMAIL_ONLY) and not dialect.gmail:
            return (
                f"{unparse.atom(a)} needs Gmail's search (X-GM-RAW), which this server "
                f"({dialect.name}) does not offer (no X-GM-EXT-1)"
            )
        if isinstance(a, A.ThreadTagged) and not dialect.threads:
            return (
                f"{unparse.atom(a)} needs the server's threads, which this server ({dialect.name}) "
                "does not offer (neither THREAD=REFERENCES nor X-GM-EXT-1)"
            )
    return None
