"""Which part of a FETCH answer answers which requested item (RFC 9051 §7.5.2): the names answers
come under, matched once per shape of answer (imap/commands.py `fetch`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["answer_key", "answer_plan", "item_name", "match_item", "response_key"]

#: Requested FETCH item -> the name its answer comes under (a few distinct items per run).
_RESPONSE_KEYS: dict[str, str] = {}
_PARTIAL_REQUEST = re.compile(r"<\d+\.\d+>$")
_PARTIAL_ANSWER = re.compile(r"<\d+>$")


def response_key(item: str) -> str:
    """The name a FETCH item comes back under: BODY.PEEK[...] is answered as BODY[...] (RFC 9051 §7.5.2)."""
    key = _RESPONSE_KEYS.get(item)
    if key is None:
        key = _PARTIAL_REQUEST.sub("", item.strip().upper().replace("BODY.PEEK[", "BODY["))
        if len(_RESPONSE_KEYS) < 1024:  # items come from the rules: a handful, but stay bounded
            _RESPONSE_KEYS[item] = key
    return key


#: An answer's item name as sent -> upper-case text (the same few names in every answer).
_ITEM_NAMES: dict[bytes, str] = {}


def item_name(raw: Any) -> str:
    name = _ITEM_NAMES.get(raw)
    if name is None:
        name = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).upper()
        if len(_ITEM_NAMES) < 1024:  # names come from the server: stay bounded whatever it sends
            _ITEM_NAMES[raw] = name
    return name


def match_item(item: str, answers: dict[str, Any]) -> tuple[bool, Any]:
    key = answer_key(item, answers)
    return (False, None) if key is None else (True, answers[key])


def answer_key(item: str, answers: dict[str, Any]) -> str | None:
    """The key of `answers` that answers the requested `item`, None when none does."""
    want = response_key(item)
    if want in answers:
        return want
    # Servers re-spell section specs (Dovecot upper-cases header names, others keep case or
    # reorder): match by prefix up to the first space, e.g. "BODY[HEADER.FIELDS ".
    head, space, _ = want.partition(" ")
    prefix = head + space
    for key in answers:
        if key.startswith(prefix) if space else _PARTIAL_ANSWER.sub("", key) == want:
            return key
    return None


def answer_plan(items: Sequence[str], answers: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(requested item, its key in `answers`, whether it is FLAGS) for every item answered.

    The same for every answer with the same keys in the same order: fetch() works it out once
    per shape of answer, not once per item per message.
    """
    plan = []
    for item in items:
        key = answer_key(item, answers)
        if key is not None:
            plan.append((item, key, response_key(item) == "FLAGS"))
    return plan
