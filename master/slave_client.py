"""The one place the master calls slaves: signed orders and cancels, sent in parallel through a bounded pool."""

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
    state: str            # dispatched (cancelled for a cancel), unreachable or failed
    error: str | None = None


class SlaveClient:
    def __init__(self, workers=16, timeout=5.0, verify=True):
        self.workers = workers
        self.timeout = timeout
        self.verify = verify
        self._local = threading.local()

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

    def send_orders(self, orders):
        """Send [(target, order), ...] in parallel, at most ``workers`` at a time; returns outcomes."""
        return self._in_parallel(lambda pair: self.send_order(*pair), orders)

    def send_cancel(self, target, run_id, project):
        """POST one signed cancel of ``project``'s run ``run_id``; never raises."""
        try:
            response = self._session().post(
                f"{target.url.rstrip('/')}/api/v1/syncs/{int(run_id)}/cancel", json={"project": project},
                auth=HmacAuth(target.name, target.signing_key), timeout=(self.timeout, self.timeout),
                verify=self.verify)
        except requests.RequestException as error:
            return OrderOutcome(target.name, False, "unreachable",
                                f"slave unreachable at {target.url}: {type(error).__name__}")
        if response.status_code in (202, 404):  # 404: it never got the order, so there is nothing to stop
            return OrderOutcome(target.name, True, "cancelled")
        return OrderOutcome(target.name, False, "failed",
                            f"slave refused the cancel (HTTP {response.status_code}): {response.text[:200]}")

    def send_cancels(self, cancels):
        """Send [(target, run_id, project), ...] in parallel; returns outcomes."""
        return self._in_parallel(lambda triple: self.send_cancel(*triple), cancels)

    def _in_parallel(self, call, items):
        if not items:
            return []
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.workers, len(items)),
                                                   thread_name_prefix="dispatch") as pool:
            return list(pool.map(call, items))
