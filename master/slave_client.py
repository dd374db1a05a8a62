"""The one place the master calls slaves: signed orders, sent in parallel through a bounded pool."""

import concurrent.futures
import dataclasses
import logging
import threading

import requests

from common.signing import HmacAuth

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class OrderTarget:
    """What is needed to reach one slave, detached from the database session."""
    name: str
    url: str
    signing_key: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class OrderOutcome:
    name: str
    accepted: bool
    state: str            # dispatched, unreachable or failed
    error: str | None = None


class SlaveClient:
    """One pool of dispatch threads for the life of the process, each keeping its HTTP
    session (and so its keep-alive connections to slaves) from one fan-out to the next."""

    def __init__(self, workers=16, timeout=5.0, verify=True):
        self.workers = workers
        self.timeout = timeout
        self.verify = verify
        self._local = threading.local()
        self._pool = None
        self._pool_lock = threading.Lock()

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def send_order(self, target, order):
        """POST one signed order; never raises."""
        try:
            response = self._session().post(
                f"{target.url.rstrip('/')}/api/v1/syncs", json=order, auth=HmacAuth(target.name, target.signing_key),
                timeout=(self.timeout, self.timeout), verify=self.verify)
        except requests.RequestException as error:
            reason = type(error).__name__
            return OrderOutcome(target.name, False, "unreachable", f"slave unreachable at {target.url}: {reason}")
        if response.status_code == 202:
            return OrderOutcome(target.name, True, "dispatched")
        try:
            message = response.json().get("message") or response.text[:200]
        except ValueError:
            message = response.text[:200]
        return OrderOutcome(target.name, False, "failed",
                            f"slave refused the order (HTTP {response.status_code}): {message}")

    def _executor(self):
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers,
                                                                   thread_name_prefix="dispatch")
            return self._pool

    def warm_up(self):
        """Start every dispatch thread now, so none is started while orders wait (say, during a pull)."""
        pool = self._executor()
        ready = threading.Barrier(self.workers + 1)
        # Each thread waits at the barrier, so the pool has to start all of them.
        for _ in range(self.workers):
            pool.submit(_wait_at, ready)
        try:
            ready.wait(timeout=5)
        except threading.BrokenBarrierError:
            pass

    def send_orders(self, orders):
        """Send [(target, order), ...] in parallel, at most ``workers`` at a time; returns outcomes."""
        if not orders:
            return []
        return list(self._executor().map(lambda pair: self.send_order(*pair), orders))

    def close(self):
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def _wait_at(barrier):
    try:
        barrier.wait(timeout=5)
    except threading.BrokenBarrierError:
        pass
