"""Install a Debian package a test needs, the way CI gets it: ``apt-get install`` as root.

This module imports no pytest: callers decide whether a failure skips or fails.
"""

import os
import shutil
import subprocess

INSTALL_TIMEOUT = 600


def apt_install(package):
    """``apt-get install -y PACKAGE``, refreshing the package lists once if needed; the reason it failed, or None."""
    if os.geteuid() != 0:
        return f"installing {package} needs root (apt-get), and we are not"
    if shutil.which("apt-get") is None:
        return f"there is no apt-get to install {package} with"
    command = ["apt-get", "install", "-y", "-qq", package]
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    reason = [f"apt-get install {package} failed"]
    for attempt in range(2):
        if attempt:  # the package lists may be missing or out of date: refresh them once
            subprocess.run(["apt-get", "update", "-qq"], env=environment, capture_output=True,
                           timeout=INSTALL_TIMEOUT, check=False)
        try:
            done = subprocess.run(command, env=environment, capture_output=True, text=True,
                                  timeout=INSTALL_TIMEOUT, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return f"apt-get install {package} took more than {INSTALL_TIMEOUT} s"
        if done.returncode == 0:
            return None
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
    return f"apt-get install {package} failed: {reason[0]}"


def ensure_program(name, package):
    """The path of program ``name``, installing Debian's ``package`` when it is missing.

    Returns (path or None, reason it is missing or None).
    """
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found:
        return found, None
    failure = apt_install(package)
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    return found, None if found else (failure or f"no {name} after installing {package}")
