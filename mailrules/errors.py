"""The one error root of mailrules and its families."""

from __future__ import annotations

from mailrules.source import Diagnostic


class MailrulesError(Exception):
    """Root of every error mailrules raises on purpose."""


class RuleError(MailrulesError):
    """A rule set that does not parse or check; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None) -> None:
        self.diagnostics = diagnostics
        self.sources = sources or {}
        super().__init__(f"{len(diagnostics)} error(s) in rules")

    def render(self) -> str:
        from mailrules.source import render_all

        return render_all(self.diagnostics, self.sources)


class ConfigError(MailrulesError):
    """The configuration is invalid or a secret cannot be read (exit code 78)."""


class ImapError(MailrulesError):
    """An IMAP operation failed; `kind` says what to do about it."""

    def __init__(self, message: str, kind: str = "permanent", code: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind  # "retry" | "reconnect" | "auth" | "permanent"
        self.code = code  # RFC 5530 response code, e.g. "TRYCREATE"


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
