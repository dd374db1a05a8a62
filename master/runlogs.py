"""Per-run log files under DATA_DIR/.mirrorsync/logs/<project>/<run id>.log, with retention."""

import os
import shutil

from master.db import state_dir

LOG_SUFFIX = ".log"


def logs_dir(data_dir, project_name):
    return os.path.join(state_dir(data_dir), "logs", project_name)


def log_path(data_dir, project_name, run_id):
    return os.path.join(logs_dir(data_dir, project_name), f"{int(run_id)}{LOG_SUFFIX}")


def prune_logs(data_dir, project_name, keep):
    """Delete all but the ``keep`` newest run logs of a project; returns how many went."""
    directory = logs_dir(data_dir, project_name)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    run_ids = sorted(int(n[:-len(LOG_SUFFIX)]) for n in names
                     if n.endswith(LOG_SUFFIX) and n[:-len(LOG_SUFFIX)].isdigit())
    doomed = run_ids[:-keep] if keep else run_ids
    for run_id in doomed:
        try:
            os.unlink(log_path(data_dir, project_name, run_id))
        except FileNotFoundError:
            pass
    return len(doomed)


def remove_logs(data_dir, project_name):
    shutil.rmtree(logs_dir(data_dir, project_name), ignore_errors=True)


def read_log(data_dir, project_name, run_id, offset=0, limit=1024 * 1024):
    """Return (bytes, next_offset) from ``offset``, or None when the log does not exist."""
    try:
        with open(log_path(data_dir, project_name, run_id), "rb") as log:
            log.seek(offset)
            data = log.read(limit)
    except FileNotFoundError:
        return None
    return data, offset + len(data)
