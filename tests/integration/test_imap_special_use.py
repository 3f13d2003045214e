"""Special-use resolution: Dovecot's SPECIAL-USE attributes, and the name fallback on pymap."""

from __future__ import annotations

import pytest

from mailrules.imap.session import ImapSession

pytestmark = pytest.mark.integration


def test_dovecot_special_use_from_extended_list(dv: ImapSession) -> None:
    assert dv.has("SPECIAL-USE") and dv.has("LIST-EXTENDED")
    before = dv.command_count
    uses = dv.special_use()
    assert uses["\\Archive"] == "Archive" and uses["\\Trash"] == "Trash"
    assert uses["\\Sent"] == "Sent" and uses["\\Junk"] == "Junk" and uses["\\Drafts"] == "Drafts"
    assert dv.command_count == before + 1  # LIST (SPECIAL-USE) "" "*" alone
    assert dv.special_use() == uses and dv.command_count == before + 1  # cached per session


def test_dovecot_special_use_without_the_extension(dv: ImapSession) -> None:
    dv.mask_capabilities("SPECIAL-USE")
    uses = dv.special_use()
    assert uses["\\Archive"] == "Archive" and uses["\\Trash"] == "Trash"


def test_pymap_falls_back_to_names(pm: ImapSession) -> None:
    assert not pm.has("SPECIAL-USE")
    # The dict backend has one user shared by the whole session: these names belong to this test.
    pm.create("Archives")
    pm.create("Deleted Messages")
    uses = pm.special_use()
    assert uses["\\Archive"] == "Archives"
    assert uses["\\Trash"] == "Deleted Messages"
    assert "\\Sent" not in uses
