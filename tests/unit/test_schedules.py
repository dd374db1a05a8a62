"""Crontab parsing keeps crontab's meaning of weekdays (Sunday is 0 and 7)."""

import datetime

import pytest
from marshmallow import ValidationError

from master.schedules import next_fire_time, validate_crontab

SATURDAY = datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("expression, expected", [
    ("0 3 * * 0", "2026-11-22 03:00"),      # Sunday
    ("0 3 * * 7", "2026-11-22 03:00"),      # Sunday, spelled 7
    ("0 3 * * 1-5", "2026-11-23 03:00"),    # next weekday is Monday
    ("0 3 * * 6", "2026-11-28 03:00"),      # Saturday 03:00 has passed today
    ("0 3 * * sun", "2026-11-22 03:00"),
    ("0 3 * * 1,3", "2026-11-23 03:00"),
    ("*/20 * * * *", "2026-11-21 10:00"),
    ("15 */6 * * *", "2026-11-21 12:15"),
])
def test_next_fire_time_uses_crontab_weekdays(expression, expected):
    assert next_fire_time(expression, SATURDAY).strftime("%Y-%m-%d %H:%M") == expected


@pytest.mark.parametrize("expression", [
    "", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 32 * *", "* * * 13 *",
    "0 3 * * 8", "a b c d e", "0 3 * * 1-9", "0\n3 * * *", "0 3 * * 1;reboot",
])
def test_bad_crontabs_are_refused(expression):
    with pytest.raises(ValidationError):
        validate_crontab(expression)


def test_next_fire_time_parses_each_schedule_once(monkeypatch):
    from master import schedules
    parsed = []
    real = schedules.parse_crontab
    monkeypatch.setattr(schedules, "parse_crontab", lambda *args: parsed.append(args) or real(*args))
    schedules._cached_trigger.cache_clear()
    for minute in range(50):
        moment = SATURDAY + datetime.timedelta(minutes=minute)
        assert next_fire_time("7 * * * *", moment) >= moment
    assert len(parsed) == 1, "the projects list and /metrics read next_run for every project"
