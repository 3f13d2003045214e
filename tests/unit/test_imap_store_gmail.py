"""On Gmail a `tag` is a label: X-GM-LABELS, modified UTF-7 (quoted when no atom); elsewhere a keyword."""

from __future__ import annotations

from typing import Any

from mailrules.imap.store import ImapStore


class FakeSession:
    account = "g"
    separator = "/"
    selected = None
    after_store = None  # no STORE listener (imap/modseq.py installs one for `on flag change`)

    def __init__(self, caps: set[str]) -> None:
        self.capabilities = frozenset(caps)
        self.sent: list[bytes] = []
        self.flag_calls: list[tuple[list[int], list[str], bool]] = []

    def _run(self, name: str, pieces: list[Any]) -> None:
        self.sent.append(b"".join(pieces))

    def _take(self, name: str) -> list[Any]:
        return []

    def store_flags(self, uids: Any, flags: Any, add: bool = True) -> None:
        self.flag_calls.append((list(uids), list(flags), add))


def test_gmail_tag_is_a_label() -> None:
    s = FakeSession({"IMAP4REV1", "X-GM-EXT-1", "MOVE", "UIDPLUS"})
    store = ImapStore(s)  # type: ignore[arg-type]
    store.store_flags([1, 2, 3, 9], ["$Work", "Réunions"], True)
    store.store_flags([4], ["\\Seen"], True)
    store.store_flags([5], ["$Work"], False)
    assert s.sent == [  # the form of Google's `a011 STORE 1 +X-GM-LABELS (foo)`
        b"UID STORE 1:3,9 +X-GM-LABELS ($Work R&AOk-unions)",
        b"UID STORE 5 -X-GM-LABELS ($Work)",
    ]
    assert s.flag_calls == [([4], ["\\Seen"], True)]


def test_keyword_elsewhere() -> None:
    s = FakeSession({"IMAP4REV1", "MOVE", "UIDPLUS"})
    ImapStore(s).store_flags([1], ["$Work", "\\Flagged"], True)  # type: ignore[arg-type]
    assert s.sent == [] and s.flag_calls == [([1], ["$Work", "\\Flagged"], True)]


def test_label_name_elsewhere_is_refused_before_sending() -> None:
    import pytest

    from mailrules.imap.core import UnsendableValue, flag_list

    with pytest.raises(UnsendableValue) as err:
        flag_list(["Label with spaces"])
    assert str(err.value) == (
        "not a valid IMAP flag: 'Label with spaces' (an IMAP keyword is one word of printable ASCII "
        'without ( ) { % * " \\ ]; only Gmail takes other names, as labels)'
    )
    with pytest.raises(UnsendableValue, match=r"^not a valid IMAP flag: '\\\\Se en'$"):
        flag_list(["\\Se en"])


def test_gmail_label_with_spaces_is_quoted() -> None:
    s = FakeSession({"IMAP4REV1", "X-GM-EXT-1"})
    ImapStore(s).store_flags([7], ["Label with spaces"], True)  # type: ignore[arg-type]
    assert s.sent == [b'UID STORE 7 +X-GM-LABELS ("Label with spaces")']
