"""Fault injection for integration tests: find a test's own rsync processes, slow rsync down, snapshot trees.

Tests run in parallel, so a process is only ever looked at (or killed) when its
command line names one of the calling test's own paths.
"""

import os
import shutil
import signal
import stat
from pathlib import Path

from tests.support.processes import wait_for
from tests.support.trees import describe_tree


def live_argv(pid):
    """The argv (bytes) of process ``pid``, or None when it is gone or a zombie: a zombie no
    longer runs, whoever reaps it."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = cmdline.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as status:
            state = status.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if state == b"Z" else argv


def _runs_rsync(argv):
    return argv is not None and os.path.basename(argv[0]).startswith(b"rsync")


def rsync_processes_under(path):
    """pid -> argv of every live rsync process whose command line mentions ``path``."""
    marker = os.fsencode(os.fspath(path))
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        argv = live_argv(pid)
        if _runs_rsync(argv) and any(marker in arg for arg in argv):
            found[int(pid)] = [arg.decode("utf-8", "replace") for arg in argv if arg]
    return found


def alive(pids):
    """The pids of ``pids`` that still run an rsync (a reused pid running something else does not count)."""
    return {pid for pid in pids if _runs_rsync(live_argv(pid))}


def wait_rsync_under(path, timeout=20):
    """Wait until an rsync that mentions ``path`` runs; returns pid -> argv."""
    return wait_for(lambda: rsync_processes_under(path), timeout, message=f"an rsync writing under {path}")


def wait_gone(pids, timeout, what="rsync processes"):
    """Wait until none of ``pids`` runs rsync any more; raises TimeoutError naming the survivors."""
    wait_for(lambda: not alive(pids), timeout,
             message=lambda: f"{what} {sorted(alive(pids))} to be gone")


def kill_rsync_under(path):
    """SIGKILL every rsync that mentions ``path``, as a service manager ends a crashed unit's cgroup."""
    pids = set(rsync_processes_under(path))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_gone(pids, 10)
    return pids


def throttled_rsync(directory, bwlimit):
    """Write an executable that runs the real rsync with ``--bwlimit=<bwlimit>`` (KiB/s) first; returns its path.

    Given as a process's RSYNC_BINARY, it makes that process's pulls slow
    without a large tree. ``exec`` keeps the pid, so the process's own
    bookkeeping (pid, process group) sees rsync itself.
    """
    real = shutil.which("rsync")
    if real is None:
        raise RuntimeError("rsync is not installed")
    path = Path(directory) / f"rsync-bwlimit-{int(bwlimit)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec {real} --bwlimit={int(bwlimit)} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def published_tree(path):
    """describe_tree of what a reader sees at ``path`` (a directory, or a symlink to a snapshot)."""
    path = Path(path)
    return describe_tree(path.resolve()) if path.is_dir() else None


def tree_differences(expected, actual):
    """Sorted relative paths where two describe_tree results disagree (the root's mtime aside)."""
    paths = set(expected) | set(actual)
    return sorted(p for p in paths if p != "." and expected.get(p) != actual.get(p))
