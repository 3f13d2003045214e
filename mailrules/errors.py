"""The one error root of mailrules and its families."""

from __future__ import annotations

from typing import Literal

#: What the caller should do about an IMAP failure: try the command again later ("retry"), open a
#: new connection ("reconnect": this one is gone), log in again with fresh credentials ("auth"),
#: or give up on this command ("permanent").
ImapErrorKind = Literal["retry", "reconnect", "auth", "permanent"]


class MailrulesError(Exception):
    """Root of every error mailrules raises on purpose."""


class ConfigError(MailrulesError):
    """The configuration is invalid or a secret cannot be read (exit code 78)."""


class ImapError(MailrulesError):
    """An IMAP operation failed; `kind` says what to do about it."""

    def __init__(self, message: str, kind: ImapErrorKind = "permanent", code: str | None = None) -> None:
        super().__init__(message)
        self.kind: ImapErrorKind = kind
        self.code = code  # RFC 5530 response code, e.g. "TRYCREATE"

    @property
    def ends_session(self) -> bool:
        """The session cannot go on ("reconnect", "auth"): stop using this connection; what it was
        doing is done again after a new login (with fresh credentials for "auth")."""
        return self.kind in ("reconnect", "auth")


class ActionError(MailrulesError):
    """An action could not be carried out."""


class StateError(MailrulesError):
    """The state database cannot be read or written: what failed, on which file, and why.

    Raised instead of every `sqlite3` error; the work it guarded was not done (a journal row, an
    intent or a checkpoint that cannot be written stops the actions that depend on it).
    """


class StateOpenError(StateError):
    """The state database cannot be opened or created (exit code 78)."""


class StateLocked(StateError):
    """Another process holds the state's lock: a daemon, a `run` or an `undo` (exit code 75)."""
