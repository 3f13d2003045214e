"""OAuth2 tokens kept in a PostgreSQL state, for daemons sharing it (issue 14).

Only the daemon that owns an account refreshes its token (daemon/cluster.py `owns`); a provider
that rotates refresh tokens (each use invalidates the one used) then needs every daemon to read
the token the previous owner rotated. Token files would have to sit on a volume every daemon
mounts; with a PostgreSQL state the tokens live in it instead (`oauth_tokens`, one row per
account, state/pg_tokens.py), read and written as the file would be, one refresh at a time under
a lock of the database. An account's token file is imported once, when the state holds no row
for it yet (a daemon moving from SQLite, or a login made before). `mailrules auth login`,
`status` and `logout` use the same rows when the state is PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mailrules.errors import StateError
from mailrules.oauth.errors import TokenStoreError
from mailrules.oauth.store import Tokens, TokenStore

if TYPE_CHECKING:
    from mailrules.config.model import OAuth2Settings, Settings
    from mailrules.oauth.manager import StoreFor, TokenStorage
    from mailrules.state.interface import State

log = logging.getLogger(__name__)


class TokenRowsPort(Protocol):
    """What the shared store asks of the state (state/pg_tokens.py: TokenRows)."""

    @property
    def where(self) -> str:
        """The state's URL without its password."""

    def load(self, account: str) -> Any | None:
        """The stored JSON, or None."""

    def save(self, account: str, data: Any) -> None:
        """Store the JSON, durably."""

    def delete(self, account: str) -> bool:
        """Forget the row; False when there was none."""

    def locked(self, account: str, holder: str) -> AbstractContextManager[None]:
        """One refresh of the account at a time, across processes."""


class SharedTokenStore:
    """One account's tokens in the state (the `TokenStorage` of its TokenManager)."""

    def __init__(self, account: str, rows: TokenRowsPort, file: TokenStore | None = None) -> None:
        self.account = account
        self.rows = rows
        self.file = file  # imported once when the state holds nothing for the account

    def __repr__(self) -> str:
        return f"SharedTokenStore({self.account!r}, {self.rows.where!r})"

    @property
    def path(self) -> str:
        return f"{self.rows.where} (table oauth_tokens, account {self.account})"

    def load(self) -> Tokens | None:
        try:
            data = self.rows.load(self.account)
        except StateError as exc:
            raise TokenStoreError(f"cannot read the tokens of {self.account}: {exc}") from None
        if data is None:
            return self._import()
        try:
            return Tokens.from_json(data, f"state {self.rows.where}")
        except ValueError as exc:
            raise TokenStoreError(f"the tokens of {self.account} in {self.path} are damaged: {exc}") from None

    def _import(self) -> Tokens | None:
        if self.file is None:
            return None
        tokens = self.file.load()
        if tokens is not None:
            self.save(tokens)
            log.info(
                "account %s: OAuth2 tokens imported from %s into the state", self.account, self.file.path
            )
        return tokens

    def save(self, tokens: Tokens) -> None:
        try:
            self.rows.save(self.account, tokens.to_json())
        except StateError as exc:
            raise TokenStoreError(f"cannot store the tokens of {self.account}: {exc}") from None

    def delete(self) -> bool:
        try:
            return self.rows.delete(self.account)
        except StateError as exc:
            raise TokenStoreError(f"cannot remove the tokens of {self.account}: {exc}") from None

    @contextmanager
    def locked(self) -> Iterator[None]:
        holder = f"mailrules tokens {self.account} on {socket.gethostname()} pid {os.getpid()}"
        with ExitStack() as stack:
            try:
                stack.enter_context(self.rows.locked(self.account, holder))
            except StateError as exc:
                raise TokenStoreError(f"cannot lock the tokens of {self.account}: {exc}") from None
            yield


def shared_stores(rows: TokenRowsPort | None) -> StoreFor | None:
    """Token stores over `rows` (None: keep the files), each importing its account's file once."""
    if rows is None:
        return None
    return lambda name, settings: SharedTokenStore(name, rows, TokenStore(settings.token_store))


def stores_of(state: State) -> StoreFor | None:
    """The token stores for processes working on `state`: its rows when it is PostgreSQL, else
    None (the token files)."""
    from mailrules.state.factory import token_rows

    return shared_stores(token_rows(state))


@contextmanager
def state_token_stores(settings: Settings) -> Iterator[StoreFor | None]:
    """For `mailrules auth`: the stores of a PostgreSQL state (open for the block), else None."""
    if isinstance(settings.state, Path):
        yield None
        return
    from mailrules.state.factory import open_state

    with open_state(settings) as state:
        yield stores_of(state)


def token_storage(name: str, settings: OAuth2Settings) -> TokenStorage:
    """Where the account's tokens are for this process's own token managers (`process_tokens`:
    `mailrules undo`, doctor): the state's rows once a PostgreSQL state set them, else its file."""
    from mailrules.oauth.accounts import process_tokens

    stores = process_tokens().stores
    return TokenStore(settings.token_store) if stores is None else stores(name, settings)
