"""APScheduler 3.x wiring: one job per group and per scheduled rule outside one, in the configured zone."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from mailrules.dsl import ast as A
from mailrules.dsl import unparse

log = logging.getLogger(__name__)

#: A late job still runs if it is at most this late (daemon busy, clock jump, short suspend).
MISFIRE_GRACE_SECONDS = 300
_DOW = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def trigger_key(trigger: A.Trigger) -> str:
    """The same text for the same schedule, wherever it is written: the trigger as the language
    writes it (spans ignored), a cron expression's white space made single."""
    if isinstance(trigger, A.Cron):
        trigger = A.Cron(" ".join(trigger.expression.split()), trigger.span)
    return unparse.trigger(trigger)


def apscheduler_trigger(trigger: A.Trigger, tz: dt.tzinfo) -> Any | None:
    """The APScheduler trigger for a rule's trigger; None for `on arrival` and `manually`."""
    if isinstance(trigger, A.Every):
        unit = {"minutes": "minutes", "hours": "hours"}[trigger.unit]
        return IntervalTrigger(timezone=tz, **{unit: trigger.amount})
    if isinstance(trigger, A.At):
        dow = ",".join(_DOW[d] for d in trigger.days) if trigger.days else "*"
        return CronTrigger(hour=trigger.hour, minute=trigger.minute, day_of_week=dow, timezone=tz)
    if isinstance(trigger, A.Cron):
        return cron_trigger(trigger.expression, tz)
    return None


_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_dow(field: str) -> str:
    """A crontab day-of-week field (0 and 7 = Sunday) as APScheduler day names.

    APScheduler 3 numbers days from Monday = 0, so `from_crontab("0 9 * * 1-5")` would run
    Tuesday to Saturday; spelling the days out avoids the off-by-one.
    """
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        rng, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if rng == "*":
            lo, hi = 0, 6
        else:
            a, _, b = rng.partition("-")
            lo = _CRON_DAYS.index(a[:3]) if a[:3] in _CRON_DAYS else int(a)
            hi = (
                (_CRON_DAYS.index(b[:3]) if b[:3] in _CRON_DAYS else int(b))
                if b
                else (6 if step_text else lo)
            )
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(_CRON_DAYS[d] for d in sorted(days))


def cron_trigger(expression: str, tz: dt.tzinfo) -> Any:
    """A five-field crontab expression with cron's meaning (checked by the language's validator).

    As in cron(8), when both day of month and day of week are restricted, either one matching
    is enough; APScheduler would require both, so the two are combined with OrTrigger.
    """
    minute, hour, dom, month, dow = expression.split()
    common = {"minute": minute, "hour": hour, "month": month, "timezone": tz}
    if dom != "*" and dow != "*":
        return OrTrigger([CronTrigger(day=dom, **common), CronTrigger(day_of_week=_cron_dow(dow), **common)])
    return CronTrigger(day=dom, day_of_week=_cron_dow(dow), **common)


def job_key(rules: Sequence[A.Rule]) -> str:
    """A job's id: its group (or its one rule) and its trigger, so that a job keeps its next run
    time across a reload as long as neither changes."""
    first = rules[0]
    name = first.name if first.group is None else first.group
    return f"{'rule' if first.group is None else 'group'} {unparse.quote(name)} {trigger_key(first.trigger)}"


class Schedule:
    """Runs `run(rules)` for each group (its rules, in order, on one firing) and for each scheduled
    rule outside a group (alone), on its trigger (language.md, Triggers).

    Jobs are coalesced (a backlog of missed runs becomes one run), one instance at a time, with a
    misfire grace: a scheduled rule never overlaps itself. Mutual exclusion with arrival runs on
    the same mailbox is the caller's (the daemon holds a lock per account and mailbox).
    """

    def __init__(self, tz: dt.tzinfo, run: Callable[[list[A.Rule]], None]) -> None:
        self.tz = tz
        self._run = run
        self._scheduler = BackgroundScheduler(
            timezone=tz,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_SECONDS},
        )

    def load(self, rules: Sequence[A.Rule]) -> int:
        """Make the jobs those of `rules` (at start and on reload); return how many there are.

        A group's rules share one job and run together, in rule-set order; a scheduled rule
        outside a group has a job of its own, even when another rule has the same trigger. A job
        whose group (or rule) and trigger are unchanged keeps its next run time across a reload
        (an `every 6 hours` rule is not pushed back each time a rule file is saved); only its
        rules are updated.
        """
        groups: dict[str, list[A.Rule]] = {}
        triggers: dict[str, Any] = {}
        for rule in rules:
            trig = apscheduler_trigger(rule.trigger, self.tz)
            if trig is None:
                continue
            key = job_key([rule])
            groups.setdefault(key, []).append(rule)
            triggers.setdefault(key, trig)
        for job in self._scheduler.get_jobs():
            if job.id not in groups:
                job.remove()
        for key, group in groups.items():
            label = ", ".join(r.name for r in group)
            first = group[0]
            log.info(
                "schedule %s: %srule%s %s",
                trigger_key(first.trigger),
                "" if first.group is None else f"group {unparse.quote(first.group)}, ",
                "s" * (len(group) > 1),
                ", ".join(unparse.quote(r.name) for r in group),
            )
            if self._scheduler.get_job(key) is not None:
                self._scheduler.modify_job(key, args=[group], name=label)
            else:
                self._scheduler.add_job(self._run, triggers[key], args=[group], id=key, name=label)
        return len(groups)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self, wait: bool = True) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)

    def next_runs(self) -> dict[str, dt.datetime | None]:
        """Rule name -> the next time it runs (None while paused or not started)."""
        out: dict[str, dt.datetime | None] = {}
        for job in self._scheduler.get_jobs():
            for rule in job.args[0]:
                out[rule.name] = getattr(job, "next_run_time", None)
        return out


def next_fire(trigger: A.Trigger, tz: dt.tzinfo, after: dt.datetime) -> dt.datetime | None:
    """When a trigger would next fire at or after `after`; None if never scheduled.

    An interval counts from when the daemon started: here from `after`.
    """
    if isinstance(trigger, A.Every):
        return after + dt.timedelta(**{trigger.unit: trigger.amount})
    trig = apscheduler_trigger(trigger, tz)
    if trig is None:
        return None
    result: dt.datetime | None = trig.get_next_fire_time(None, after)
    return result
