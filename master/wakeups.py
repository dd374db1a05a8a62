"""Waking the executor the moment a run is queued, whichever process queued it.

In one process (``python -m master``) the executor registers its ``wake`` here
and a queued run calls it directly. Across processes (gunicorn API workers
next to ``python -m master.scheduler``) a queued run leaves a nudge: on
PostgreSQL a ``NOTIFY`` on CHANNEL, delivered when the run's transaction
commits; on SQLite one datagram to the Unix socket
DATA_DIR/.mirrorsync/executor.sock, which the scheduler process binds. The
executor still polls every POLL_INTERVAL, so a nudge that is lost (no
scheduler running yet, a full socket buffer) costs at most that wait.
"""

import logging
import os
import socket
import threading

import sqlalchemy as sa

from master.paths import state_dir

log = logging.getLogger(__name__)

CHANNEL = "mirrorsync_queued"
SOCKET_NAME = "executor.sock"
# AF_UNIX paths are limited to 108 bytes; longer ones are reached through /proc/self/fd.
_MAX_SOCKET_PATH = 100


class Wakeups:
    """The seam between whoever queues a run and the executor that pulls it."""

    def __init__(self, data_dir):
        self.state_dir = state_dir(data_dir)
        self._local = []

    def register_local(self, wake):
        """The executor of this process: queued runs call ``wake()`` instead of nudging."""
        self._local.append(wake)

    def unregister_local(self, wake):
        if wake in self._local:
            self._local.remove(wake)

    def before_commit(self, session):
        """Inside the transaction that queues a run: PostgreSQL's NOTIFY goes out on its commit."""
        if not self._local and session.get_bind().dialect.name == "postgresql":
            session.execute(sa.select(sa.func.pg_notify(CHANNEL, "")))

    def after_commit(self, session):
        """Once the run is committed: wake this process's executor, or nudge the scheduler's on SQLite."""
        if self._local:
            for wake in list(self._local):
                wake()
        elif session.get_bind().dialect.name != "postgresql":
            send_nudge(self.state_dir)


def _socket_address(directory):
    """(address, fd to close or None) of the executor's socket in ``directory``."""
    path = os.path.join(directory, SOCKET_NAME)
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path, None
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{SOCKET_NAME}", fd


def send_nudge(directory):
    """One datagram to the scheduler's socket; silent when no scheduler listens."""
    fd = None
    try:
        address, fd = _socket_address(directory)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            sender.sendto(b"q", address)
    except OSError:
        pass  # nobody listening, or its buffer is full: the poll picks the run up
    finally:
        if fd is not None:
            os.close(fd)


class WakeupListener:
    """In the scheduler process: turns nudges from other processes into ``wake()`` calls."""

    def __init__(self, app, wake):
        self.app = app
        self.wake = wake
        self._stop = threading.Event()
        self._thread = None
        self._socket = None
        self._dir_fd = None

    def start(self):
        with self.app.app_context():
            from master.db import db
            dialect = db.engine.dialect.name
        if dialect == "postgresql":
            target = self._listen_postgres
        else:
            self._bind_socket()
            target = self._listen_socket
        self._thread = threading.Thread(target=target, name="wakeups", daemon=True)
        self._thread.start()

    def _bind_socket(self):
        directory = state_dir(self.app.config["DATA_DIR"])
        address, self._dir_fd = _socket_address(directory)
        try:
            os.unlink(address)  # left by a scheduler that died: the scheduler lock says it is ours now
        except FileNotFoundError:
            pass
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(address)
        os.chmod(address, 0o600)
        self._socket.settimeout(0.5)

    def _listen_socket(self):
        while not self._stop.is_set():
            try:
                self._socket.recv(64)
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.exception("wakeups: reading the executor socket failed; polling only")
                return
            self.wake()

    def _listen_postgres(self):
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self._listen_postgres_once()
                backoff = 1.0
            except Exception as error:
                log.warning("wakeups: LISTEN %s failed (%s); polling until it works again", CHANNEL, error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _listen_postgres_once(self):
        from master.db import db
        with self.app.app_context():
            raw = db.engine.raw_connection()
        try:
            connection = raw.driver_connection
            connection.autocommit = True
            connection.execute(f"LISTEN {CHANNEL}")
            self.wake()  # a run queued while no one listened is not lost
            while not self._stop.is_set():
                for _ in connection.notifies(timeout=1.0):
                    self.wake()
        finally:
            raw.invalidate()

    def stop(self):
        self._stop.set()
        if self._socket is not None:
            self._socket.close()
        if self._thread is not None:
            self._thread.join(5)
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
