"""The executor: claims queued runs and pulls them, at most MAX_CONCURRENT_SYNCS at a time."""

import logging
import threading
import time

from common.rsync import end_orphaned_rsync
from master import runids
from master.services import syncs

log = logging.getLogger(__name__)


class Executor:
    """Runs in the scheduler process only; API workers never execute syncs."""

    def __init__(self, app):
        self.app = app
        self.max_concurrent = app.config["MAX_CONCURRENT_SYNCS"]
        self.poll_interval = app.config["POLL_INTERVAL"]
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._workers = {}   # run id -> (thread, cancel event, project id)
        # Runs whose pull is over: their thread sends the orders, which can wait DISPATCH_TIMEOUT on a
        # slave that does not answer, and holds back no pull meanwhile, not even its own project's next
        # one: that pulls into a snapshot of its own, and a slave that gets the two orders the wrong
        # way round keeps the newer tree.
        self._ordering = set()
        self._lock = threading.Lock()
        self._thread = None

    def recover(self):
        with self.app.app_context():
            runids.next_after_disk(self.app.config["DATA_DIR"])
            recovered = syncs.recover_interrupted_runs(end_orphaned_rsync)
        if recovered:
            log.warning("marked runs %s interrupted after a restart and queued fresh runs", recovered)
        return recovered

    def start(self):
        self._thread = threading.Thread(target=self._loop, name="executor", daemon=True)
        self._thread.start()

    def wake(self):
        self._wake.set()

    def running(self):
        with self._lock:
            return sorted(self._workers)

    def _free_slots(self):
        with self._lock:
            for run_id in [r for r, (thread, _, _) in self._workers.items() if not thread.is_alive()]:
                del self._workers[run_id]
                self._ordering.discard(run_id)
            return self.max_concurrent - len(self._workers.keys() - self._ordering)

    def _pulled(self, run_id):
        """``run_id``'s pull is over and its orders go out: its slot is free."""
        with self._lock:
            if run_id in self._workers:
                self._ordering.add(run_id)
        self._wake.set()

    def _loop(self):
        failing = False
        while not self._stopping.is_set():
            try:
                self._stop_cancelled_pulls()
                self._claim_and_start()
            except Exception as error:
                if not failing:  # once per outage: a full disk fails every poll
                    log.exception("executor: claiming queued runs failed; retrying every %g s", self.poll_interval)
                failing = True
            else:
                if failing:
                    log.info("executor: claiming queued runs works again")
                failing = False
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _stop_cancelled_pulls(self):
        """An API worker cancels a run in the database; end the pulls of runs no longer syncing."""
        with self._lock:
            watched = {run_id: worker for run_id, worker in self._workers.items()
                       if not worker[1].is_set() and run_id not in self._ordering}
        if not watched:
            return
        with self.app.app_context():
            gone = syncs.runs_no_longer_syncing(sorted(watched))
        for run_id in gone:
            log.info("run %s was cancelled: ending its pull", run_id)
            watched[run_id][1].set()

    def _claim_and_start(self):
        free = self._free_slots()
        with self._lock:
            # A pull still running, or cancelled and not yet ended, keeps its project busy.
            busy = {project_id for run_id, (_, _, project_id) in self._workers.items()
                    if run_id not in self._ordering}
        with self.app.app_context():
            # Forced runs (mirrorctl projects sync --force) start even with no slot free.
            claimed = syncs.runs_to_execute(max(0, free), busy)
        for run_id, project_id in claimed:
            cancel = threading.Event()
            thread = threading.Thread(target=self._execute, args=(run_id, cancel),
                                      name=f"run-{run_id}", daemon=True)
            with self._lock:
                self._workers[run_id] = (thread, cancel, project_id)
            thread.start()

    def _execute(self, run_id, cancel):
        try:
            with self.app.app_context():
                syncs.start_upstream_sync(run_id, cancel=cancel, stopping=self._stopping,
                                          on_pulled=lambda: self._pulled(run_id))
        except Exception:
            log.exception("run %s: executing failed", run_id)
        finally:
            self._wake.set()  # a slot is free: look for queued work at once

    def stop(self, timeout=30.0):
        """Stop claiming, end running pulls (recorded as interrupted) and wait for them."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            workers = list(self._workers.values())
        for _, cancel, _ in workers:
            cancel.set()
        deadline = time.monotonic() + timeout
        for thread, _, _ in workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
