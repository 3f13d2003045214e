"""The server's threads for `thread tagged "k"`: THREAD=REFERENCES (RFC 5256), or Gmail's X-GM-THRID.

`thread_members` answers compile/threads.py's question, "which messages of the selected mailbox
are in a thread where some message has keyword k", with three commands at most:
- elsewhere: `UID SEARCH KEYWORD k`, then (when some message has it) `UID THREAD REFERENCES UTF-8
  ALL`, whose answer nests each thread's UIDs (`(2)(3 6 (4 23)(44 7 96))`, RFC 5256 §4);
- on Gmail: `UID SEARCH X-GM-LABELS k`, `UID FETCH ... (X-GM-THRID)`, then `UID SEARCH` of those
  thread ids (X-GM-THRID in SEARCH, Google's IMAP Extensions page), a few hundred per command.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mailrules.compile import keys as K
from mailrules.compile.serialize import is_atom, serialize
from mailrules.imap.gmail import gm_id
from mailrules.imap.session import ImapSession

__all__ = ["thread_members", "threads_of"]

#: Thread ids per `UID SEARCH OR X-GM-THRID ...` (about 30 bytes each: well under 8 KB).
THRIDS_PER_SEARCH = 200


def thread_members(session: ImapSession, keyword: str, *, gmail: bool) -> frozenset[int]:
    """The UIDs of the selected mailbox in a thread where some message has `keyword` (a label on
    Gmail); empty when none has it."""
    tagged = K.GmLabels(keyword) if gmail else (K.Keyword(keyword) if _atom(keyword) else None)
    if tagged is None:
        return frozenset()  # no message can carry a keyword that is no atom
    found = set(session.search(serialize(tagged), "UTF-8" if not keyword.isascii() else None))
    if not found:
        return frozenset()
    if gmail:
        return _gmail_members(session, found)
    answer = session._call("THREAD", lambda: session._client.thread("REFERENCES", "ALL", "UTF-8"))
    return frozenset(uid for thread in threads_of(answer) if thread & found for uid in thread)


def threads_of(answer: Iterable[Any]) -> list[frozenset[int]]:
    """imapclient's THREAD answer (nested tuples of UIDs, one per thread) -> each thread's UIDs."""
    out: list[frozenset[int]] = []
    for thread in answer:
        uids: set[int] = set()
        stack: list[Any] = [thread]
        while stack:
            item = stack.pop()
            if isinstance(item, tuple | list):
                stack.extend(item)
            else:
                uids.add(int(item))
        out.append(frozenset(uids))
    return out


def _gmail_members(session: ImapSession, tagged: set[int]) -> frozenset[int]:
    answers = session.fetch(sorted(tagged), ["X-GM-THRID"])
    thrids = sorted({t for data in answers.values() if (t := gm_id(data.get("X-GM-THRID"))) is not None})
    out: set[int] = set(tagged)
    for i in range(0, len(thrids), THRIDS_PER_SEARCH):
        key = K.any_of(K.GmThread(t) for t in thrids[i : i + THRIDS_PER_SEARCH])
        out.update(session.search(serialize(key)))
    return frozenset(out)


def _atom(keyword: str) -> bool:
    return is_atom(keyword) and not keyword.startswith("\\")
