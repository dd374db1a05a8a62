"""Progress reports: while a pull runs, the master hears how far it has come, at most once per interval.

Each one is a ``syncing`` report with rsync's whole-transfer progress, queued
in the outbox like any report: it tells the master the slave is alive (each
moves the part's start deadline on by SLAVE_START_TIMEOUT) and what the run's
part shows. Once the pull has ended the reporter is closed and sends nothing
more, so the final report is always the last one queued for its run; the
outbox keeps one file per run, so a final report replaces a progress report
that was not delivered yet.
"""

import threading


class ProgressReporter:
    """Passes on at most one progress per ``interval`` seconds of ``monotonic`` time, until closed."""

    def __init__(self, send, interval, monotonic):
        self._send = send            # (progress dict) -> None
        self._interval = interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # The pull's start was reported just before: the first progress waits a whole interval.
        self._last = monotonic()
        self._closed = False

    def __call__(self, progress):
        """Called by the runner from its output thread; returns whether ``progress`` was sent."""
        with self._lock:
            if self._closed:
                return False
            stamp = self._monotonic()
            if stamp - self._last < self._interval:
                return False
            self._last = stamp
            # Under the lock: close() waits for a send in flight, so nothing is queued after it.
            self._send(progress)
            return True

    def close(self):
        """The pull ended: its final report comes next, and no progress after it."""
        with self._lock:
            self._closed = True
