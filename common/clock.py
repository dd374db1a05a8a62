"""The clock seam: services ask it for the time so tests can move time by hand.

``now()`` is the wall clock (for timestamps people read); ``monotonic()`` never
steps (for windows and timeouts). On Linux CLOCK_MONOTONIC is one clock for the
whole host since boot, so processes on one host can compare values they store;
``monotonic_id()`` names that clock (the boot), so a value stored by another
host or before a reboot is never compared with it.
"""

import datetime
import socket
import time

_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def _boot_id():
    try:
        with open(_BOOT_ID_FILE, encoding="ascii") as stream:
            boot = stream.read().strip()
    except OSError:
        boot = f"pid-start-{time.time_ns()}"  # no boot id: never share values across processes
    return f"{socket.gethostname()[:20]}/{boot}"


class SystemClock:
    def __init__(self):
        self._monotonic_id = _boot_id()

    def now(self):
        return utcnow()

    def monotonic(self):
        return time.monotonic()

    def monotonic_id(self):
        return self._monotonic_id


class FakeClock:
    """A clock for tests that only moves when told to."""

    def __init__(self, start=None):
        self._now = start or datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        self._monotonic = 1000.0

    def now(self):
        return self._now

    def monotonic(self):
        return self._monotonic

    def monotonic_id(self):
        return "fake-host/fake-boot"

    def advance(self, seconds):
        """Time passes: both clocks move."""
        self._now += datetime.timedelta(seconds=seconds)
        self._monotonic += seconds
        return self._now

    def step_wall_clock(self, seconds):
        """Someone sets the wall clock (NTP, an admin): only ``now()`` jumps."""
        self._now += datetime.timedelta(seconds=seconds)
        return self._now
