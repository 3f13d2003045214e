"""What `older than N UNIT` / `newer than N UNIT` count from: N units before now."""

from __future__ import annotations

import calendar
import datetime as dt


def subtract_age(now: dt.datetime, amount: int, unit: str) -> dt.datetime:
    """`now` minus N units: months and years on the calendar of `now`'s zone (day of month
    clamped); minutes to weeks as elapsed time (a day is 24 h, even across a DST change).

    The one definition of "N units ago" for the language: the planner's server keys and the
    per-message semantics both use it.
    """
    if unit in ("months", "years"):
        months = amount * (12 if unit == "years" else 1)
        total = now.year * 12 + (now.month - 1) - months
        year, month = divmod(total, 12)
        year = max(year, dt.MINYEAR)
        day = min(now.day, calendar.monthrange(year, month + 1)[1])
        return now.replace(year=year, month=month + 1, day=day)
    seconds = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}[unit]
    try:
        if now.tzinfo is None:
            return now - dt.timedelta(seconds=amount * seconds)
        # aware arithmetic in one zone is wall-clock arithmetic: subtract in UTC instead
        return (now.astimezone(dt.UTC) - dt.timedelta(seconds=amount * seconds)).astimezone(now.tzinfo)
    except OverflowError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
