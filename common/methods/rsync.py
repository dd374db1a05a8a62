"""``method: rsync``: one rsync of the whole tree, deletions at the end (the default)."""

import time

from common.methods import SyncResult
from common.rsync import TRANSIENT_EXIT_CODES, RsyncJob

# What an rsync daemon says when the project's settings, not the network, are wrong.
PERMANENT_DAEMON_ERRORS = ("auth failed", "unknown module", "access denied", "chroot failed")


def protect_options(paths):
    """Filter rules keeping rsync's deletions off ``paths`` (relative to the tree's root)."""
    return tuple(f"--filter=protect /{path.lstrip('/')}" for path in paths)


def job(spec, destination, extra_options=(), excludes=None, delete=True):
    return RsyncJob(source=spec.source, destination=destination,
                    options=(*protect_options(spec.protect), *extra_options, *spec.options),
                    excludes=tuple(spec.excludes if excludes is None else excludes),
                    password=spec.password, timeout=spec.timeout, delete=delete, listed=spec.listed)


def is_transient(result):
    """A failure of the network or the upstream daemon, not of our tree or options."""
    if result.ok or result.timed_out or result.cancelled or result.exit_code not in TRANSIENT_EXIT_CODES:
        return False
    # exit 5 also covers a wrong password or module: trying again will not help
    return not any(marker in (result.error or "").lower() for marker in PERMANENT_DAEMON_ERRORS)


def run_stage(runners, rsync_job, log_path, name, cancel, on_spawn, on_progress):
    """Run one rsync; returns (SyncResult, seconds)."""
    started = time.monotonic()
    # Progress is asked for only when someone listens: it adds --info=progress2 to the command.
    extra = {} if on_progress is None else {"on_progress": on_progress}
    result = runners.rsync.run(rsync_job, log_path, on_spawn=on_spawn, cancel=cancel, **extra)
    seconds = round(time.monotonic() - started, 3)
    return SyncResult.of(result, transient=is_transient(result), stages=((name, seconds),)), seconds


class RsyncMethod:
    def __init__(self, spec, runners):
        self.spec = spec
        self.runners = runners

    def run(self, destination, log_path, cancel=None, on_spawn=None, on_progress=None):
        result, _ = run_stage(self.runners, job(self.spec, destination), log_path, "rsync", cancel, on_spawn,
                              on_progress)
        return result
