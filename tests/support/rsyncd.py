"""A real ``rsync --daemon`` on a free loopback port, for tests, the demo and benchmarks.

Usage::

    with RsyncDaemon("/tmp/work/rsyncd", {"debian": "/srv/debian"},
                     users={"mirror": "s3cret"}) as daemon:
        url = daemon.url("debian", user="mirror")  # rsync://mirror@127.0.0.1:PORT/debian/

``root_dir`` holds the daemon's own files (rsyncd.conf, secrets, pid file, log);
it is created if missing, and relative module paths are resolved against it.
With ``users`` every module requires one of those users (``auth users``) and a
0600 secrets file is written; ``port`` fixes the port instead of picking a free
one. ``start()``/``stop()`` work without ``with``.
``daemon_factory(base_dir)`` starts any number of daemons and stops them all on
exit; a pytest fixture only has to wrap it. This module imports no pytest.
"""

import contextlib
import os
import signal
import socket
import subprocess
import time

LOOPBACK = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_POLL_INTERVAL = 0.02
# A port picked by binding to 0 can be taken by someone else before the daemon
# binds it; starting again on a new port is cheaper than reserving one.
_START_ATTEMPTS = 3


class RsyncDaemonError(RuntimeError):
    """The daemon did not come up; the message carries the tail of its log."""


class RsyncDaemon:
    """One rsync daemon serving ``modules`` (name -> path) on 127.0.0.1."""

    def __init__(self, root_dir, modules, users=None, read_only=True, binary="rsync", port=None,
                 transfer_logging=False):
        if not modules:
            raise ValueError("an rsync daemon needs at least one module")
        self.root_dir = os.path.abspath(os.fspath(root_dir))
        self.modules = {name: os.path.join(self.root_dir, os.fspath(path)) for name, path in modules.items()}
        self.users = dict(users or {})
        self.read_only = read_only
        self.binary = binary
        self.transfer_logging = transfer_logging
        self.fixed_port = port
        self.port = None
        self.process = None
        self.config_path = os.path.join(self.root_dir, "rsyncd.conf")
        self.secrets_path = os.path.join(self.root_dir, "rsyncd.secrets")
        self.log_path = os.path.join(self.root_dir, "rsyncd.log")
        self.pid_path = os.path.join(self.root_dir, "rsyncd.pid")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def url(self, module, user=None):
        """``rsync://[user@]127.0.0.1:PORT/module/``; raises RuntimeError before start()."""
        if self.port is None:
            raise RuntimeError("the rsync daemon is not running")
        userinfo = f"{user}@" if user else ""
        return f"rsync://{userinfo}{LOOPBACK}:{self.port}/{module}/"

    def sent_files(self, since=0):
        """Paths the daemon served (with ``transfer_logging``), from log offset ``since``."""
        return [line.split(" send ", 1)[1].rsplit(" ", 1)[0] for line in self.read_log()[since:].splitlines()
                if " send " in line]

    def read_log(self):
        """The daemon's log so far ('' if it has none yet)."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except FileNotFoundError:
            return ""

    def start(self):
        """Start the daemon and wait until it accepts connections; raises RsyncDaemonError."""
        if self.process is not None:
            raise RuntimeError("the rsync daemon is already running")
        os.makedirs(self.root_dir, exist_ok=True)
        for path in self.modules.values():
            os.makedirs(path, exist_ok=True)
        self._write_secrets()
        if self.fixed_port and _accepts_connections(self.fixed_port):
            raise RsyncDaemonError(f"port {self.fixed_port} on {LOOPBACK} is already taken by another program")
        attempts = 1 if self.fixed_port else _START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self.port = self.fixed_port or _free_loopback_port()
            self._write_config()
            self.process = subprocess.Popen(
                [self.binary, "--daemon", "--no-detach", f"--config={self.config_path}",
                 f"--port={self.port}", f"--address={LOOPBACK}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            if self._wait_until_listening():
                return self
            exited = self.process.poll() is not None
            self.stop()
            if not exited or attempt == attempts:
                break
        port, self.port = self.port, None
        raise RsyncDaemonError(
            f"rsync daemon did not accept connections on {LOOPBACK}:{port}; log:\n{self.read_log()[-4000:]}"
        )

    def stop(self):
        """Terminate the daemon (SIGKILL if it lingers); safe to call twice."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Connection handlers are forked children in the daemon's session.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def _wait_until_listening(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if greets(self.port):
                return True
            time.sleep(_POLL_INTERVAL)
        return False

    def _write_secrets(self):
        if not self.users:
            return
        fd = os.open(self.secrets_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        # strict modes refuses a secrets file readable by others, whatever the umask made of an old one
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as secrets:
            for user, password in self.users.items():
                secrets.write(f"{user}:{password}\n")

    def _write_config(self):
        lines = [
            f"pid file = {self.pid_path}",
            f"log file = {self.log_path}",
            f"port = {self.port}",
            f"address = {LOOPBACK}",
            "use chroot = no",
            "munge symlinks = no",
            "numeric ids = yes",
        ]
        if os.geteuid() == 0:
            # Only root may switch; anyone else gets "setgroups failed" from a uid/gid line.
            lines += [f"uid = {os.getuid()}", f"gid = {os.getgid()}"]
        lines += [
            "strict modes = yes",
            "reverse lookup = no",
            f"read only = {'yes' if self.read_only else 'no'}",
        ]
        if self.transfer_logging:
            # One "send <path> <bytes>" line per file served, for tests that count what was fetched.
            lines += ["transfer logging = yes", 'log format = send %f %l']
        for name, path in self.modules.items():
            lines += ["", f"[{name}]", f"path = {path}"]
            if self.users:
                lines += [f"auth users = {', '.join(self.users)}", f"secrets file = {self.secrets_path}"]
        with open(self.config_path, "w", encoding="utf-8") as config:
            config.write("\n".join(lines) + "\n")


@contextlib.contextmanager
def daemon_factory(base_dir):
    """Yield ``start(modules, users=None, read_only=True) -> RsyncDaemon``; stops every daemon on exit."""
    started = []

    def start(modules, users=None, read_only=True):
        daemon = RsyncDaemon(os.path.join(os.fspath(base_dir), f"rsyncd-{len(started)}"),
                             modules, users=users, read_only=read_only)
        started.append(daemon)
        return daemon.start()

    try:
        yield start
    finally:
        for daemon in reversed(started):
            daemon.stop()


def greets(port):
    """Whether an rsync daemon answers on the loopback ``port``: its first bytes are "@RSYNCD:". Another
    program that took the port accepts the connection too, but says nothing of the kind."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as connection:
            return connection.recv(8) == b"@RSYNCD:"
    except OSError:
        return False


def _accepts_connections(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((LOOPBACK, port)) == 0


def _free_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]
