"""The engine's calls into its observers (metrics, log hooks), none of which can stop the work.

As dramatiq's broker calls each middleware hook inside try/except: what an observer raises is
logged and the engine goes on, so that an action the server carried out is journalled whatever a
metric or a log line does. The first failure of each hook is logged at ERROR with its traceback;
the same hook failing again is logged at DEBUG (a broken observer would otherwise log once per
message).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from mailrules.engine.ports import EngineObserver, EntryHook, MailboxReport, RuleReport
from mailrules.logs import printable
from mailrules.state.models import JournalEntry

__all__ = ["SafeObservers"]

log = logging.getLogger(__name__)


class SafeObservers:
    """An engine's `on_entry` hook and `observer`, each call guarded."""

    def __init__(self, on_entry: EntryHook | None, observer: EngineObserver | None) -> None:
        self.on_entry = on_entry
        self.observer = observer
        self._failed: set[str] = set()  # hooks that raised already (logged with traceback once)
        self._lock = threading.Lock()

    def entry(self, entry: JournalEntry) -> None:
        """One journal entry: the log hook, then the observer."""
        if self.on_entry is not None:
            self._call("on_entry", self.on_entry, entry)
        if self.observer is not None:
            self._call("entry", self.observer.entry, entry)

    def rule_done(self, report: RuleReport, seconds: float) -> None:
        if self.observer is not None:
            self._call("rule_done", self.observer.rule_done, report, seconds)

    def mailbox_done(self, report: MailboxReport, seconds: float) -> None:
        if self.observer is not None:
            self._call("mailbox_done", self.observer.mailbox_done, report, seconds)

    def _call(self, hook: str, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception as exc:
            with self._lock:
                first = hook not in self._failed
                self._failed.add(hook)
            log.log(
                logging.ERROR if first else logging.DEBUG,
                "engine observer %s failed (%s: %s); the work goes on, the journal is written%s",
                _name(fn, hook),
                type(exc).__name__,
                printable(str(exc)),
                "" if first else " (failed before)",
                exc_info=True,
            )


def _name(fn: Callable[..., object], hook: str) -> str:
    owner = getattr(fn, "__self__", None)
    if owner is not None:
        return f"{type(owner).__name__}.{hook}"
    return getattr(fn, "__qualname__", hook)
