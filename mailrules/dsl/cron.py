"""Validation of 5-field cron expressions (m h dom mon dow), without a scheduler library."""

from __future__ import annotations

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

#: (name, lowest, highest, names mapped to numbers)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {d: i for i, d in enumerate(_DAYS)}),
)


def _value(text: str, field: tuple[str, int, int, dict[str, int]]) -> int:
    name, lo, hi, names = field
    key = text.lower()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise ValueError(f"{name} field: '{text}' is not a number" + (" or a name" if names else ""))
    n = int(text)
    if not lo <= n <= hi:
        raise ValueError(f"{name} field: {n} is out of range {lo}-{hi}")
    return n


def _item(item: str, field: tuple[str, int, int, dict[str, int]]) -> None:
    name = field[0]
    base, slash, step = item.partition("/")
    if slash and (not step.isdigit() or int(step) == 0):
        raise ValueError(f"{name} field: step '{step}' must be a whole number above 0")
    if base == "*":
        return
    if not base:
        raise ValueError(f"{name} field: empty item in '{item}'")
    first, dash, last = base.partition("-")
    a = _value(first, field)
    if dash:
        b = _value(last, field)
        if a > b:
            raise ValueError(f"{name} field: range {base} goes backwards")


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a valid 5-field cron expression, or None when it is."""
    parts = expression.split()
    if len(parts) != 5:
        return (
            f"invalid cron expression {expression!r}: expected 5 fields "
            f"(minute hour day-of-month month day-of-week), got {len(parts)}"
        )
    for part, field in zip(parts, _FIELDS):
        try:
            for item in part.split(","):
                _item(item, field)
        except ValueError as err:
            return f"invalid cron expression {expression!r}: {err}"
    return None
