"""Bounds on the work one message may cause: text caps, the evaluation time limit and its deadline."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_BOUNDS",
    "Bounds",
    "Deadline",
    "EvaluationTimeout",
    "MessageBudgets",
    "check_deadline",
    "current_deadline",
    "deadline_scope",
]

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Bounds:
    """The `[limits]` of the configuration that bound the evaluation of one message.

    `part_text_bytes`: decoded bytes of one text part that `body` and `text` search (1 MiB: far
    above any real letter or newsletter, and the HTML-to-text pass over that much takes tens of
    milliseconds); `message_text_bytes`: the same for all the text parts of a message together
    and for its decoded header section in `text` (4 MiB); `evaluation_seconds`: the time the rules
    may spend evaluating one message in one pass, decoding and regular expressions included
    (2 s: a normal message takes milliseconds; a message over it is skipped, not retried).
    """

    part_text_bytes: int = 1 * MiB
    message_text_bytes: int = 4 * MiB
    evaluation_seconds: float = 2.0


DEFAULT_BOUNDS = Bounds()


class EvaluationTimeout(BaseException):
    """The message's evaluation ran out of time (`Bounds.evaluation_seconds`).

    MessageView's never-raising promise has this one exception: it is raised only inside a
    `deadline_scope`, so that a long decode stops where it is. A BaseException (as
    asyncio.CancelledError is) so that the `except Exception` guards that keep a broken message
    from crashing a decoder do not swallow it; the engine catches it by name.
    """


class Deadline:
    """A point in `clock` time after which work on one message stops."""

    __slots__ = ("at", "clock")

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.at = clock() + max(seconds, 0.0)

    def remaining(self) -> float:
        """Seconds left (0 when expired)."""
        return max(self.at - self.clock(), 0.0)

    @property
    def expired(self) -> bool:
        return self.clock() >= self.at

    def check(self) -> None:
        """Raise EvaluationTimeout when the deadline has passed."""
        if self.clock() >= self.at:
            raise EvaluationTimeout("evaluation time limit reached")


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("mailrules_deadline", default=None)


def current_deadline() -> Deadline | None:
    """The deadline of the evaluation running in this thread, if any."""
    return _current.get()


def check_deadline() -> None:
    """Raise EvaluationTimeout when the current evaluation's deadline has passed (no-op outside one)."""
    d = _current.get()
    if d is not None:
        d.check()


class deadline_scope:  # a context manager, named and called as the function it was
    """Make `deadline` the current one for the decoding that happens inside the block.

    A class, not @contextmanager: it is entered once per message and rule evaluated (52,000 times
    in a 20,000-message run), and a generator-based one costs about three times as much."""

    __slots__ = ("deadline", "token")

    def __init__(self, deadline: Deadline | None) -> None:
        self.deadline = deadline

    def __enter__(self) -> Deadline | None:
        self.token = _current.set(self.deadline)
        return self.deadline

    def __exit__(self, *exc: object) -> None:
        _current.reset(self.token)


class MessageBudgets:
    """Per message of one pass: the evaluation time still allowed, summed over every rule.

    Time spent on other messages, on IMAP commands or on actions is not charged: the budget is
    for the local evaluation (decoding, tests, regular expressions) of this message only.
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._spent: dict[int, float] = {}

    def start(self, uid: int) -> Deadline:
        """The deadline of the next evaluation of message `uid`; call `charge` after it."""
        return Deadline(self.seconds - self._spent.get(uid, 0.0), self.clock)

    def charge(self, uid: int, seconds: float) -> None:
        """Count `seconds` of evaluation against message `uid`."""
        self._spent[uid] = self._spent.get(uid, 0.0) + seconds

    def spent(self, uid: int) -> float:
        """Seconds already charged to message `uid`."""
        return self._spent.get(uid, 0.0)
