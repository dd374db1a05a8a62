#!/usr/bin/env python3
"""Print a run's rsync log as it grows, until the run is final and the whole log is printed.

It polls GET /api/v1/runs/<id>/log?offset=N, continuing from X-Next-Offset.
Exit status: 0 when the run ended in success or partial, 1 when it failed,
was interrupted or cancelled, or the API refused the request.
"""

import argparse
import sys
import time

from mirrorsync_api import FINAL_RUN_STATES, GOOD_RUN_STATES, MirrorSyncClient, run_reporting_errors

POLL_INTERVAL = 0.5


def follow_log(client, run_id, out=sys.stdout):
    """Print whole lines of the log as they arrive; return the run once it is final and the log drained."""
    offset, pending, run = 0, b"", None
    while True:
        data, offset = client.run_log_from(run_id, offset)
        if data:
            pending += data
            # Split on bytes so a character cut in two between answers is decoded whole.
            *lines, pending = pending.split(b"\n")
            for line in lines:
                print(line.decode("utf-8", errors="replace"), file=out, flush=True)
            continue
        if run is not None and run["state"] in FINAL_RUN_STATES:
            break
        # The run is read before the next log request, so a log that grew
        # just before the run ended is still read once more.
        run = client.get_run(run_id)
        if run["state"] not in FINAL_RUN_STATES:
            time.sleep(POLL_INTERVAL)
    if pending:
        print(pending.decode("utf-8", errors="replace"), file=out, flush=True)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description="Follow the rsync log of one sync run until it ends.")
    parser.add_argument("run_id", type=int, help="run id, as printed by sync_project.py")
    args = parser.parse_args(argv)
    run = follow_log(MirrorSyncClient(), args.run_id)
    print(f"--- run {run['id']} of project {run['project']} ended: {run['state']}")
    return 0 if run["state"] in GOOD_RUN_STATES else 1


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
