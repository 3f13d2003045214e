"""Fair share of the accounts between replicas: which accounts one replica should take or give up.

Pure: every replica computes it from the same view (the leases and the live replicas, read from
PostgreSQL) and acts only on its own part, so they agree without talking to each other.

- While no account is free and the counts of the live replicas differ by at most one, nothing
  moves: a joining or leaving replica never makes accounts bounce back and forth.
- Otherwise each live replica aims at `len(accounts) // len(replicas)`, plus one for the
  `len(accounts) % len(replicas)` replicas that own the most now (ties by name): a replica over
  its aim gives up the difference, one under it takes free accounts up to it.
- Which free accounts a replica tries first is by rendezvous hashing (its name with the
  account's), so replicas short of accounts mostly try different ones.
- Accounts still leased to a replica that is not seen any more are neither free nor counted:
  their lease expires after `lease_seconds` and they become free then.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Share:
    """What one replica should do this round: acquire `take` (in this order, as far as they are
    still free), release `give` (after stopping work on them)."""

    take: tuple[str, ...] = ()
    give: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.take and not self.give


def _rank(replica: str, account: str) -> bytes:
    return hashlib.sha256(f"{replica}\x00{account}".encode()).digest()


def targets(counts: Mapping[str, int], total: int) -> dict[str, int]:
    """How many of `total` accounts each replica of `counts` should own: an even split, the
    remainder to those owning the most now (ties by name), so that as few as possible move."""
    replicas = sorted(counts)
    if not replicas:
        return {}
    base, extra = divmod(total, len(replicas))
    richest = sorted(replicas, key=lambda r: (-counts[r], r))[:extra]
    return {r: base + (1 if r in richest else 0) for r in replicas}


def wanted(
    me: str, accounts: Iterable[str], owners: Mapping[str, str | None], replicas: Sequence[str]
) -> Share:
    """What `me` should take and give so that the live `replicas` share `accounts` fairly.

    `owners`: account -> the replica whose lease on it is unexpired, or None (free); an account
    missing from it has never been leased (free). `me` counts as live whether listed or not.
    """
    names = sorted(set(accounts))
    live = sorted({*replicas, me})
    counts = {r: 0 for r in live}
    free: list[str] = []
    mine: list[str] = []
    for account in names:
        owner = owners.get(account)
        if owner is None:
            free.append(account)
        elif owner in counts:
            counts[owner] += 1
            if owner == me:
                mine.append(account)
    if not free and max(counts.values()) - min(counts.values()) <= 1:
        return Share()
    aim = targets(counts, len(names))[me]
    have = counts[me]
    if have > aim:
        # give up the accounts another replica would rank first (any order is correct; a fixed
        # one makes the round reproducible)
        return Share(give=tuple(sorted(mine, key=lambda a: _rank(me, a))[: have - aim]))
    if have < aim and free:
        return Share(take=tuple(sorted(free, key=lambda a: _rank(me, a))[: aim - have]))
    return Share()
