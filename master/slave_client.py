"""The one place the master calls slaves: signed orders and cancels, sent in parallel through a bounded pool."""

import concurrent.futures
import dataclasses
import logging
import threading

import requests
import requests.adapters

from common import answers
from common.signing import HmacAuth
from common.texts import printable

log = logging.getLogger(__name__)
# Slaves each dispatch thread keeps a connection to (MAX_SLAVES is 256 by default).
KEPT_HOSTS = 256


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
    state: str            # dispatched (cancelled for a cancel), unreachable or failed
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
            # One kept connection per slave: requests' default pools only 10 hosts per session, and a
            # fan-out hands each thread any of the slaves.
            adapter = requests.adapters.HTTPAdapter(pool_connections=KEPT_HOSTS, pool_maxsize=1)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        return session

    def send_order(self, target, order):
        """POST one signed order; never raises: whatever the slave answers ends as an outcome."""
        try:
            return self._send_order(target, order)
        except Exception as error:  # a hostile answer ends this slave's part, never the run
            log.exception("order to slave %s hit an unexpected error", target.name)
            return OrderOutcome(target.name, False, "failed",
                                f"the order could not be sent ({type(error).__name__})")

    def _send_order(self, target, order):
        url = f"{target.url.rstrip('/')}/api/v1/syncs"
        try:
            answer = answers.call(self._session(), "POST", url, (self.timeout, self.timeout), json=order,
                                  auth=HmacAuth(target.name, target.signing_key), verify=self.verify)
        except requests.RequestException as error:
            reason = type(error).__name__
            return OrderOutcome(target.name, False, "unreachable",
                                f"slave unreachable at {printable(target.url, 200)}: {reason}")
        except answers.MalformedAnswer as error:
            return OrderOutcome(target.name, False, "failed", f"slave's answer refused: {error}")
        if answer.status == 202:
            return OrderOutcome(target.name, True, "dispatched")
        if answer.is_redirect:
            return OrderOutcome(target.name, False, "failed",
                                f"slave answered a redirect (HTTP {answer.status}); orders never follow one")
        message = answer.message() or "no explanation"
        return OrderOutcome(target.name, False, "failed",
                            f"slave refused the order (HTTP {answer.status}): {message}")

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

    def send_cancel(self, target, run_id, project):
        """POST one signed cancel of ``project``'s run ``run_id``; never raises."""
        try:
            return self._send_cancel(target, run_id, project)
        except Exception as error:  # a hostile answer ends this slave's part, never the cancel
            log.exception("cancel to slave %s hit an unexpected error", target.name)
            return OrderOutcome(target.name, False, "failed", f"the cancel could not be sent ({type(error).__name__})")

    def _send_cancel(self, target, run_id, project):
        url = f"{target.url.rstrip('/')}/api/v1/syncs/{int(run_id)}/cancel"
        try:
            answer = answers.call(self._session(), "POST", url, (self.timeout, self.timeout),
                                  json={"project": project}, auth=HmacAuth(target.name, target.signing_key),
                                  verify=self.verify)
        except requests.RequestException as error:
            return OrderOutcome(target.name, False, "unreachable",
                                f"slave unreachable at {printable(target.url, 200)}: {type(error).__name__}")
        except answers.MalformedAnswer as error:
            return OrderOutcome(target.name, False, "failed", f"slave's answer refused: {error}")
        if answer.status in (202, 404):  # 404: it never got the order, so there is nothing to stop
            return OrderOutcome(target.name, True, "cancelled")
        return OrderOutcome(target.name, False, "failed", f"slave refused the cancel (HTTP {answer.status}): "
                                                          f"{answer.message() or 'no explanation'}")

    def send_cancels(self, cancels):
        """Send [(target, run_id, project), ...] in parallel; returns outcomes."""
        if not cancels:
            return []
        return list(self._executor().map(lambda triple: self.send_cancel(*triple), cancels))

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
