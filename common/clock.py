"""The clock seam: services ask it for the time so tests can move time by hand."""

import datetime


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


class SystemClock:
    def now(self):
        return utcnow()


class FakeClock:
    """A clock for tests that only moves when told to."""

    def __init__(self, start=None):
        self._now = start or datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)

    def now(self):
        return self._now

    def advance(self, seconds):
        self._now += datetime.timedelta(seconds=seconds)
        return self._now
