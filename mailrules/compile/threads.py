"""Thread tests before a SEARCH is sent: `K.ThreadKeyword` becomes the UIDs of the threads it names.

No SEARCH key can say "a message of a thread in which some message has keyword k". The store asks
the server (THREAD=REFERENCES, RFC 5256 §3; on Gmail X-GM-THRID) which messages share a thread,
and `expand` puts the UID set in the key's place, so the rest of the key is searched as ever.
`reference_threads` is the REFERENCES algorithm's grouping on the messages' own headers, for the
fake store of the tests and as the reading the documentation describes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from mailrules.compile import keys as K

__all__ = ["expand", "has_threads", "reference_threads"]

_MSGID = re.compile(r"<[^<>\s]+>")


def has_threads(key: K.SearchKey) -> bool:
    """Whether the key holds a thread test the store must resolve first."""
    return any(isinstance(k, K.ThreadKeyword) for k in K.walk(key))


def expand(key: K.SearchKey, members: Callable[[str], frozenset[int]]) -> K.SearchKey:
    """`key` with each `ThreadKeyword(k)` replaced by `UID <members(k)>` (NOT ALL when empty).

    `members(k)` is asked once per keyword: the UIDs of every message in a thread where some
    message of the selected mailbox has keyword (or, on Gmail, label) `k`.
    """
    cache: dict[str, K.SearchKey] = {}

    def one(k: K.SearchKey) -> K.SearchKey:
        if isinstance(k, K.ThreadKeyword):
            found = cache.get(k.keyword)
            if found is None:
                uids = members(k.keyword)
                found = cache[k.keyword] = K.Uid(uids) if uids else K.Not(K.ALL)
            return found
        if isinstance(k, K.And):
            return K.and_(*(one(i) for i in k.items))
        if isinstance(k, K.Or):
            return K.or_(one(k.a), one(k.b))
        if isinstance(k, K.Not):
            return K.Not(one(k.key))
        return k

    return one(key) if has_threads(key) else key


def reference_threads(messages: Iterable[tuple[int, str, str, str]]) -> list[frozenset[int]]:
    """Threads by References and In-Reply-To (RFC 5256 §3, REFERENCES, its grouping step).

    `messages`: (uid, Message-ID, References, In-Reply-To) as the headers are written. Two
    messages are in one thread when a chain of these headers links them, through messages that
    may not be in the mailbox. Returns each thread's UIDs.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    own: dict[int, str] = {}
    for uid, message_id, references, in_reply_to in messages:
        ids = _MSGID.findall(message_id)
        me = ids[0] if ids else f"<uid {uid}>"  # a message without Message-ID is a thread alone
        own[uid] = me
        find(me)
        for other in _MSGID.findall(references) + _MSGID.findall(in_reply_to):
            union(me, other)
    threads: dict[str, set[int]] = {}
    for uid, me in own.items():
        threads.setdefault(find(me), set()).add(uid)
    return [frozenset(t) for t in threads.values()]
