"""The OAuth2 errors of one account: what went wrong and what to do about it, never a token."""

from __future__ import annotations

from mailrules.errors import MailrulesError


class OAuthError(MailrulesError):
    """An OAuth2 failure of one account. `error` is the RFC 6749 §5.2 code when the server sent one;
    `kind` says what to do: "retry" (later), "login" (`mailrules auth login ACCOUNT`), "permanent"."""

    kind = "permanent"

    def __init__(self, message: str, *, account: str = "", error: str | None = None) -> None:
        super().__init__(f"account {account!r}: {message}" if account else message)
        self.account = account
        self.error = error


class InvalidGrant(OAuthError):
    """The authorization server refused the refresh token (`invalid_grant`: expired, revoked, or
    rotated by someone else): only a new `mailrules auth login ACCOUNT` helps."""

    kind = "login"


class LoginRequired(OAuthError):
    """No token to refresh: the account was never logged in (or logged out)."""

    kind = "login"


class TokenEndpointUnavailable(OAuthError):
    """The token endpoint did not answer usefully (network failure, timeout, HTTP 5xx or 429)
    however often it was tried: try again later."""

    kind = "retry"


class TokenStoreError(OAuthError):
    """The token store cannot be read or written."""


def printable(text: str) -> str:
    """`text` from a server (an error description, a redirect's parameters) for a message:
    control characters escaped."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
