"""What the configuration may name: mailboxes and usernames without control characters or wildcards."""

from __future__ import annotations

import re

# C0 (NUL, TAB, CR, LF...), DEL and C1: nothing a mailbox name, username or host ever holds, and
# CR/LF would end an IMAP command line early (`LOGIN u\r\nX1 DELETE INBOX`).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_ESCAPES = str.maketrans({c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))})
_NAMED = {"\x00": "NUL", "\t": "a tab", "\n": "a line feed (LF)", "\r": "a carriage return (CR)"}
# RFC 9051 §6.3.9: `*` and `%` are LIST wildcards; in a name meant literally they match others.
_WILDCARDS = "*%"


def escape(text: str) -> str:
    """`text` with its control characters written `\\xNN`: safe on one line of a terminal or log."""
    return text.translate(_ESCAPES)


def control_problem(value: str) -> str | None:
    """`contains a line feed (LF)` when `value` holds a control character, else None."""
    m = _CONTROL.search(value)
    if m is None:
        return None
    char = m.group()
    return f"contains {_NAMED.get(char, f'the control character U+{ord(char):04X}')}"


def mailbox_problem(name: str) -> str | None:
    """What is wrong with `name` as a mailbox name (the whole phrase, naming it), else None."""
    if name == "":
        return "a mailbox name must not be empty"
    problem = control_problem(name)
    if problem is None:
        wildcard = next((c for c in name if c in _WILDCARDS), None)
        if wildcard is not None:
            problem = f"contains '{wildcard}', a LIST wildcard, which cannot be part of a mailbox name"
        elif "" in name.split("/"):
            # Portable names (imap/names.py): "/" separates levels on every server.
            problem = 'has an empty level ("/" separates levels: no leading, trailing or doubled "/")'
        else:
            return None
    return f"mailbox name {name!r} {problem}"


def line_break_problem(secret: str) -> str | None:
    """`contains a line feed (LF)` when a secret holds CR, LF or NUL (IMAP LOGIN cannot carry them)."""
    for char in "\r\n\x00":
        if char in secret:
            return f"contains {_NAMED[char]}"
    return None
