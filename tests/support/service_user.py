"""Run mirror-sync the way a deployment does: as an unprivileged system user, from an install it cannot write.

``ServiceUser`` creates a throwaway system user (``useradd --system``) and
removes it again; ``command(argv)`` runs a program as that user with
``setpriv``, keeping the environment it is given. ``service_venv()`` is a
virtualenv built from the system's Python with the pinned requirements, which
any user can run (the developer's own venv may hang off an interpreter under
/root); it is built once per requirements file and reused. ``install_copy``
lays the code out as an install directory owned by root.
This module imports no pytest.
"""

import fcntl
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from tests.support.apt import apt_install
from tests.support.processes import REPO_ROOT

SYSTEM_PYTHON = "/usr/bin/python3"
VENV_CACHE = Path("/var/cache/mirror-sync-tests")
VENV_BUILD_TIMEOUT = 600
INSTALL_IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", "var", "demo-data",
                                        "*.pyc", "*.egg-info")


class ServiceUserError(RuntimeError):
    """The user could not be created, or a tool it needs is missing; the message says which."""


def missing_tools():
    """Names of the programs running as a service user needs that are not installed."""
    return [tool for tool in ("useradd", "userdel", "setpriv") if shutil.which(tool) is None]


class ServiceUser:
    """A system user and group of the same unique name, for one test; removed on exit."""

    def __init__(self, prefix="msync"):
        self.name = f"{prefix}-{secrets.token_hex(4)}"
        self.uid = self.gid = None

    def __enter__(self):
        done = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                               "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", self.name],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServiceUserError(f"useradd {self.name} failed: {done.stderr.strip()}")
        entry = pwd.getpwnam(self.name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        return self

    def __exit__(self, *exc_info):
        self.end_processes()
        subprocess.run(["userdel", self.name], capture_output=True, check=False)

    def command(self, argv):
        """``argv`` run as this user and its group only, with the caller's environment."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--",
                *[str(arg) for arg in argv]]

    def run(self, argv, **kwargs):
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("check", False)
        return subprocess.run(self.command(argv), stdin=subprocess.DEVNULL, **kwargs)

    def owns(self, *paths, mode=0o750):
        """Create each directory (and parents) owned by this user with ``mode``."""
        for path in paths:
            Path(path).mkdir(parents=True, exist_ok=True)
            os.chown(path, self.uid, self.gid)
            os.chmod(path, mode)

    def end_processes(self):
        """SIGKILL whatever the test left running as this user, so userdel can remove it."""
        if self.uid is not None:
            end_processes_of(self.uid)


def end_processes_of(uid):
    """SIGKILL, one pid at a time, every process whose owner is ``uid`` (a user made for one test)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                os.kill(int(entry.name), 9)
        except (OSError, ProcessLookupError):
            continue


def uid_of(pid):
    """The real uid of a running process (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise LookupError(pid)


def service_venv():
    """A virtualenv from the system's Python with requirements.txt installed, readable by every user.

    Built on first use under /var/cache (about half a minute with pip's cache)
    and reused while requirements.txt is unchanged. Raises ServiceUserError
    when it cannot be built.
    """
    requirements = (REPO_ROOT / "requirements.txt").read_bytes()
    key = hashlib.sha256(requirements + os.path.realpath(SYSTEM_PYTHON).encode()).hexdigest()[:12]
    venv = VENV_CACHE / f"venv-{key}"
    complete = venv / ".complete"
    if complete.exists():
        os.utime(complete)  # in use: keeps it from being pruned
        return venv
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise ServiceUserError(f"a service venv needs the system's Python at {SYSTEM_PYTHON}")
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    os.chmod(VENV_CACHE, 0o755)
    with open(VENV_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers build it once
        if complete.exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        steps = ([SYSTEM_PYTHON, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q",
                  "-r", str(REPO_ROOT / "requirements.txt")])
        for argv in steps:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=VENV_BUILD_TIMEOUT,
                                  stdin=subprocess.DEVNULL, check=False)
            if done.returncode != 0 and argv[1:3] == ["-m", "venv"] and apt_install("python3-venv") is None:
                shutil.rmtree(venv, ignore_errors=True)  # Debian keeps ensurepip in python3-venv
                done = subprocess.run(argv, capture_output=True, text=True, timeout=VENV_BUILD_TIMEOUT,
                                      stdin=subprocess.DEVNULL, check=False)
            if done.returncode != 0:
                raise ServiceUserError(f"{' '.join(argv[:3])} failed: {(done.stderr or done.stdout)[-2000:]}")
        complete.touch()
        _prune_old_venvs(keep=venv)
    return venv


def _prune_old_venvs(keep, older_than=2 * 86400):
    """Drop venvs of earlier requirements files unused for days (each is ~100 MB)."""
    for other in VENV_CACHE.glob("venv-*"):
        try:
            stale = time.time() - (other / ".complete").stat().st_mtime > older_than
        except OSError:
            stale = True
        if other != keep and stale:
            shutil.rmtree(other, ignore_errors=True)


def install_copy(dest, venv):
    """Copy the code to ``dest`` as a root-owned install (0755) whose ``.venv`` is ``venv``; returns dest."""
    dest = Path(dest)
    shutil.copytree(REPO_ROOT, dest, ignore=INSTALL_IGNORE, symlinks=True)
    (dest / ".venv").symlink_to(venv)
    os.chmod(dest, 0o755)
    return dest
