"""The slave: takes signed orders from the master, pulls trees into PUBLIC_DIR, reports back.

The app is only ever built by ``create_app(test_config=None)``. Under gunicorn
each worker builds its own; they share STATE_DIR, and exactly one of them at a
time runs pulls, delivers reports and sends heartbeats (see slave/syncs.py).
"""

import atexit
import logging
import os
import socket
import threading

from common.dependencies import require_installed

require_installed()

from flask import Flask
from marshmallow import ValidationError

from common import texts, traces
from common.clock import SystemClock
from common.config import load_settings, tls_verify
from common.errors import ConfigError
from common.headers import install_security_headers
from common.rsync import RsyncRunner, check_rsync_version
from common.signing import SqliteNonceStore
from common.validation import validate_slug
from common.wire import validate_http_url
from slave.credentials import CredentialStore, ensure_private_dir
from slave.heartbeat import Heartbeat, enroll
from slave.master_client import EnrollmentRefused, MasterClient
from slave.outbox import Outbox
from slave.status import StatusBoard
from slave.watch import TreeWatch
from slave.syncs import SyncRecords, SyncWorker

log = logging.getLogger(__name__)

# How often a process checks whether it should take over pulls (the one running them
# stopped), and the one running them looks for orders other processes accepted.
DUTY_INTERVAL = 0.5


def configure_logging(level):
    texts.configure_logging(level)


class SlaveServices:
    """Everything behind the slave's API, wired once per app."""

    def __init__(self, settings, clock, runner, client):
        state_dir = settings["STATE_DIR"]
        self.settings = settings
        self.client = client
        self.credentials = CredentialStore(state_dir)
        self.nonces = SqliteNonceStore(os.path.join(state_dir, "nonces.db"))
        self.outbox = Outbox(os.path.join(state_dir, "outbox"), client, self.credentials.load,
                             settings["REPORT_RETRY_MAX"])
        self.worker = SyncWorker(
            state_dir=state_dir, public_dir=settings["PUBLIC_DIR"], runner=runner,
            records=SyncRecords(os.path.join(state_dir, "syncs")), outbox=self.outbox,
            credentials=self.credentials.load, clock=clock,
            max_concurrent=settings["MAX_CONCURRENT_SYNCS"], log_retention=settings["LOG_RETENTION"],
            site=trace_site(settings), verify_interval=settings["VERIFY_INTERVAL"],
            progress_interval=settings["PROGRESS_INTERVAL"],
            watch=TreeWatch(enabled=settings["WATCH_TREES"], repair_delay=settings["REPAIR_DELAY"]),
            repair_delay=settings["REPAIR_DELAY"])
        self.status_board = StatusBoard(self.worker.records, settings["PUBLIC_DIR"])
        self.heartbeat = Heartbeat(client, self.credentials.load, settings["SLAVE_URL"],
                                   settings["HEARTBEAT_INTERVAL"], self.worker.syncing_projects,
                                   on_forgotten=self.enroll_again, last_edit=self.worker.last_edit)
        self.enrollment_error = None
        self._stopping = threading.Event()
        self._thread = None
        self._leading = False

    def enroll(self, stop=None):
        """Register with the master until it works; see slave.heartbeat.enroll."""
        return enroll(self.credentials, self.client, self.settings["SLAVE_NAME"], self.settings["SLAVE_URL"],
                      self.settings["MASTER_URL"], stop or self._stopping)

    def enroll_again(self, error):
        """The master no longer knows this slave: enroll again with the join token, or say what to do.

        Returns whether this slave holds a new identity. Logs one line either way.
        """
        old = self.credentials.load()
        master_url, name = self.settings["MASTER_URL"], self.settings["SLAVE_NAME"]
        known_as = old.name if old else name
        if not self.settings["JOIN_TOKEN"]:
            log.error("the master at %s no longer knows this slave as %r (was it deleted there?) and there is "
                      "no JOIN_TOKEN to enroll again: set MIRRORSYNC_JOIN_TOKEN to the master's join token and "
                      "restart this slave", master_url, known_as)
            return False
        log.warning("the master at %s no longer knows this slave as %r (was it deleted there?); enrolling "
                    "again as %r with the join token", master_url, known_as, name)
        try:
            if old is not None:
                self.credentials.forget(old)
            return enroll(self.credentials, self.client, name, self.settings["SLAVE_URL"], master_url,
                          self._stopping, announce=False) is not None
        except EnrollmentRefused as error:
            log.error("this slave cannot enroll again and takes no orders until it can: %s", error)
        except (ConfigError, OSError) as error:
            log.error("this slave cannot keep its new identity: %s", error)
        return False

    def start_background(self):
        """Enroll if needed, then (in the process that runs pulls) deliver reports and send heartbeats."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._duties, name="slave-duties", daemon=True)
            self._thread.start()

    def stop(self, timeout=15.0):
        """Stop the background work; running pulls end as failed, "interrupted: the slave was stopped"."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.worker.stop(timeout)
        self.outbox.stop()
        self.heartbeat.stop()

    def _duties(self):
        try:
            if self.enroll() is None:
                return
        except EnrollmentRefused as error:
            self.enrollment_error = error
            log.error("this slave cannot enroll and will not take orders: %s", error)
            return
        except (ConfigError, OSError) as error:
            log.error("this slave cannot keep its identity: %s", error)
            return
        while not self._stopping.is_set():
            try:
                if self.worker.claim():
                    if not self._leading:
                        self._leading = True
                        self.outbox.start()
                        self.heartbeat.start()
                    self.worker.take_queued()
                    self.worker.repair_edited()
            except Exception:
                log.exception("background duties hit an unexpected error")
            self._stopping.wait(DUTY_INTERVAL)


def trace_site(settings):
    """This slave as its Debian trace files name it."""
    return traces.Site(name=settings["PUBLIC_NAME"], host=socket.getfqdn(), creator=traces.CREATOR,
                       maintainer=settings["TRACE_MAINTAINER"], sponsor=settings["TRACE_SPONSOR"],
                       country=settings["TRACE_COUNTRY"], location=settings["TRACE_LOCATION"],
                       throughput=settings["TRACE_THROUGHPUT"])


def _check_slave_settings(settings):
    """Raises ConfigError naming the first setting the master would refuse."""
    for name, validate in (("SLAVE_NAME", validate_slug), ("SLAVE_URL", validate_http_url)):
        try:
            validate(settings[name])
        except ValidationError as error:
            raise ConfigError(f"{name} {settings[name]!r} is not valid: {' '.join(error.messages)}") from None
    for name in ("STATE_DIR", "PUBLIC_DIR"):
        try:
            if name == "STATE_DIR":
                ensure_private_dir(settings[name])
            else:
                os.makedirs(settings[name], exist_ok=True)
        except OSError as error:
            raise ConfigError(f"{name}: cannot create {settings[name]}: {error.strerror}") from None
        if not os.access(settings[name], os.W_OK | os.X_OK):
            raise ConfigError(f"{name}: {settings[name]} is not writable by this user")


def create_app(test_config=None):
    """Build the slave app; raises ConfigError naming a bad setting.

    ``test_config`` holds settings, plus the seams CLOCK, RSYNC_RUNNER and
    MASTER_CLIENT, and START_BACKGROUND (False: no enrollment, heartbeat or
    report delivery threads). Run gunicorn without --preload, so that each
    worker builds its own app.
    """
    test_config = dict(test_config or {})
    clock = test_config.pop("CLOCK", None) or SystemClock()
    runner = test_config.pop("RSYNC_RUNNER", None)
    client = test_config.pop("MASTER_CLIENT", None)
    start_background = test_config.pop("START_BACKGROUND", True)
    settings = load_settings("slave", test_config)
    if runner is None:
        check_rsync_version(settings["RSYNC_BINARY"])
    configure_logging(settings["LOG_LEVEL"])
    _check_slave_settings(settings)

    services = SlaveServices(
        settings, clock,
        runner or RsyncRunner(binary=settings["RSYNC_BINARY"]),
        client or MasterClient(settings["MASTER_URL"], settings["JOIN_TOKEN"], verify=tls_verify(settings)))
    if services.credentials.load() is None and not settings["JOIN_TOKEN"]:
        raise ConfigError("JOIN_TOKEN must be set: this slave is not enrolled yet "
                          f"(no {services.credentials.path})")

    app = Flask(__name__)
    app.config.update(settings)
    app.extensions["mirrorsync_slave"] = services
    install_security_headers(app)
    from slave.api import register_api
    register_api(app)
    if settings["STATUS_PAGE"]:
        from slave.pages import blp as pages
        app.register_blueprint(pages)

    services.worker.claim()
    if start_background:
        services.start_background()
        atexit.register(services.stop)
    return app
