"""Thousands of messages: MULTIAPPEND, ESEARCH vs SEARCH, and UID sets chunked under 8 KB, on Dovecot."""

from __future__ import annotations

import pytest

from mailrules.compile.serialize import chunk_uid_sets
from mailrules.imap.commands import UID_SET_BYTES
from mailrules.imap.session import ImapSession
from tests.integration.servers import make_message

pytestmark = pytest.mark.integration

N = 3000


def test_three_thousand_messages(dv: ImapSession) -> None:
    before = dv.command_count
    uids = dv.append_many("INBOX", [make_message(f"bulk {i}") for i in range(N)])
    assert uids is not None and len(uids) == N
    assert dv.command_count - before <= 3  # MULTIAPPEND: one command per ~4 MB

    dv.select("INBOX")
    before = dv.command_count
    assert dv.search([b"ALL"]) == uids
    assert dv.command_count == before + 1
    dv.mask_capabilities("ESEARCH")
    assert dv.search([b"ALL"]) == uids

    # Two of every three UIDs: 1,000 ranges like "2:3,5:6,..." (~9 KB), so two commands each.
    picked = [u for i, u in enumerate(uids) if i % 3]
    chunks = chunk_uid_sets(picked, UID_SET_BYTES)
    assert len(chunks) == 2

    before = dv.command_count
    sizes = dv.fetch(picked, ["RFC822.SIZE"])
    assert sorted(sizes) == picked
    assert dv.command_count - before == len(chunks)

    dv.mask_capabilities("MOVE")  # the fallback: 3 commands per chunk, never a bare EXPUNGE
    before = dv.command_count
    mapping = dv.move(picked, "Archive")
    assert sorted(mapping) == picked
    assert dv.command_count - before == 3 * len(chunks)
    assert dv.search([b"ALL"]) == uids[::3]
    dv.select("Archive", readonly=True)
    assert dv.search([b"ALL"]) == sorted(mapping.values())
