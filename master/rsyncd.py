"""The master's rsync daemon: its configuration rendered from the database, and its supervision.

One read-only module per project, pointing at its snapshots
(DATA_DIR/.snapshots/<project>, see master/snapshots.py: an order names the
run's snapshot inside the module), open only to enrolled, enabled slaves (``auth users``) whose passwords sit in a 0600
secrets file. rsync re-reads both files on every connection, so a change is
live as soon as the files are rewritten: no restart needed.
"""

import ipaddress
import logging
import os
import signal
import tempfile
import threading
import time

import sqlalchemy as sa
from flask import current_app

from common import rsync
from common.validation import RESERVED_PROJECT_NAMES
from master import snapshots
from master.db import db
from master.models import Project, Slave
from master.paths import state_dir

log = logging.getLogger(__name__)

# A user that has no secret: a module listing it alone is open to nobody.
NOBODY = "mirrorsync-nobody"
HEADER = "# Written by mirror-sync from its database; edits here are overwritten.\n"


def config_paths(data_dir):
    root = state_dir(data_dir)
    return os.path.join(root, "rsyncd.conf"), os.path.join(root, "rsyncd.secrets")


def daemon_identity():
    """(uid, gid) a daemon started as root should switch to, or None when we are not root.

    Only root can switch: for anyone else rsync refuses a ``uid``/``gid`` line
    ("setgroups failed"), and the daemon already runs as the user that wrote
    the trees, which is what it should serve them as.
    """
    if os.geteuid() != 0:
        return None
    return os.geteuid(), os.getegid()


def render(projects, slaves, data_dir, secrets_path, log_path, identity, max_connections=100):
    """Return (rsyncd.conf text, secrets file text).

    Each module serves at most ``max_connections`` pulls at once (0: no limit),
    counted in a lock file beside the log. A project whose name the daemon
    reads as something else (``global``) gets no module.

    With ``identity`` (uid, gid) the daemon, started as root, reads trees as
    the user that wrote them and runs chrooted; without it there are no
    ``uid``/``gid`` lines and no chroot, which only root can use.
    """
    users = ", ".join(slave.rsync_user for slave in slaves) or NOBODY
    lines = [HEADER]
    if identity is not None:
        lines += [f"uid = {identity[0]}", f"gid = {identity[1]}"]
    lines += [
        f"use chroot = {'yes' if identity is not None else 'no'}",
        "numeric ids = yes",
        "read only = yes",
        "list = no",
        "reverse lookup = no",
        # Small writes go at once (see common.rsync.DAEMON_OPTIONS, the slaves' side of it).
        "socket options = TCP_NODELAY",
        "timeout = 600",
        "strict modes = yes",
        # Slaves may not make the daemon follow links out of a module.
        "refuse options = copy-links copy-unsafe-links copy-dirlinks keep-dirlinks",
        f"secrets file = {secrets_path}",
        f"log file = {log_path}",
        f"max connections = {int(max_connections)}",
        f"lock file = {os.path.join(os.path.dirname(log_path), 'rsyncd.lock')}",
        "",
    ]
    for project in projects:
        if project.name.lower() in RESERVED_PROJECT_NAMES:
            log.warning("project %s gets no rsync module: the daemon reserves that name", project.name)
            continue
        lines += [
            f"[{project.name}]",
            f"    path = {snapshots.project_snapshots(data_dir, project.name)}",
            f"    comment = mirror-sync project {project.name}",
            f"    auth users = {users}",
            "",
        ]
    secrets = "".join(f"{slave.rsync_user}:{slave.rsync_password}\n" for slave in slaves)
    return "\n".join(lines), secrets


def _write_if_changed(path, text, mode):
    try:
        with open(path) as current:
            if current.read() == text:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def write_config(config_path=None, secrets_path=None):
    """Render from the database and write both files when they changed; returns True if they did."""
    data_dir = current_app.config["DATA_DIR"]
    default_config, default_secrets = config_paths(data_dir)
    config_path = config_path or default_config
    secrets_path = secrets_path or default_secrets
    # The columns it needs, not objects: every fan-out renders it, and 1,000 projects loaded as
    # objects took 30-130 ms, the columns 2-4 ms.
    projects = db.session.execute(sa.select(Project.name).order_by(Project.name)).all()
    slaves = db.session.execute(sa.select(Slave.rsync_user, Slave.rsync_password)
                                .where(Slave.enabled.is_(True)).order_by(Slave.name)).all()
    text, secrets = render(projects, slaves, data_dir, secrets_path,
                           os.path.join(state_dir(data_dir), "rsyncd.log"), daemon_identity(),
                           max_connections=current_app.config["RSYNCD_MAX_CONNECTIONS"])
    # Secrets first, so the config never names a secrets file that lacks a new slave.
    changed = _write_if_changed(secrets_path, secrets, 0o600)
    changed = _write_if_changed(config_path, text, 0o644) or changed
    if changed:
        log.info("rsync daemon configuration rewritten (%d modules, %d slaves)", len(projects), len(slaves))
    return changed


def bind_address(config):
    if config["RSYNCD_BIND"]:
        return config["RSYNCD_BIND"]
    try:
        ipaddress.ip_address(config["RSYNCD_ADDRESS"])
    except ValueError:
        return None  # a host name: listen on every interface
    return config["RSYNCD_ADDRESS"]


class RsyncDaemonManager:
    """Keeps ``rsync --daemon`` running as a child of ``python -m master``, restarting it if it dies."""

    def __init__(self, app):
        self.app = app
        self.process = None
        self._stop = threading.Event()
        self._thread = None
        self._log = None

    def _pid_path(self):
        return os.path.join(state_dir(self.app.config["DATA_DIR"]), "rsyncd.pid")

    def _end_leftover(self):
        """A master killed with SIGKILL leaves its daemon behind, holding the port: end it.

        Only a process that is an rsync daemon on this DATA_DIR's config is touched.
        """
        config_path, _ = config_paths(self.app.config["DATA_DIR"])
        try:
            with open(self._pid_path()) as pid_file:
                pid = int(pid_file.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except (OSError, ValueError):
            return
        if b"--daemon" not in argv or f"--config={config_path}".encode() not in argv:
            return
        log.warning("ending the rsync daemon (pid %s) a previous master left running", pid)
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def start(self):
        with self.app.app_context():
            write_config()
        self._end_leftover()
        self._spawn()
        self._thread = threading.Thread(target=self._watch, name="rsyncd", daemon=True)
        self._thread.start()

    def _spawn(self):
        config = self.app.config
        config_path, _ = config_paths(config["DATA_DIR"])
        if self._log is None:
            self._log = open(os.path.join(state_dir(config["DATA_DIR"]), "rsyncd.out"), "ab")
        self.process = rsync.start_daemon(config_path, config["RSYNCD_PORT"], bind_address(config),
                                          config["RSYNC_BINARY"], log_file=self._log)
        with open(self._pid_path(), "w") as pid_file:
            pid_file.write(str(self.process.pid))
        log.info("rsync daemon started on port %s (pid %s)", config["RSYNCD_PORT"], self.process.pid)

    def _watch(self):
        delay = 1.0
        while not self._stop.wait(delay):
            if self.process.poll() is None:
                delay = 1.0
                continue
            log.warning("rsync daemon exited with %s%s; restarting it", self.process.returncode,
                        _why_it_ended(os.path.join(state_dir(self.app.config["DATA_DIR"]), "rsyncd.log"),
                                      self.process.pid))
            try:
                self._spawn()
            except OSError as error:
                log.error("rsync daemon could not be restarted: %s", error)
            delay = min(delay * 2, 30.0)

    def stop(self):
        self._stop.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except Exception:
                self.process.kill()
                self.process.wait()
        if self._thread is not None:
            self._thread.join(5)
        if self._log is not None:
            self._log.close()


def _why_it_ended(log_path, pid, tail=8192):
    """" (<the daemon's first error>)" from the end of its log file, such as "bind() failed: Address
    already in use", or "" when it wrote none."""
    try:
        with open(log_path, "rb") as log_file:
            log_file.seek(max(0, os.path.getsize(log_path) - tail))
            lines = log_file.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    marker = f"[{pid}] "
    for line in lines:
        text = line.partition(marker)[2]
        if text and ("failed" in text or "error" in text):
            return f" ({text.strip()})"
    return ""
