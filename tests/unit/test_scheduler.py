"""Schedules: triggers fire when cron(8) and the language say, in the configured time zone."""

from __future__ import annotations

import datetime as dt
import threading
from zoneinfo import ZoneInfo

import pytest

from mailrules.daemon.scheduler import Schedule, next_fire, trigger_key
from mailrules.dsl import ast as A
from mailrules.dsl.parser import parse_text

PARIS = ZoneInfo("Europe/Paris")
THU = dt.datetime(2026, 11, 26, 15, 0, tzinfo=PARIS)  # a Thursday


def trigger(text: str) -> A.Trigger:
    rf, diags = parse_text(f'rule "r" {text} {{ then flag }}', "t.rules")
    assert rf is not None and not diags, diags
    return rf.rules[0].trigger


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("every day at 03:00", dt.datetime(2026, 11, 27, 3, 0, tzinfo=PARIS)),
        ("every day at 16:00", dt.datetime(2026, 11, 26, 16, 0, tzinfo=PARIS)),
        ("every monday at 08:30", dt.datetime(2026, 11, 30, 8, 30, tzinfo=PARIS)),
        ('cron "0 9 * * 0"', dt.datetime(2026, 11, 29, 9, 0, tzinfo=PARIS)),  # 0 = Sunday, as in cron(8)
        ('cron "0 9 * * 1-5"', dt.datetime(2026, 11, 27, 9, 0, tzinfo=PARIS)),
        ('cron "0 9 * * 7"', dt.datetime(2026, 11, 29, 9, 0, tzinfo=PARIS)),
        ('cron "30 2 1 * *"', dt.datetime(2026, 12, 1, 2, 30, tzinfo=PARIS)),
        # day of month OR day of week, as cron(8) does: the 28th (Saturday) comes before a Monday
        ('cron "0 12 28 * mon"', dt.datetime(2026, 11, 28, 12, 0, tzinfo=PARIS)),
        ('cron "*/20 * * * *"', dt.datetime(2026, 11, 26, 15, 0, tzinfo=PARIS)),  # at or after
    ],
)
def test_next_fire(text: str, expected: dt.datetime) -> None:
    assert next_fire(trigger(text), PARIS, THU) == expected


def test_weekday_steps_follow_cron_numbering() -> None:
    # */2 in cron is Sunday, Tuesday, Thursday, Saturday
    fires = []
    t = THU.replace(hour=0)
    for _ in range(4):
        fire = next_fire(trigger('cron "0 1 * * */2"'), PARIS, t + dt.timedelta(minutes=1))
        assert fire is not None
        t = fire
        fires.append(t.strftime("%a"))
    assert fires == ["Thu", "Sat", "Sun", "Tue"]


def test_every_n_minutes_and_arrival() -> None:
    fire = next_fire(trigger("every 15 minutes"), PARIS, THU)
    assert fire is not None and fire - THU == dt.timedelta(minutes=15)
    assert next_fire(trigger("on arrival"), PARIS, THU) is None
    assert next_fire(trigger("manually"), PARIS, THU) is None


def test_schedule_loads_and_runs_jobs() -> None:
    rf, _ = parse_text('rule "tick" every 1 minutes { then flag }\nrule "arr" { then flag }', "t.rules")
    assert rf is not None
    ran: list[list[str]] = []
    done = threading.Event()

    def run(rules: list[A.Rule]) -> None:
        ran.append([r.name for r in rules])
        done.set()

    schedule = Schedule(dt.UTC, run)
    assert schedule.load(rf.rules) == 1
    assert list(schedule.next_runs()) == ["tick"]
    schedule.start()
    try:
        schedule._scheduler.modify_job('rule "tick" every 1 minute', next_run_time=dt.datetime.now(dt.UTC))
        assert done.wait(10)
        assert ran == [["tick"]]
    finally:
        schedule.shutdown()


def test_a_group_is_one_job_in_order_and_reload_keeps_next_run() -> None:
    text = (
        'rule "b" every day at 03:00 { then flag }\n'
        'group "nightly" every day at 3:00 {\n'
        '    rule "g1" { then flag }\n'
        '    rule "g2" in "X" { then flag }\n'
        "}\n"
        'rule "a" in "X" every day at 3:00 { then flag }\n'
        'rule "c" every 6 hours { then flag }\n'
    )
    rf, _ = parse_text(text, "t.rules")
    assert rf is not None
    schedule = Schedule(dt.UTC, lambda rules: None)
    # the group is one job; rules outside a group run alone, even on the same schedule
    assert schedule.load(rf.rules) == 4
    schedule.start()
    try:
        jobs = {j.id: [r.name for r in j.args[0]] for j in schedule._scheduler.get_jobs()}
        assert jobs == {
            'rule "b" every day at 03:00': ["b"],
            'group "nightly" every day at 03:00': ["g1", "g2"],  # rule-set order
            'rule "a" every day at 03:00': ["a"],
            'rule "c" every 6 hours': ["c"],
        }
        before = schedule._scheduler.get_job('rule "c" every 6 hours').next_run_time
        rf2, _ = parse_text(text.replace('rule "a"', 'rule "a2"'), "t.rules")
        assert rf2 is not None
        assert schedule.load(rf2.rules) == 4
        assert schedule._scheduler.get_job('rule "c" every 6 hours').next_run_time == before  # kept
        assert sorted(schedule.next_runs()) == ["a2", "b", "c", "g1", "g2"]
        assert schedule.load(rf2.rules[:1]) == 1  # every schedule but b's dropped
        assert sorted(schedule.next_runs()) == ["b"]
    finally:
        schedule.shutdown()


def test_jobs_are_named_and_logged_as_the_language_writes_triggers(caplog: pytest.LogCaptureFixture) -> None:
    text = (
        'rule "a" every mon at 9:00 { then flag }\n'
        'group "weekdays" cron "0  9 * *   1-5" {\n'
        '    rule "c" { then flag }\n'
        '    rule "d" { then flag }\n'
        "}\n"
        'rule "e" every 1 hours { then flag }\n'
    )
    rf, _ = parse_text(text, "t.rules")
    assert rf is not None
    assert [trigger_key(r.trigger) for r in rf.rules] == [
        "every monday at 09:00",
        'cron "0 9 * * 1-5"',
        'cron "0 9 * * 1-5"',
        "every 1 hour",
    ]
    schedule = Schedule(dt.UTC, lambda rules: None)
    with caplog.at_level("INFO", logger="mailrules.daemon.scheduler"):
        assert schedule.load(rf.rules) == 3
    assert sorted(j.id for j in schedule._scheduler.get_jobs()) == [
        'group "weekdays" cron "0 9 * * 1-5"',
        'rule "a" every monday at 09:00',
        'rule "e" every 1 hour',
    ]
    assert caplog.messages == [
        'schedule every monday at 09:00: rule "a"',
        'schedule cron "0 9 * * 1-5": group "weekdays", rules "c", "d"',
        'schedule every 1 hour: rule "e"',
    ]
