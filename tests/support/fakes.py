"""Fakes for the master's seams: an rsync runner that never runs rsync."""

import os
import threading

from common.rsync import RsyncStats, result_from_exit


class FakeRsyncRunner:
    """Records every job and answers with a scripted result.

    ``exit_codes`` is consumed one per call (the last one repeats). With
    ``hold=True`` each call blocks until ``release()`` (or its cancel event),
    so tests can look at a run while it is syncing.
    """

    def __init__(self, exit_codes=(0,), total_size=1234, hold=False):
        self.exit_codes = list(exit_codes)
        self.total_size = total_size
        self.jobs = []
        self.hold = hold
        self.started = threading.Semaphore(0)
        self._release = threading.Event()
        self._lock = threading.Lock()
        self.running = 0
        self.max_running = 0

    def release(self):
        self._release.set()

    def wait_started(self, timeout=5):
        return self.started.acquire(timeout=timeout)

    def run(self, job, log_path, on_spawn=None, cancel=None, on_progress=None):
        with self._lock:
            self.jobs.append(job)
            code = self.exit_codes.pop(0) if len(self.exit_codes) > 1 else self.exit_codes[0]
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            os.makedirs(os.path.dirname(log_path), exist_ok=True)
            with open(log_path, "a") as log:
                log.write(f"fake rsync {job.source} -> {job.destination}\n")
            if on_spawn:
                on_spawn(os.getpid())
            if on_progress:
                # Like the real runner, progress arrives from another thread than the caller's.
                reporter = threading.Thread(target=on_progress, args=(
                    {"bytes": 50, "percent": 50, "rate": "1.00kB/s", "eta": "0:00:01"},))
                reporter.start()
                reporter.join()
            self.started.release()
            if self.hold:
                while not self._release.wait(0.02):
                    if cancel is not None and cancel.is_set():
                        return result_from_exit(-15, "", cancelled=True)
            result = result_from_exit(code, "")
            result.stats = RsyncStats(files_total=3, files_transferred=2, total_size=self.total_size,
                                      bytes_received=100, bytes_sent=10, files_created=2, files_deleted=0)
            return result
        finally:
            with self._lock:
                self.running -= 1



class FakeSlaveClient:
    """Records orders instead of sending them; ``outcomes`` maps a slave name to the state it gets."""

    def __init__(self):
        self.orders = []          # (slave name, order dict)
        self.cancels = []         # (slave name, run id, project)
        self.outcomes = {}        # name -> "dispatched" | "unreachable" | "failed"
        self.while_answering = None   # called with the orders once the slaves answered, before they return

    def send_orders(self, orders):
        from master.slave_client import OrderOutcome
        results = []
        for target, order in orders:
            self.orders.append((target.name, dict(order)))
            state = self.outcomes.get(target.name, "dispatched")
            error = None if state == "dispatched" else f"{target.name} is {state}"
            results.append(OrderOutcome(target.name, state == "dispatched", state, error))
        if self.while_answering is not None:
            self.while_answering([order for _, order in orders])
        return results

    def send_cancels(self, cancels):
        from master.slave_client import OrderOutcome
        self.cancels.extend((target.name, run_id, project) for target, run_id, project in cancels)
        return [OrderOutcome(target.name, True, "cancelled") for target, _, _ in cancels]


class FakeMasterClient:
    """The master as a slave sees it: takes every report and heartbeat; never used to register."""

    def __init__(self):
        self.reports = []

    def report(self, credentials, body):
        self.reports.append(body)
        return "acknowledged"

    def heartbeat(self, credentials, body):
        return {"status": "ok"}
