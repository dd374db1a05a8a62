"""Noticing the wall clock stepping (NTP, an admin, a resumed VM) by comparing it with the monotonic one.

APScheduler 3 times its jobs on the wall clock: after a step back of four
minutes it would wait four minutes longer for every timer. The scheduler
process watches for such a step and has its timers worked out again from the
new time.
"""

import logging
import threading
import time

log = logging.getLogger(__name__)

# Steps smaller than this are left to the clocks' own slewing.
STEP_THRESHOLD = 2.0
CHECK_INTERVAL = 1.0


class ClockStepWatch:
    """Calls ``on_step(seconds)`` (negative: the wall clock went back) when the wall clock jumps."""

    def __init__(self, on_step, threshold=STEP_THRESHOLD, interval=CHECK_INTERVAL, wall=time.time,
                 monotonic=time.monotonic):
        self.on_step = on_step
        self.threshold = threshold
        self.interval = interval
        self.wall = wall
        self.monotonic = monotonic
        self._offset = wall() - monotonic()
        self._stopping = threading.Event()
        self._thread = None

    def check(self):
        """Compare the clocks once; returns the step seen (seconds), or 0.0."""
        offset = self.wall() - self.monotonic()
        step, self._offset = offset - self._offset, offset
        if abs(step) < self.threshold:
            return 0.0
        log.warning("the wall clock stepped %s by %.1f s; working the timers out again",
                    "back" if step < 0 else "ahead", abs(step))
        self.on_step(step)
        return step

    def start(self):
        self._thread = threading.Thread(target=self._run, name="clock-step-watch", daemon=True)
        self._thread.start()

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self):
        while not self._stopping.wait(self.interval):
            try:
                self.check()
            except Exception:
                log.exception("watching the clock failed; trying again")
