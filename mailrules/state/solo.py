"""The lease interface for a state only one daemon uses (SQLite): every account is its own."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

from mailrules.state.interface import Holder, Lease


class SoloLeases:
    """The lease interface for a state only one daemon uses (SQLite, made exclusive by its file
    lock): every account is this daemon's, for good; token 0 (SQLite's writes are not fenced)."""

    def __init__(self, replica: str = "solo") -> None:
        self._replica = replica
        self._held: dict[str, Lease] = {}

    @property
    def replica(self) -> str:
        return self._replica

    @property
    def lease_seconds(self) -> float:
        return math.inf

    def register(self) -> None:
        return None

    def heartbeat(self) -> None:
        return None

    def acquire(self, account: str) -> Lease | None:
        if account in self._held:
            return None
        forever = dt.datetime.max.replace(tzinfo=dt.UTC)
        self._held[account] = Lease(account, self._replica, 0, forever, math.inf)
        return self._held[account]

    def renew(self, leases: Iterable[Lease]) -> list[Lease]:
        return sorted((x for x in leases if self._held.get(x.account) == x), key=lambda x: x.account)

    def release(self, leases: Iterable[Lease]) -> None:
        for lease in leases:
            self._held.pop(lease.account, None)

    def owners(self) -> dict[str, Holder]:
        return {a: Holder(a, x.owner, x.token, x.expires_at, True) for a, x in self._held.items()}

    def replicas(self) -> list[str]:
        return [self._replica]

    def claimed(self, accounts: Iterable[str]) -> set[str]:
        return set()  # a command waits for the SQLite file's lock instead

    def retire(self) -> None:
        return None

    def close(self) -> None:
        return None
