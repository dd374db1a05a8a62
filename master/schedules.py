"""Crontab parsing for project schedules, on top of APScheduler's CronTrigger.

APScheduler 3.x numbers weekdays from Monday=0, while crontab uses Sunday=0
(and 7); numeric weekdays are translated to names so that ``0 3 * * 1-5``
means what a crontab user expects.
"""

import functools
import re

from apscheduler.triggers.cron import CronTrigger
from marshmallow import ValidationError

from common.clock import utcnow

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NUMERIC_ITEM = re.compile(r"^(\*|\d+)(?:-(\d+))?(?:/(\d+))?$")


def _crontab_weekdays(field):
    """Rewrite a crontab day-of-week field into APScheduler's names."""
    items = []
    for item in field.split(","):
        match = _NUMERIC_ITEM.match(item)
        if item == "*" or not match:
            items.append(item)  # names (mon-fri) mean the same to both
            continue
        start, end, step = match.groups()
        if start == "*":
            first, last = 0, 6
        else:
            first = int(start)
            last = int(end) if end is not None else (6 if step else first)
        if not (0 <= first <= 7 and 0 <= last <= 7) or first > last:
            raise ValueError(f"day of week {item!r} is out of range 0-7")
        days = range(first, last + 1, int(step) if step else 1)
        items.extend(DAY_NAMES[day % 7] for day in days)
    return ",".join(dict.fromkeys(items))


def parse_crontab(expression, timezone="UTC", splay=None):
    """Return a CronTrigger for a 5-field crontab, fired up to ``splay`` seconds late at random.

    Raises ValueError when it is not a crontab.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"a crontab has 5 fields (minute hour day month weekday), got {len(fields)}")
    fields[4] = _crontab_weekdays(fields[4])
    return CronTrigger(minute=fields[0], hour=fields[1], day=fields[2], month=fields[3],
                       day_of_week=fields[4], timezone=timezone, jitter=splay or None)


def validate_crontab(value):
    if len(value) > 128 or not value.isascii() or any(ord(c) < 32 for c in value):
        raise ValidationError("Must be a 5-field crontab such as '0 */6 * * *'.")
    try:
        trigger = parse_crontab(value)
    except ValueError as error:
        raise ValidationError(f"Not a valid crontab: {error}.") from None
    if trigger.get_next_fire_time(None, utcnow()) is None:
        raise ValidationError("This schedule never fires (no such date).")


@functools.lru_cache(maxsize=4096)
def _cached_trigger(expression, timezone):
    # Parsing costs far more than asking a parsed trigger; a site has a few dozen distinct schedules.
    return parse_crontab(expression, timezone)


# (expression, timezone) -> (asked at, answer): the answer holds for any moment up to itself.
_answers = {}


def next_fire_time(expression, now, timezone="UTC"):
    """When a schedule fires next after ``now``, or None for a manual-only project."""
    if not expression:
        return None
    key = (expression, timezone)
    known = _answers.get(key)
    if known is not None and known[0] <= now and (known[1] is None or now <= known[1]):
        return known[1]
    answer = _cached_trigger(expression, timezone).get_next_fire_time(None, now)
    _answers[key] = (now, answer)
    return answer
