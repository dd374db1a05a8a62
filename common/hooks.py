"""Project hooks: executables from HOOKS_DIR run before a pull and after it succeeded or failed.

A hook runs through the same supervision as a sync (its own process group,
a deadline, output in the run log) with ``<hook> <project> <run id> <state>``
as arguments and MIRRORSYNC_PROJECT, MIRRORSYNC_RUN_ID, MIRRORSYNC_STATE and
MIRRORSYNC_DIR in its environment.
"""

import os

from common.processes import describe, script_environment

PRE_SYNC, POST_SUCCESS, POST_FAILURE = "pre_sync", "post_success", "post_failure"
HOOKS = (PRE_SYNC, POST_SUCCESS, POST_FAILURE)


def executable_in(directory, name):
    """The path of executable ``name`` in ``directory``; raises ValueError saying what is wrong.

    ``name`` is a bare file name: one with "/" or a dot name never leaves the directory.
    """
    if not name or "/" in name or "\0" in name or name in (".", "..") or name.startswith("."):
        raise ValueError("must be the bare name of an executable file, without '/'")
    if not directory:
        raise ValueError("cannot be used: the directory for these executables is not set")
    path = os.path.join(directory, name)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise ValueError(f"there is no executable {name!r} in {directory}")
    return path


def run_hook(runner, path, hook, *, project, run_id, state, directory, log_path, timeout, cancel=None):
    """Run one hook; returns None when it exited 0, else a sentence saying how it failed."""
    env = script_environment({"MIRRORSYNC_PROJECT": project, "MIRRORSYNC_RUN_ID": str(run_id),
                              "MIRRORSYNC_STATE": state, "MIRRORSYNC_DIR": os.path.abspath(directory),
                              "MIRRORSYNC_HOOK": hook})
    cwd = directory if os.path.isdir(directory) else None
    outcome = runner.run([path, hook, project, str(run_id), state], log_path, env=env, timeout=timeout,
                         cancel=cancel, cwd=cwd)
    if outcome.exit_code == 0 and not outcome.timed_out and not outcome.cancelled:
        return None
    return f"hook {hook} ({os.path.basename(path)}) failed: {describe(outcome, timeout)}"
