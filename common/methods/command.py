"""``method: command``: a sync script (git, lftp, bandersnatch...) instead of rsync.

The script is an executable the admin put in SYNC_SCRIPTS_DIR; it runs with the
project's ``command_args`` as its arguments, in the tree, with MIRRORSYNC_DIR
naming it, under the same supervision as rsync: its own process group ended on
timeout or cancel, output in the run log, its exit code kept. The size comes
from walking the tree once the script succeeded.
"""

import os
import time

from common.methods import SyncResult
from common.processes import describe, script_environment
from common.rsync import RsyncStats

def tree_stats(root):
    """Files and bytes under ``root``, symlinks counted but never followed."""
    files = size = 0
    stack = [root]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                files += 1
                size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return RsyncStats(files_total=files, total_size=size)


class CommandMethod:
    def __init__(self, spec, runners):
        if not spec.program:
            raise ValueError("method command needs a program")
        self.spec = spec
        self.runners = runners

    def run(self, destination, log_path, cancel=None, on_spawn=None, on_progress=None):
        spec = self.spec
        name = os.path.basename(spec.program)
        try:
            os.makedirs(destination, exist_ok=True)
        except OSError as error:
            return self._failed(f"cannot create {destination!r}: {error.strerror}")
        env = script_environment({**spec.environment, "MIRRORSYNC_DIR": os.path.abspath(destination)})
        started = time.monotonic()
        outcome = self.runners.programs.run([spec.program, *spec.arguments], log_path, env=env,
                                            timeout=spec.timeout, cancel=cancel, on_spawn=on_spawn,
                                            cwd=destination)
        stages = (("command", round(time.monotonic() - started, 3)),)
        if outcome.cancelled:
            return self._failed("cancelled", outcome.exit_code, cancelled=True, stages=stages)
        if outcome.not_started is not None or outcome.timed_out or outcome.exit_code != 0:
            error = f"sync script {name!r}: {describe(outcome, spec.timeout)}"
            detail = _last_line(outcome.output)
            if detail and outcome.not_started is None:
                error = f"{error}: {detail}"
            transient = (not outcome.timed_out and outcome.exit_code in spec.transient_exit_codes)
            return self._failed(error, outcome.exit_code, timed_out=outcome.timed_out, transient=transient,
                                stages=stages)
        return SyncResult(0, True, None, None, False, False, tree_stats(destination), stages=stages)

    @staticmethod
    def _failed(error, exit_code=None, timed_out=False, cancelled=False, transient=False, stages=()):
        return SyncResult(exit_code, False, None, error, timed_out, cancelled, RsyncStats(),
                          transient=transient, stages=stages)


def _last_line(output):
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:500] if lines else None
