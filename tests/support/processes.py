"""Start, watch and stop the real processes that integration tests and the demo drive.

Every child runs from an argument list (never a shell) in its own session, so
a Ctrl-C in the terminal reaches only the parent, which then stops the
children in order; its stdout and stderr go to a log file that failures quote.
"""

import collections
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from common.states import FINAL_RUN_STATES
from tests.support import rsyncd

REPO_ROOT = Path(__file__).resolve().parents[2]
FINAL_STATES = frozenset(state.value for state in FINAL_RUN_STATES)
DEFAULT_ADMIN_TOKEN = "test-admin-token"
LOG_TAIL_CHARS = 4000


class ServiceNotReady(RuntimeError):
    """A started process died or did not become ready in time."""


# Ports are handed out below the kernel's range for outgoing connections' own ports
# (net.ipv4.ip_local_port_range), so no connection can take one between the look and the bind, and
# each pytest-xdist worker has a slice of its own, so no two workers hand out the same one.
_LOW_PORT = 10000
_EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
_handed_out = None   # the ports of this process's slice, in the order they are handed out


def _port_slice():
    """This process's ports: its share, by xdist worker, of the ports from _LOW_PORT up to the kernel's
    range for outgoing connections, starting at a random place (other runs on the machine start
    elsewhere). Empty when there is no room below that range."""
    try:
        with open(_EPHEMERAL_RANGE) as numbers:
            first_ephemeral = int(numbers.read().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), index + 1)
    size = (first_ephemeral - _LOW_PORT) // workers
    if size < 100:
        return []
    ports = list(range(_LOW_PORT + index * size, _LOW_PORT + (index + 1) * size))
    start = random.randrange(len(ports))
    return ports[start:] + ports[:start]


def free_port():
    """Return a TCP port on 127.0.0.1 that nothing listens on right now, and that no outgoing
    connection or other test worker will take before the caller binds it (``_port_slice``); from
    the kernel's choice when the machine leaves no room for that."""
    global _handed_out
    if _handed_out is None:
        _handed_out = collections.deque(_port_slice())
    for _ in range(len(_handed_out)):
        port = _handed_out[0]
        _handed_out.rotate(-1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout, interval=0.05, message="condition"):
    """Call ``predicate`` until it returns something truthy and return that.

    Raises TimeoutError naming ``message`` (a string, or a callable giving one
    so it can describe the last state seen) when ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {text}")
        time.sleep(interval)


class ServiceProcess:
    """One child process with its log file; stops itself when used as a context manager."""

    def __init__(self, argv, env, log_dir, name="service", cwd=REPO_ROOT):
        self.argv = [str(arg) for arg in argv]
        self.name = name
        fd, log_path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log", dir=log_dir)
        self.log_path = Path(log_path)
        self.orphans_killed = False
        with os.fdopen(fd, "wb") as log_file:
            self.proc = subprocess.Popen(
                self.argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self):
        return self.proc.pid

    @property
    def returncode(self):
        return self.proc.poll()

    def is_running(self):
        return self.proc.poll() is None

    def log_text(self):
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, chars=LOG_TAIL_CHARS):
        text = self.log_text()
        return text if len(text) <= chars else "..." + text[-chars:]

    def _not_ready(self, what):
        if self.is_running():
            status = "still running"
        else:
            status = f"exited with code {self.proc.returncode}"
        return ServiceNotReady(
            f"{self.name} ({' '.join(self.argv)}) {what}; it {status}. "
            f"Log {self.log_path}:\n{self.log_tail()}"
        )

    def wait_healthy(self, url, timeout=20):
        """Poll ``GET url`` until it answers 200; raises ServiceNotReady."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running():
                raise self._not_ready(f"died before {url} answered")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() >= deadline:
                raise self._not_ready(f"did not answer 200 on {url} within {timeout:g}s")
            time.sleep(0.05)

    def wait_for_log(self, substring, timeout=20):
        """Wait until the log contains ``substring``; raises ServiceNotReady."""
        deadline = time.monotonic() + timeout
        while True:
            if substring in self.log_text():
                return
            if not self.is_running():
                raise self._not_ready(f"died before logging {substring!r}")
            if time.monotonic() >= deadline:
                raise self._not_ready(f"did not log {substring!r} within {timeout:g}s")
            time.sleep(0.05)

    def stop(self, timeout=10):
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; returns the exit code.

        Children the process left behind in its session are killed too, and
        ``orphans_killed`` records that it happened.
        """
        if self.is_running():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_session()
                self.proc.wait()
                return self.proc.returncode
        if self._kill_session():
            self.orphans_killed = True
        return self.proc.returncode

    def kill9(self, whole_session=True):
        """Crash the process with SIGKILL, by default with every child it started.

        Killing the whole session is what a service manager does to a crashed
        unit, and it frees the ports the children held for a restart.
        """
        if whole_session:
            self._kill_session()
        elif self.is_running():
            self.proc.kill()
        self.proc.wait()
        return self.proc.returncode

    def _kill_session(self):
        """SIGKILL every process left in the child's session; True if there were any."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} pid={self.pid} rc={self.returncode}>"


def master_env(data_dir, admin_token=DEFAULT_ADMIN_TOKEN, api_port=None, extra_env=None):
    """The environment for a master-side process, fast timers and a private rsyncd port.

    MIRRORSYNC_* variables of the calling shell are dropped so a developer's
    own configuration never leaks into a test.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("MIRRORSYNC_")}
    env.update(
        PYTHONUNBUFFERED="1",
        MIRRORSYNC_DATA_DIR=str(data_dir),
        MIRRORSYNC_API_HOST="127.0.0.1",
        MIRRORSYNC_API_PORT=str(api_port or free_port()),
        MIRRORSYNC_POLL_INTERVAL="0.1",
        MIRRORSYNC_RECONCILE_INTERVAL="0.5",
        MIRRORSYNC_RSYNCD_PORT=str(free_port()),
    )
    if admin_token is not None:
        env["MIRRORSYNC_ADMIN_TOKEN"] = admin_token
    env.update({key: str(value) for key, value in (extra_env or {}).items()})
    return env


def _log_dir_for(data_dir, log_dir):
    # Logs sit next to DATA_DIR, not inside it, so they never look like a project tree.
    path = Path(log_dir) if log_dir is not None else Path(data_dir).parent
    path.mkdir(parents=True, exist_ok=True)
    return path


class MasterProcess(ServiceProcess):
    """A master-side process (API, gunicorn API or scheduler) over one DATA_DIR."""

    def __init__(self, argv, name, data_dir, admin_token, port, extra_env, log_dir):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.admin_token = admin_token
        self.port = port
        self.url = f"http://127.0.0.1:{port}" if port else None
        self.env = master_env(self.data_dir, admin_token, api_port=port, extra_env=extra_env)
        self.rsyncd_port = int(self.env["MIRRORSYNC_RSYNCD_PORT"])
        self.rsyncd_port_picked = "MIRRORSYNC_RSYNCD_PORT" not in (extra_env or {})
        super().__init__(argv, self.env, _log_dir_for(data_dir, log_dir), name=name)

    def wait_ready(self, timeout):
        """Wait for /healthz, or for the scheduler's start line, then for the rsync daemon of ``python -m
        master`` (the one process that runs it) on a port picked here; stops the process on failure."""
        try:
            if self.url:
                self.wait_healthy(f"{self.url}/healthz", timeout=timeout)
            else:
                self.wait_for_log("scheduler started", timeout=timeout)
            if self.name == "master" and self.rsyncd_port_picked:
                self._wait_rsyncd_bound(min(timeout, 5))
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_rsyncd_bound(self, timeout):
        """Until the rsync daemon greets on its port; ServiceNotReady naming "Address already in use" when
        it could not bind it (another test's server took the port between the look and the bind). A
        daemon that neither greets nor says so within ``timeout`` is left to the test."""
        deadline = time.monotonic() + timeout
        daemon_log = self.data_dir / ".mirrorsync" / "rsyncd.log"
        while time.monotonic() < deadline:
            if rsyncd.greets(self.rsyncd_port):
                return
            started = re.findall(r"rsync daemon started on port \d+ \(pid (\d+)\)", self.log_text())
            try:
                failed = bool(started) and f"[{started[-1]}] bind() failed" in daemon_log.read_text(errors="replace")
            except OSError:
                failed = False
            if failed:
                raise self._not_ready(f"has an rsync daemon that cannot bind port {self.rsyncd_port}: "
                                      "Address already in use")
            time.sleep(0.02)


def start_master(data_dir, port=None, admin_token=DEFAULT_ADMIN_TOKEN, extra_env=None,
                 log_dir=None, timeout=20):
    """Start ``python -m master`` (API + scheduler + rsyncd) and wait for /healthz.

    Raises ServiceNotReady with the log tail when it dies or stays silent.
    """
    return on_a_free_port(port, lambda port: MasterProcess(
        [sys.executable, "-m", "master"], "master", data_dir, admin_token, port, extra_env, log_dir
    ).wait_ready(timeout))


def on_a_free_port(port, start):
    """``start(port)``; with no port given, on a free one, and on another if something took it between
    the look and the bind (an outgoing connection's own port, on a busy machine)."""
    if port is not None:
        return start(port)
    for attempt in range(3):
        try:
            return start(free_port())
        except ServiceNotReady as error:
            if not any(words in str(error) for words in ("Address already in use", "Connection in use")) \
                    or attempt == 2:
                raise


def start_gunicorn_master(data_dir, workers=3, port=None, admin_token=DEFAULT_ADMIN_TOKEN,
                          extra_env=None, log_dir=None, timeout=30):
    """Start the API alone under gunicorn with ``workers`` workers and wait for /healthz."""
    def start(port):
        # Each gunicorn would otherwise share one control socket in $HOME with every other test's.
        argv = [sys.executable, "-m", "gunicorn", "--no-control-socket", "-w", str(workers),
                "-b", f"127.0.0.1:{port}", "master:create_app()"]
        return MasterProcess(argv, "gunicorn-master", data_dir, admin_token, port, extra_env,
                             log_dir).wait_ready(timeout)
    return on_a_free_port(port, start)


def start_scheduler(data_dir, admin_token=DEFAULT_ADMIN_TOKEN, extra_env=None,
                    log_dir=None, timeout=20):
    """Start ``python -m master.scheduler`` and wait for its "scheduler started" line."""
    scheduler = MasterProcess([sys.executable, "-m", "master.scheduler"], "scheduler",
                              data_dir, admin_token, None, extra_env, log_dir)
    return scheduler.wait_ready(timeout)


DEFAULT_JOIN_TOKEN = "test-join-token"


def slave_env(root, name, master_url, port, join_token=DEFAULT_JOIN_TOKEN, extra_env=None):
    """The environment of a slave with PUBLIC_DIR and STATE_DIR under ``root``, fast timers."""
    root = Path(root)
    env = {key: value for key, value in os.environ.items() if not key.startswith("MIRRORSYNC_")}
    env.update(
        PYTHONUNBUFFERED="1",
        MIRRORSYNC_MASTER_URL=master_url,
        MIRRORSYNC_JOIN_TOKEN=join_token,
        MIRRORSYNC_SLAVE_NAME=name,
        MIRRORSYNC_API_HOST="127.0.0.1",
        MIRRORSYNC_API_PORT=str(port),
        MIRRORSYNC_PUBLIC_DIR=str(root / "public"),
        MIRRORSYNC_STATE_DIR=str(root / "state"),
        MIRRORSYNC_HEARTBEAT_INTERVAL="0.3",
        MIRRORSYNC_REPORT_RETRY_MAX="0.5",
    )
    env.update({key: str(value) for key, value in (extra_env or {}).items()})
    return env


class SlaveProcess(ServiceProcess):
    """``python -m slave`` with its own PUBLIC_DIR and STATE_DIR under ``root``."""

    def __init__(self, root, name, master_url, port, join_token, extra_env, log_dir):
        self.root = Path(root)
        self.slave_name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.public_dir = self.root / "public"
        self.state_dir = self.root / "state"
        self.env = slave_env(self.root, name, master_url, self.port, join_token, extra_env)
        super().__init__([sys.executable, "-m", "slave"], self.env, _log_dir_for(self.root, log_dir), name=name)

    def tree(self, project):
        return self.public_dir / project


def start_slave(root, name, master_url, port=None, join_token=DEFAULT_JOIN_TOKEN, extra_env=None,
                log_dir=None, timeout=20):
    """Start ``python -m slave`` enrolling with ``master_url`` and wait for its /healthz."""
    def start(port):
        slave = SlaveProcess(root, name, master_url, port, join_token, extra_env, log_dir)
        try:
            slave.wait_healthy(f"{slave.url}/healthz", timeout=timeout)
        except BaseException:
            slave.stop()
            raise
        return slave
    return on_a_free_port(port, start)


def wait_run_finished(master_url, token, run_id, timeout=30):
    """Poll ``GET /api/v1/runs/<id>`` until the run is final and return it.

    Raises TimeoutError naming the last state seen, or requests.HTTPError.
    """
    url = f"{master_url.rstrip('/')}/api/v1/runs/{run_id}"
    headers = {"Authorization": f"Bearer {token}"}
    last = {}

    def run_is_final():
        response = requests.get(url, headers=headers, timeout=5)
        response.raise_for_status()
        last.update(response.json())
        return last if last.get("state") in FINAL_STATES else None

    return wait_for(
        run_is_final, timeout,
        message=lambda: f"run {run_id} to finish (last state {last.get('state')!r})",
    )
