"""One account's tokens (`Tokens`) and the JSON file that keeps them (`TokenStore`): written
atomically, mode 0600, locked across processes while a refresh runs."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailrules.config.model import Secret
from mailrules.oauth.errors import TokenStoreError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Tokens:
    """What a token response gave: the tokens are `Secret`s, so a repr or a log line shows `***`.

    `expires_at` and `obtained_at` are epoch seconds; `expires_at` is None when the server did not
    say (the token is then refreshed only when a server refuses it)."""

    access_token: Secret
    expires_at: float | None
    obtained_at: float
    refresh_token: Secret | None = None
    scope: tuple[str, ...] = ()
    token_type: str = "Bearer"

    @property
    def lifetime(self) -> float | None:
        """Seconds between obtaining the token and its expiry, as the server granted them."""
        return None if self.expires_at is None else self.expires_at - self.obtained_at

    def remaining(self, now: float) -> float | None:
        return None if self.expires_at is None else self.expires_at - now

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "access_token": self.access_token.reveal(),
            "refresh_token": self.refresh_token.reveal() if self.refresh_token is not None else None,
            "expires_at": self.expires_at,
            "obtained_at": self.obtained_at,
            "scope": list(self.scope),
            "token_type": self.token_type,
        }

    @classmethod
    def from_json(cls, data: Any, source: str) -> Tokens:
        """Tokens from `to_json()`'s shape; ValueError (never showing a value) when it is not that."""
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise ValueError("not a mailrules token store (version 1)")
        access, refresh = data.get("access_token"), data.get("refresh_token")
        expires, obtained = data.get("expires_at"), data.get("obtained_at")
        scope = data.get("scope", [])
        if not isinstance(access, str) or not (refresh is None or isinstance(refresh, str)):
            raise ValueError("access_token/refresh_token must be strings")
        if not (expires is None or isinstance(expires, int | float)) or not isinstance(obtained, int | float):
            raise ValueError("expires_at/obtained_at must be numbers")
        if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
            raise ValueError("scope must be a list of strings")
        return cls(
            Secret(access, source),
            None if expires is None else float(expires),
            float(obtained),
            Secret(refresh, source) if refresh else None,
            tuple(scope),
            str(data.get("token_type", "Bearer")),
        )


class TokenStore:
    """The token file of one account. `save` replaces it atomically (temp file in the same
    directory, fsync, rename, fsync of the directory), so a crash leaves the old or the new
    tokens, never half of them: a rotated refresh token is the only copy there is."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r})"

    def load(self) -> Tokens | None:
        """The stored tokens; None when there is no file yet. TokenStoreError when unreadable."""
        try:
            text = self.path.read_text(encoding="utf-8")
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TokenStoreError(f"cannot read the token store {self.path}: {exc.strerror}") from None
        if mode & 0o077:
            log.warning(
                "token store %s is readable by others (mode %o); it should be 0600", self.path, mode & 0o777
            )
        try:
            return Tokens.from_json(json.loads(text), f"token store {self.path}")
        except ValueError as exc:
            # json's message quotes no document text beyond a position; from_json's names no value.
            raise TokenStoreError(f"the token store {self.path} is damaged: {exc}") from None

    def save(self, tokens: Tokens) -> None:
        """Write `tokens` (mode 0600; a directory it creates gets 0700). TokenStoreError on failure,
        and then the old file is still there, untouched."""
        directory = self.path.parent
        try:
            if not directory.exists():
                directory.mkdir(mode=0o700, parents=True)
                directory.chmod(0o700)  # mkdir's mode is filtered by the umask
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise TokenStoreError(f"cannot write the token store {self.path}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), 0o600)  # mkstemp already makes 0600; say it anyway
                json.dump(tokens.to_json(), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            _fsync_directory(directory)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise TokenStoreError(f"cannot write the token store {self.path}: {exc.strerror}") from None

    def delete(self) -> bool:
        """Remove the stored tokens (`auth logout`); False when there were none."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise TokenStoreError(f"cannot remove the token store {self.path}: {exc.strerror}") from None
        _fsync_directory(self.path.parent)
        return True

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock file (`<name>.lock`, flock): one refresh at a time across processes
        (the daemon and a `mailrules run` sharing a store), so that neither uses a refresh token the
        other has just rotated away."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            if not lock_path.parent.exists():
                lock_path.parent.mkdir(mode=0o700, parents=True)
                lock_path.parent.chmod(0o700)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TokenStoreError(f"cannot lock the token store {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is (POSIX leaves it to the file system).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
