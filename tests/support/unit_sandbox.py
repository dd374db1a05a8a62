"""Run one command the way a systemd unit's sandbox would, without systemd: ``unit_sandbox.command(spec)``.

The spec says what systemd would do: ``ProtectSystem=strict`` (every mount
read-only except /dev, /proc, /sys and the unit's ``ReadWritePaths=``),
``PrivateTmp=`` (fresh /tmp and /var/tmp), ``User=``/``Group=`` and
``WorkingDirectory=``. Run as root, this file makes a private mount namespace
(through ``unshare``), sets those mounts up, and execs the command with
``setpriv`` as the unit's user; the process keeps its pid, so signals reach the
command itself. It imports nothing from the project.
"""

import json
import os
import subprocess
import sys

API_FILE_SYSTEMS = ("/dev", "/proc", "/sys")


def command(spec):
    """The argv that runs ``spec["argv"]`` inside the sandbox that ``spec`` describes."""
    return ["unshare", "--mount", "--propagation", "private", "--", sys.executable, os.path.abspath(__file__),
            json.dumps(spec)]


def _mount(*argv, check=True):
    subprocess.run(["mount", *argv], check=check, stdin=subprocess.DEVNULL,
                   stderr=None if check else subprocess.DEVNULL)


def _mount_points():
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            yield fields[4].encode().decode("unicode_escape"), fields[5].split(",")


def _under(path, roots):
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def enter(spec):
    writable = [os.path.realpath(path) for path in spec.get("read_write", ())]
    private = []
    if spec.get("private_tmp"):
        for path in ("/tmp", "/var/tmp"):
            _mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", path)
            private.append(path)
    for path in writable:
        _mount("--bind", path, path)
    if spec.get("protect_system") == "strict":
        for point, options in list(_mount_points()):
            if "ro" in options or _under(point, API_FILE_SYSTEMS) or point in writable or _under(point, private):
                continue
            # Other mounts (other tests' file systems under /tmp) may come and go meanwhile: only / must work.
            _mount("-o", "remount,bind,ro", point, check=point == "/")
    os.chdir(spec.get("cwd") or "/")
    argv = ["setpriv", f"--reuid={spec['uid']}", f"--regid={spec['gid']}", "--init-groups", "--", *spec["argv"]]
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    enter(json.loads(sys.argv[1]))
