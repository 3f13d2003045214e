"""Date and age tests as SEARCH keys: zone-safe SINCE/BEFORE windows, SENT*, RFC 5032 OLDER/YOUNGER."""

from __future__ import annotations

import datetime as dt

from mailrules.compile import keys as K
from mailrules.dsl.ages import subtract_age

_MIN_AWARE = dt.datetime(1, 1, 2, tzinfo=dt.UTC)


def _day_shift(d: dt.date, days: int) -> dt.date | None:
    try:
        return d + dt.timedelta(days=days)
    except OverflowError:
        return None


def instant_window(lo: dt.datetime | None, hi: dt.datetime | None) -> K.SearchKey:
    """A SINCE/BEFORE key holding for every instant in [lo, hi) on a server in any zone.

    RFC 9051 §6.4.4 compares the server's calendar day, and the server's zone is unknown: any
    offset from -12 h to +14 h is allowed for, so the window is about a day wider on each side.
    """
    out: list[K.SearchKey] = []
    if lo is not None:
        since = _utc_day(lo, hours=-12, days=0)
        if since is not None:
            out.append(K.Date("SINCE", since))
    if hi is not None:
        last = hi - dt.timedelta(microseconds=1) if hi > _MIN_AWARE else hi
        before = _utc_day(last, hours=14, days=1)
        if before is not None:
            out.append(K.Date("BEFORE", before))
    return K.and_(*out)


def _utc_day(t: dt.datetime, *, hours: int, days: int) -> dt.date | None:
    """The calendar day of `t` at UTC+`hours`, plus `days`; None when out of range."""
    try:
        return _day_shift((t.astimezone(dt.UTC) + dt.timedelta(hours=hours)).date(), days)
    except (OverflowError, ValueError):
        return None


def _local_midnight(d: dt.date, tz: dt.tzinfo) -> dt.datetime | None:
    try:
        # fold=0 and a gap-free reading are fine: we only need an instant near the day's start,
        # and the window is widened by a day anyway.
        return dt.datetime.combine(d, dt.time(0), tz)
    except (OverflowError, ValueError):
        return None

    return _day_shift(d, 1)


def sent_key(relation: str, d: dt.date) -> K.SearchKey:
    """SENTBEFORE/SENTON/SENTSINCE for `sent before|on|after d` (a prefilter: see `plan`).

    SENT* compare the Date: header's own day (RFC 9051 §6.4.4), as the language does; but a
    message without a valid Date: is 1970-01-01 on the server and matches no sent test here.
    """
    if relation == "before":
        return K.Date("SENTBEFORE", d)
    if relation == "on":
        return K.Date("SENTON", d)
    nxt = _day_shift(d, 1)
    return K.Date("SENTSINCE", nxt) if nxt is not None else K.Not(K.ALL)


def received_key(relation: str, d: dt.date, tz: dt.tzinfo) -> K.SearchKey:
    """A SINCE/BEFORE window holding for `received before|on|after d` (the day of INTERNALDATE in
    `tz`), whatever zone the server counts its days in."""
    start = _local_midnight(d, tz)
    nxt = _day_shift(d, 1)
    end = _local_midnight(nxt, tz) if nxt is not None else None
    if relation == "before":
        return instant_window(None, start) if start is not None else K.ALL
    if relation == "after":
        return instant_window(end, None) if end is not None else K.ALL
    return instant_window(start, end)


def age_key(
    older: bool, amount: int, unit: str, now: dt.datetime, tz: dt.tzinfo, within: bool, skew: int = 0
) -> tuple[K.SearchKey, bool]:
    """The key for `older|newer than N UNIT` and whether it is exact.

    With WITHIN, RFC 5032 OLDER/YOUNGER count seconds back from the *server's* clock when the
    SEARCH runs, not from `now`: `skew` seconds of difference are allowed for (OLDER n-skew,
    YOUNGER n+skew), and then the residual decides. `skew=0` trusts the clocks: exact.
    """
    # Months and years count on the calendar of the configured zone, as the language does.
    threshold = subtract_age(now.astimezone(tz), amount, unit)
    # Elapsed time in UTC: aware datetimes sharing a tzinfo would subtract as wall-clock time.
    try:
        span = now.astimezone(dt.UTC) - threshold.astimezone(dt.UTC)
    except OverflowError:
        span = dt.timedelta(0)
    seconds = span.days * 86400 + span.seconds
    if within and not span.microseconds:
        # nz-number: OLDER 0 / YOUNGER 0 are not valid keys.
        if older and seconds - skew >= 1:
            return K.Older(seconds - skew), skew == 0
        if not older and seconds >= 1:
            return K.Younger(seconds + skew), skew == 0
    if older:
        return instant_window(None, threshold), False
    return instant_window(threshold, None), False
