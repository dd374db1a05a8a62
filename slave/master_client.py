"""The one place the slave calls the master: enrollment, signed heartbeats and signed reports."""

import threading
import time

import requests
from marshmallow import EXCLUDE, ValidationError

from common import answers
from common.answers import MalformedAnswer
from common.enrollment import EnrollmentError, SlaveExchange
from common.signing import HmacAuth
from common.wire import sealed_credentials_schema

# Seconds to connect, then to wait for the answer.
TIMEOUT = (3.0, 10.0)

UNKNOWN_SLAVE = "unknown_slave"  # the master's error code for a name it does not know
ACKNOWLEDGED = "acknowledged"
DROPPED = "dropped"
# Answers to a report that will not change however often it is sent again.
# 403: this slave is disabled; the master ended its parts in flight when it was disabled.
_REPORT_NEVER_ACCEPTED = frozenset({400, 403, 404, 409, 410, 413, 415, 422})


class MasterUnavailable(Exception):
    """The master could not be reached or did not take the call this time; worth another try."""


class SlaveForgotten(MasterUnavailable):
    """The master no longer knows this slave's name (an admin deleted it): only enrolling again helps."""


class EnrollmentRefused(Exception):
    """The master refused to enroll this slave (wrong join token, enrollment closed, name taken)."""


class MasterClient:
    """Calls the master's API over HTTP; safe to share between threads."""

    def __init__(self, master_url, join_token=None, timeout=TIMEOUT, verify=True):
        self.master_url = master_url.rstrip("/")
        self.join_token = join_token
        self.timeout = timeout
        self.verify = verify  # a CA bundle path, or True for the system's CAs
        self._local = threading.local()

    def register(self, name, url):
        """Enroll as ``name`` reachable at ``url``; returns the credentials dict.

        Raises EnrollmentRefused (final) or MasterUnavailable (try again later).
        """
        if not self.join_token:
            raise EnrollmentRefused("JOIN_TOKEN is not set, so this slave cannot enroll with the master")
        # A key exchange bound to the join token: neither it nor any key crosses the network.
        exchange = SlaveExchange(self.join_token, name, url)
        response = self._post("/api/v1/slaves/register", exchange.request(time.time()))
        if response.status == 201:
            try:
                sealed = sealed_credentials_schema.load(response.json_object(), unknown=EXCLUDE)
            except (MalformedAnswer, ValidationError):
                raise MasterUnavailable("the master answered the enrollment with unreadable credentials") from None
            try:
                signing_key, rsync_password = exchange.finish(sealed["public_key"], sealed["sealed_rsync_password"],
                                                              sealed["rsync_user"])
            except EnrollmentError as error:
                raise EnrollmentRefused(f"the master's enrollment answer is not genuine: {error}") from None
            return {"name": sealed["name"], "signing_key": signing_key, "rsync_user": sealed["rsync_user"],
                    "rsync_password": rsync_password}
        message = _message(response)
        if response.status == 403:
            raise EnrollmentRefused(f"the master refused the enrollment (HTTP 403): {message}")
        if response.status == 409:
            raise EnrollmentRefused(f"the master refused the enrollment of {name!r} (HTTP 409): {message}")
        if response.status in (400, 401, 404, 415, 422):
            raise EnrollmentRefused(f"the master refused the enrollment (HTTP {response.status}): {message}")
        raise MasterUnavailable(f"the master answered HTTP {response.status}: {message}")

    def heartbeat(self, credentials, body):
        """Tell the master this slave is alive; returns the master's answer.

        Raises SlaveForgotten, or MasterUnavailable.
        """
        response = self._post(f"/api/v1/slaves/{credentials.name}/heartbeat", body,
                              auth=HmacAuth(credentials.name, credentials.signing_key))
        _raise_if_forgotten(response)
        if response.status != 200:
            raise MasterUnavailable(f"the master answered HTTP {response.status}: {_message(response)}")
        try:
            return response.json_object()
        except MalformedAnswer:
            return {}

    def report(self, credentials, body):
        """Send one report; returns ACKNOWLEDGED, or DROPPED when the master will never take it.

        Raises MasterUnavailable (network, 5xx, a refused signature): send it again later.
        """
        response = self._post(f"/api/v1/slaves/{credentials.name}/reports", body,
                              auth=HmacAuth(credentials.name, credentials.signing_key))
        _raise_if_forgotten(response)
        if response.status == 200:
            return ACKNOWLEDGED
        if response.status in _REPORT_NEVER_ACCEPTED:
            return DROPPED
        raise MasterUnavailable(f"the master answered HTTP {response.status}: {_message(response)}")

    def _post(self, path, body, headers=None, auth=None):
        """The master's answer (never a redirect followed, never more than MAX_ANSWER_BYTES read).

        Raises MasterUnavailable.
        """
        try:
            return answers.call(self._session(), "POST", f"{self.master_url}{path}", self.timeout, json=body,
                                headers=headers, auth=auth, verify=self.verify)
        except requests.RequestException as error:
            raise MasterUnavailable(f"cannot reach the master at {self.master_url}: "
                                    f"{type(error).__name__}") from None
        except MalformedAnswer as error:
            raise MasterUnavailable(f"the master's answer was refused: {error}") from None

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session


def _raise_if_forgotten(answer):
    if answer.status != 401:
        return
    try:
        code = answer.json_object().get("error")
    except MalformedAnswer:
        return
    if code == UNKNOWN_SLAVE:
        raise SlaveForgotten(f"the master answered HTTP 401: {_message(answer)}")


def _message(answer):
    """The master's one-sentence explanation, printable and clipped; never the raw body."""
    if answer.is_redirect:
        return "a redirect, which is never followed"
    return answer.message() or "no explanation"
