"""Enrollment with the master, then a heartbeat every HEARTBEAT_INTERVAL saying what is being pulled."""

import logging
import random
import threading

from slave.master_client import MasterUnavailable, SlaveForgotten

log = logging.getLogger(__name__)

ENROLL_BACKOFF_START = 0.5
ENROLL_BACKOFF_MAX = 10.0
# A slave the master forgot, that cannot enroll again, knocks this seldom: nothing changes until a restart.
FORGOTTEN_INTERVAL = 60.0


def enroll(store, client, name, url, master_url, stop, rng=random.random, announce=True):
    """Register with the master until it works; returns the identity, or None once ``stop`` is set.

    An identity already on disk is returned without calling the master.
    Raises EnrollmentRefused (wrong join token, enrollment closed, name taken).
    """
    attempt = 0
    failing = False
    registered = []

    def register():
        # Runs only in the process that holds the enrollment lock and finds no credentials.
        answer = client.register(name, url)
        registered.append(True)
        return answer

    while not stop.is_set():
        try:
            credentials = store.enroll(register, master_url)
        except MasterUnavailable as error:
            if not failing:
                log.warning("cannot enroll with the master yet (%s); trying again", error)
                failing = True
            # Full jitter, so a fleet of slaves restarted together does not knock in step.
            stop.wait(rng() * min(ENROLL_BACKOFF_MAX, ENROLL_BACKOFF_START * 2 ** min(attempt, 16)))
            attempt += 1
            continue
        if registered and announce:
            log.info("enrolled with the master at %s as %s", master_url, credentials.name)
        _warn_about_moves(credentials, name, master_url)
        return credentials
    return None


def _warn_about_moves(credentials, name, master_url):
    if credentials.name != name:
        log.warning("this slave is enrolled as %r, not SLAVE_NAME %r; it keeps its enrolled name "
                    "(move STATE_DIR/credentials.json away to enroll again)", credentials.name, name)
    if credentials.master_url != master_url:
        log.warning("this slave was enrolled with the master at %s, now MASTER_URL is %s; "
                    "its identity is only known to the first", credentials.master_url, master_url)


class Heartbeat:
    """Tells the master every ``interval`` seconds that this slave is alive, from one thread."""

    def __init__(self, client, credentials, url, interval, syncing_projects, on_forgotten=None, last_edit=None):
        self.client = client
        # (error) -> whether this slave enrolled again; called once when the master no longer knows it.
        self.on_forgotten = on_forgotten
        self.credentials = credentials             # () -> Credentials | None
        self.url = url
        self.interval = interval
        self.syncing_projects = syncing_projects   # () -> [project]
        self.last_edit = last_edit                 # () -> EditSchema's fields or None
        self._takes_edits = False                  # the master said so: earlier ones refuse the field
        self._stopping = threading.Event()
        self._thread = None
        self._failing = False
        self._disabled = False
        self._forgotten = False

    def beat(self):
        """Send one heartbeat; returns whether the master took it. Failures are logged once per outage."""
        credentials = self.credentials()
        if credentials is None:
            return False
        try:
            body = {"url": self.url, "syncing": self.syncing_projects()}
            edit = self.last_edit() if self._takes_edits and self.last_edit is not None else None
            if edit is not None:
                body["last_edit"] = edit
            answer = self.client.heartbeat(credentials, body)
        except SlaveForgotten as error:
            # Enroll again once per time the master forgets this slave; after a refusal, wait quietly
            # until a heartbeat gets through (what to do was logged).
            if not self._forgotten and self.on_forgotten is not None:
                self._forgotten = not self.on_forgotten(error)
            return False
        except MasterUnavailable as error:
            if not self._failing:
                log.warning("heartbeat to the master failed (%s); still trying every %g s", error, self.interval)
                self._failing = True
            return False
        if self._failing:
            log.info("heartbeats reach the master again")
            self._failing = False
        self._forgotten = False
        disabled = answer.get("enabled") is False
        if disabled and not self._disabled:
            log.warning("the master has disabled this slave: it sends no orders until re-enabled")
        elif self._disabled and not disabled:
            log.info("the master has enabled this slave again")
        self._disabled = disabled
        self._takes_edits = answer.get("takes_edits") is True
        return True

    def start(self):
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
            self._thread.start()

    def stop(self, timeout=5.0):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self):
        while not self._stopping.is_set():
            try:
                self.beat()
            except Exception:
                log.exception("heartbeat hit an unexpected error")
            self._stopping.wait(max(self.interval, FORGOTTEN_INTERVAL) if self._forgotten else self.interval)
