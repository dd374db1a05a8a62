"""The one place the master calls slaves: signed orders, sent in parallel through a bounded pool."""

import concurrent.futures
import dataclasses
import logging
import threading

import requests

from common import answers
from common.signing import HmacAuth
from common.texts import printable

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

    def send_orders(self, orders):
        """Send [(target, order), ...] in parallel, at most ``workers`` at a time; returns outcomes."""
        if not orders:
            return []
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(self.workers, len(orders)),
                                                   thread_name_prefix="dispatch") as pool:
            return list(pool.map(lambda pair: self.send_order(*pair), orders))
