"""The one place the slave calls the master: enrollment, signed heartbeats and signed reports."""

import threading

import requests
from marshmallow import EXCLUDE, ValidationError

from common.signing import HmacAuth
from common.wire import credentials_schema

# Seconds to connect, then to wait for the answer.
TIMEOUT = (3.0, 10.0)

UNKNOWN_SLAVE = "unknown_slave"  # the master's error code for a name it does not know
ACKNOWLEDGED = "acknowledged"
DROPPED = "dropped"
# Answers to a report that will not change however often it is sent again.
_REPORT_NEVER_ACCEPTED = frozenset({400, 404, 409, 410, 413, 415, 422})


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
        response = self._post("/api/v1/slaves/register", {"name": name, "url": url},
                              headers={"Authorization": f"Bearer {self.join_token}"})
        if response.status_code == 201:
            try:
                return credentials_schema.load(response.json(), unknown=EXCLUDE)
            except (ValueError, ValidationError):
                raise MasterUnavailable("the master answered the enrollment with unreadable credentials") from None
        message = _message(response)
        if response.status_code == 403:
            raise EnrollmentRefused(f"the master refused the enrollment (HTTP 403): {message}")
        if response.status_code == 409:
            raise EnrollmentRefused(f"the master refused the enrollment of {name!r} (HTTP 409): {message}")
        if response.status_code in (400, 401, 404, 415, 422):
            raise EnrollmentRefused(f"the master refused the enrollment (HTTP {response.status_code}): {message}")
        raise MasterUnavailable(f"the master answered HTTP {response.status_code}: {message}")

    def heartbeat(self, credentials, body):
        """Tell the master this slave is alive; returns the master's answer.

        Raises SlaveForgotten, or MasterUnavailable.
        """
        response = self._post(f"/api/v1/slaves/{credentials.name}/heartbeat", body,
                              auth=HmacAuth(credentials.name, credentials.signing_key))
        _raise_if_forgotten(response)
        if response.status_code != 200:
            raise MasterUnavailable(f"the master answered HTTP {response.status_code}: {_message(response)}")
        try:
            answer = response.json()
        except ValueError:
            return {}
        return answer if isinstance(answer, dict) else {}

    def report(self, credentials, body):
        """Send one report; returns ACKNOWLEDGED, or DROPPED when the master will never take it.

        Raises MasterUnavailable (network, 5xx, a refused signature): send it again later.
        """
        response = self._post(f"/api/v1/slaves/{credentials.name}/reports", body,
                              auth=HmacAuth(credentials.name, credentials.signing_key))
        _raise_if_forgotten(response)
        if response.status_code == 200:
            return ACKNOWLEDGED
        if response.status_code in _REPORT_NEVER_ACCEPTED:
            return DROPPED
        raise MasterUnavailable(f"the master answered HTTP {response.status_code}: {_message(response)}")

    def _post(self, path, body, headers=None, auth=None):
        try:
            return self._session().post(f"{self.master_url}{path}", json=body, headers=headers, auth=auth,
                                        timeout=self.timeout, verify=self.verify)
        except requests.RequestException as error:
            raise MasterUnavailable(f"cannot reach the master at {self.master_url}: "
                                    f"{type(error).__name__}") from None

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session


def _raise_if_forgotten(response):
    if response.status_code != 401:
        return
    try:
        code = response.json().get("error")
    except (ValueError, AttributeError):
        return
    if code == UNKNOWN_SLAVE:
        raise SlaveForgotten(f"the master answered HTTP 401: {_message(response)}")


def _message(response):
    """The master's one-sentence explanation, or the start of whatever it sent."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or response.text[:200] or response.reason or "no explanation").strip()
