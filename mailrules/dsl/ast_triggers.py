"""AST nodes of a rule's trigger (language.md, Triggers): when a rule runs.

Re-exported by `mailrules.dsl.ast`, which stays one screenful per part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from mailrules.source import Span


@dataclass(frozen=True, slots=True)
class OnArrival:
    span: Span


@dataclass(frozen=True, slots=True)
class Every:
    """`every N minutes|hours`."""

    amount: int
    unit: Literal["minutes", "hours"]
    span: Span


@dataclass(frozen=True, slots=True)
class At:
    """`every day at HH:MM` (days empty) or `every monday[, friday] at HH:MM` / `every weekday at`.

    days are 0=monday .. 6=sunday, sorted.
    """

    days: tuple[int, ...]
    hour: int
    minute: int
    span: Span


@dataclass(frozen=True, slots=True)
class Cron:
    """`cron "m h dom mon dow"` (five fields)."""

    expression: str
    span: Span


@dataclass(frozen=True, slots=True)
class Manually:
    span: Span


@dataclass(frozen=True, slots=True)
class FlagChange:
    """`on flag change`: runs on the messages of its mailboxes whose flags or keywords someone else
    changed since the last look (CONDSTORE, RFC 7162); never on mailrules' own changes."""

    span: Span


Trigger = Union[OnArrival, Every, At, Cron, Manually, FlagChange]
