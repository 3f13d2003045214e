"""The connection budget: watchers, the poller and scheduled runs never exceed max_connections."""

from __future__ import annotations

import pytest

from mailrules.daemon.plan import plan_connections


@pytest.mark.parametrize(
    ("watched", "budget", "scheduled", "expected"),
    [
        (1, 5, True, (1, 2)),
        (4, 5, True, (4, 5)),
        (5, 5, True, (3, 5)),  # 3 IDLE + 1 poller + 1 scheduled
        (5, 5, False, (5, 5)),
        (6, 5, False, (4, 5)),
        (3, 2, True, (0, 2)),  # everything polled on one connection, one for schedules
        (0, 1, True, (0, 1)),
        (1, 1, False, (1, 1)),
        (1, 1, True, (0, 2)),  # too small: refused at load
    ],
)
def test_plan_connections(watched: int, budget: int, scheduled: bool, expected: tuple[int, int]) -> None:
    assert plan_connections(watched, budget, scheduled) == expected


@pytest.mark.parametrize("budget", range(1, 12))
@pytest.mark.parametrize("watched", range(0, 15))
def test_never_over_budget_when_budget_allows(budget: int, watched: int) -> None:
    for scheduled in (False, True):
        idle, used = plan_connections(watched, budget, scheduled)
        assert idle <= watched
        if budget >= 1 + int(scheduled and watched > 0):
            assert used <= budget
