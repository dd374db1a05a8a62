"""Per-run log files, ``<root>/<project>/<run id>.log``, with a retention limit per project.

The master keeps them under DATA_DIR/.mirrorsync/logs, a slave under STATE_DIR/logs.
"""

import os
import shutil

LOG_SUFFIX = ".log"


def log_path(root, project_name, run_id):
    return os.path.join(root, project_name, f"{int(run_id)}{LOG_SUFFIX}")


def prune_logs(root, project_name, keep):
    """Delete all but the ``keep`` newest run logs of a project; returns how many went."""
    try:
        names = os.listdir(os.path.join(root, project_name))
    except FileNotFoundError:
        return 0
    run_ids = sorted(int(n[:-len(LOG_SUFFIX)]) for n in names
                     if n.endswith(LOG_SUFFIX) and n[:-len(LOG_SUFFIX)].isdigit())
    doomed = run_ids[:-keep] if keep else run_ids
    for run_id in doomed:
        try:
            os.unlink(log_path(root, project_name, run_id))
        except FileNotFoundError:
            pass
    return len(doomed)


def remove_logs(root, project_name):
    shutil.rmtree(os.path.join(root, project_name), ignore_errors=True)


def read_log(root, project_name, run_id, offset=0, limit=1024 * 1024):
    """Return (bytes, next_offset) from ``offset``, or None when the log does not exist."""
    try:
        with open(log_path(root, project_name, run_id), "rb") as log:
            if offset >= os.fstat(log.fileno()).st_size:
                return b"", offset  # nothing new yet (and no seek a filesystem could refuse)
            log.seek(offset)
            data = log.read(limit)
    except FileNotFoundError:
        return None
    return data, offset + len(data)
