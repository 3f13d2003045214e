"""One pass's evaluation of conditions on messages, each message within its `[limits]` bounds.

Every message of a pass gets `evaluation_seconds` for the local evaluation of all the rules that
read it (decoding, tests, regular expressions), and its text is cut at the text caps. A message
that runs out of time is skipped for the rest of the pass: logged once, counted under the reason
`evaluation_time`, left where it is, never retried by this pass (nor by the watcher, whose
checkpoint moves past it). The time other messages, IMAP commands and actions take is not charged
to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mailrules.bounds import Bounds, EvaluationTimeout, MessageBudgets
from mailrules.dsl import ast as A
from mailrules.dsl.semantics import EvalContext, Match, evaluate_condition
from mailrules.logs import printable
from mailrules.message.view import MessageView

__all__ = ["EVALUATION_TIME", "BoundedEvaluator"]

log = logging.getLogger(__name__)

#: The reason a message is skipped when its evaluation ran out of time (a metric label value).
EVALUATION_TIME = "evaluation_time"


class BoundedEvaluator:
    """Evaluates conditions on the messages of one pass over one mailbox, within `bounds`."""

    def __init__(
        self,
        bounds: Bounds,
        ctx: EvalContext,
        where: str,
        clock: Callable[[], float] = time.monotonic,
        *,
        quiet: bool = False,
    ) -> None:
        """`where`: `account/mailbox`, for the log lines. `quiet`: what this evaluator passes over
        is logged at DEBUG only (the pre-count of `limit`: the pass that follows reports it)."""
        self.bounds = bounds
        self.ctx = ctx
        self.where = where
        self.clock = clock
        self.quiet = quiet
        self.budgets = MessageBudgets(bounds.evaluation_seconds, clock)
        #: messages whose evaluation ran out of time in this pass (skipped from then on)
        self.over_time: set[int] = set()
        #: messages whose decoded text went past a cap (searched up to it)
        self.text_cut: set[int] = set()

    def evaluate(self, rule: A.Rule, condition: A.Condition, view: MessageView, uid: int) -> Match | None:
        """The condition on one message, or None (logged) when it cannot be evaluated: broken,
        or out of time (then `uid` is in `over_time`)."""
        if uid in self.over_time:
            return None
        if view.bounds != self.bounds:
            view.bounds = self.bounds  # before the first decode of its text (views start with defaults)
        started = self.clock()
        try:
            return evaluate_condition(condition, view, self.ctx, deadline=self.budgets.start(uid))
        except EvaluationTimeout:
            self.over_time.add(uid)
            log.log(
                logging.DEBUG if self.quiet else logging.WARNING,
                '%s: rule "%s": %s uid %d%s: evaluating it took more than %g s ([limits] '
                "evaluation_seconds); skipped and left in place",
                rule.span.short,
                rule.name,
                self.where,
                uid,
                _message_id(view),
                self.bounds.evaluation_seconds,
            )
            return None
        except Exception:  # a message the decoder could not make sense of: skip it, loudly
            log.log(
                logging.DEBUG if self.quiet else logging.ERROR,
                '%s: rule "%s": %s uid %d could not be evaluated; skipped',
                rule.span.short,
                rule.name,
                self.where,
                uid,
                exc_info=True,
            )
            return None
        finally:
            self.budgets.charge(uid, self.clock() - started)
            self._note_text_cut(uid, view)

    def judge_ahead(self, condition: A.Condition, view: MessageView, uid: int) -> tuple[Match, float] | None:
        """The condition on one message, on another thread ahead of its rule's turn
        (engine/prefetch.py): (match, seconds taken), to be handed to `accept` at the rule's turn,
        or None when it must be judged then, by `evaluate` (broken, or out of the time left to the
        message when it started). Changes nothing of this pass's accounts and logs nothing: the
        message may have left the pass by its rule's turn."""
        if uid in self.over_time:
            return None
        if view.bounds != self.bounds:
            view.bounds = self.bounds
        started = self.clock()
        try:
            m = evaluate_condition(condition, view, self.ctx, deadline=self.budgets.start(uid))
        except (EvaluationTimeout, Exception):
            return None
        return m, self.clock() - started

    def accept(self, uid: int, view: MessageView, seconds: float) -> bool:
        """Take a verdict of `judge_ahead` at its rule's turn: charge its `seconds` to the message
        and say so, or False when the message's time would then be over (out of time already,
        or evaluating it in turn would have run out: `evaluate` it, which says so)."""
        if uid in self.over_time or self.budgets.spent(uid) + seconds > self.bounds.evaluation_seconds:
            return False
        self.budgets.charge(uid, seconds)
        self._note_text_cut(uid, view)
        return True

    def _note_text_cut(self, uid: int, view: MessageView) -> None:
        if view.text_cut and uid not in self.text_cut:
            self.text_cut.add(uid)
            log.log(
                logging.DEBUG if self.quiet else logging.INFO,
                "%s uid %d%s: text past [limits] part_text_bytes = %d / message_text_bytes = %d "
                "is not searched",
                self.where,
                uid,
                _message_id(view),
                self.bounds.part_text_bytes,
                self.bounds.message_text_bytes,
            )

    def vanished(self, rule: A.Rule, uid: int) -> None:
        """Log a message that was found by SEARCH but is gone by FETCH (expunged by another client)."""
        log.log(
            logging.DEBUG if self.quiet else logging.INFO,
            '%s: rule "%s": message uid %d vanished (expunged by another client); skipped',
            rule.span.short,
            rule.name,
            uid,
        )


def _message_id(view: MessageView) -> str:
    try:
        mid = view.message_id
    except Exception:  # logging must not fail on the message it reports
        return ""
    return f" (Message-ID {printable(mid[:200])})" if mid else ""
