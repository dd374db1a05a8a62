"""Reports waiting for the master: one file per run in STATE_DIR/outbox, sent until acknowledged.

A report is on disk before anyone tries to send it, so a restart or a master
that is down loses nothing. A later report for the same run (the final one
after "syncing") replaces the earlier file and keeps its place in the queue;
a progress report never replaces a final one. A report put off for a moment (a
pull's start) waits in memory until it is due: a pull done by then is reported
once, as done, and its start never costs a write and two syncs of the disk. A
slave that dies meanwhile loses only that start: it pulls the order again when
it starts again, or, once rsync ran (the record says so), reports the pull failed.
The master counts the same report twice as once, so sending again is safe.
"""

import contextlib
import logging
import os
import random
import re
import secrets
import threading
import time

from slave.credentials import ensure_private_dir, read_json, write_json_atomically
from slave.master_client import DROPPED, MasterUnavailable

log = logging.getLogger(__name__)

BACKOFF_START = 0.2
# With nothing to send, look at the directory this often anyway (a new report wakes it at once).
IDLE_RESCAN = 30.0
# Before enrollment there is no key to sign with; look again this often.
NOT_ENROLLED_WAIT = 1.0
FINAL_REPORT_STATES = frozenset({"success", "failed"})
_FILE_RE = re.compile(r"^(\d+)-([a-z0-9][a-z0-9._-]*)\.json$")


def backoff_delay(attempt, cap, rng=random.random):
    """Seconds to wait before try number ``attempt`` + 1: full jitter over 0.2 s doubling, at most ``cap``."""
    return rng() * min(cap, BACKOFF_START * 2 ** min(attempt, 32))


class Outbox:
    """Queue reports on disk and deliver them in order from one background thread."""

    def __init__(self, directory, client, credentials, retry_max, rng=random.random):
        self.directory = directory
        self.client = client
        self.credentials = credentials   # () -> Credentials | None
        self.retry_max = retry_max
        self.rng = rng
        ensure_private_dir(directory)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = None
        self._sequence = 0
        self._next_due = None   # seconds until the first deferred report may go, as last seen
        self._deferred = {}     # path -> the entry of a report put off, not written until it is due
        # Delivery passes begun and ended, for ``flush``.
        self._passes = threading.Condition()
        self._passes_begun = 0
        self._passes_ended = 0

    def put(self, report, delay=0.0):
        """Queue ``report`` (a ReportSchema dict), replacing an earlier one for the same run, to go out in
        ``delay`` seconds (at once by default; a report that replaces it meanwhile goes instead).
        Raises OSError."""
        self._queue(report, keep_final=False, delay=delay)

    def put_progress(self, report):
        """Queue a progress report (``syncing``), unless the run's final report still waits: that one
        must reach the master. Returns whether it was queued. Raises OSError."""
        return self._queue(report, keep_final=True)

    def _queue(self, report, keep_final, delay=0.0):
        path = self._path(report["run_id"], report["project"])
        with self._lock:
            on_disk = self._read(path)
            entry = on_disk or self._deferred.get(path)
            if keep_final and entry is not None and entry["report"].get("state") in FINAL_REPORT_STATES:
                return False
            sequence = entry["sequence"] if entry else self._next_sequence()
            body = {"sequence": sequence, "version": secrets.token_hex(8), "report": report}
            if delay > 0:
                body["not_before"] = time.time() + delay
            if delay > 0 and on_disk is None:
                self._deferred[path] = body
            else:
                self._deferred.pop(path, None)
                write_json_atomically(path, body)
        self._wake.set()
        return True

    def _write_deferred(self, due_by=None):
        """Write to disk the reports put off that are due by ``due_by`` (time.time()), every one
        without it. Raises OSError, and then the rest stays in memory."""
        with self._lock:
            for path, body in list(self._deferred.items()):
                if due_by is None or body["not_before"] <= due_by:
                    write_json_atomically(path, body)
                    del self._deferred[path]

    def _due_in(self, entry, now):
        """Seconds until ``entry`` may go (0 when it may go now)."""
        not_before = entry.get("not_before")
        return max(0.0, not_before - now) if isinstance(not_before, (int, float)) else 0.0

    def flush(self, timeout):
        """Wait (at most ``timeout`` seconds) until the delivery thread has tried to send every report
        queued before the call: one whole pass begun after it has ended, delivered or not. Returns at
        once when the thread is not running. A deferred report does not count: it waits its turn."""
        deadline = time.monotonic() + timeout
        with self._passes:
            if self._thread is None:
                return
            wanted = self._passes_begun + 1
            while self._passes_ended < wanted and self._thread is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._passes.wait(left)

    def pending(self):
        """The queued reports, oldest first, with those put off."""
        with self._lock:
            deferred = list(self._deferred.values())
        entries = [entry for _, entry in self._entries()] + deferred
        return [entry["report"] for entry in sorted(entries, key=lambda entry: entry["sequence"])]

    def deliver_pending(self):
        """Send every queued report once, in order; returns how many left the outbox.

        Stops at the first failure and raises MasterUnavailable; the rest stays queued.
        """
        now = time.time()
        self._write_deferred(due_by=now)
        entries = self._entries()
        with self._lock:
            waiting = [entry for _, entry in entries] + list(self._deferred.values())
        # When the first deferred report falls due: the delivery thread sleeps until then.
        self._next_due = min((wait for wait in (self._due_in(entry, now) for entry in waiting) if wait > 0),
                             default=None)
        if not entries:
            return 0
        credentials = self.credentials()
        if credentials is None:
            raise MasterUnavailable("this slave is not enrolled yet")
        delivered = 0
        for path, entry in entries:
            if self._due_in(entry, now):
                continue  # deferred: a report about the same run may still replace it
            report = entry["report"]
            outcome = self.client.report(credentials, report)
            if outcome == DROPPED:
                log.warning("the master will never accept the %s report of run %s (%s); dropped it",
                            report["state"], report["run_id"], report["project"])
            self._remove_if_unchanged(path, entry["version"])
            delivered += 1
        return delivered

    def start(self):
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="report-outbox", daemon=True)
            self._thread.start()

    def stop(self, timeout=5.0):
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            with self._passes:
                self._thread = None
                self._passes.notify_all()
        try:
            self._write_deferred()   # sent after the restart, when they are due
        except OSError as error:
            log.error("reports put off could not be written to %s: %s", self.directory, error)

    def _run(self):
        attempt = 0
        failing = False
        while not self._stopping.is_set():
            self._wake.clear()
            with self._passes:
                self._passes_begun += 1
            try:
                try:
                    self.deliver_pending()
                finally:
                    with self._passes:
                        self._passes_ended = self._passes_begun
                        self._passes.notify_all()
            except MasterUnavailable as error:
                if not failing:
                    log.warning("cannot deliver reports to the master (%s); trying again with backoff", error)
                    failing = True
                delay = NOT_ENROLLED_WAIT if self.credentials() is None else backoff_delay(
                    attempt, self.retry_max, self.rng)
                attempt += 1
                self._wake.wait(delay)
                continue
            except Exception:
                log.exception("the report outbox hit an unexpected error; trying again")
                self._wake.wait(backoff_delay(attempt, self.retry_max, self.rng))
                attempt += 1
                continue
            if failing:
                log.info("reports reach the master again")
                failing = False
            attempt = 0
            self._wake.wait(min(self._next_due or IDLE_RESCAN, IDLE_RESCAN))

    def _entries(self):
        """(path, entry) of every queued report, oldest first; unreadable files are set aside."""
        entries = []
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        for name in names:
            if not _FILE_RE.match(name):
                continue
            path = os.path.join(self.directory, name)
            entry = self._read(path)
            if entry is not None:
                entries.append((path, entry))
        entries.sort(key=lambda pair: (pair[1]["sequence"], pair[0]))
        return entries

    def _read(self, path):
        try:
            entry = read_json(path)
        except (OSError, ValueError):
            entry = None
            if os.path.exists(path):
                log.error("report file %s is unreadable; moved it aside to %s.bad", path, path)
                with contextlib.suppress(OSError):
                    os.replace(path, f"{path}.bad")
        if entry is not None and not (isinstance(entry, dict) and isinstance(entry.get("report"), dict)
                                      and isinstance(entry.get("sequence"), int)):
            log.error("report file %s is not a report; moved it aside to %s.bad", path, path)
            with contextlib.suppress(OSError):
                os.replace(path, f"{path}.bad")
            return None
        return entry

    def _remove_if_unchanged(self, path, version):
        # A newer report for the same run may have replaced the one just sent: keep that one.
        with self._lock:
            entry = self._read(path)
            if entry is not None and entry.get("version") == version:
                os.unlink(path)

    def _next_sequence(self):
        self._sequence = max(self._sequence + 1, time.time_ns())
        return self._sequence

    def _path(self, run_id, project):
        return os.path.join(self.directory, f"{int(run_id)}-{project}.json")
