#!/usr/bin/env python3
"""Start a sync of a project now, and with --wait follow it until it ends.

Exit status: 0 when the run was queued (or, with --wait, ended in success or
partial), 1 when it failed or was interrupted or cancelled, or the API
refused the request, 2 when --timeout passed first (the run goes on).
"""

import argparse
import sys
import time

from mirrorsync_api import FINAL_RUN_STATES, GOOD_RUN_STATES, MirrorSyncClient, run_reporting_errors
from reports import describe_run

POLL_INTERVAL = 0.5


def follow_run(client, run, timeout, out=sys.stdout):
    """Print each state change of ``run`` until it is final; return the last run seen or None on timeout."""
    started = time.monotonic()
    state = None
    while True:
        if run["state"] != state:
            state = run["state"]
            print(f"[{time.monotonic() - started:6.1f}s] run {run['id']}: {state}", file=out, flush=True)
        if state in FINAL_RUN_STATES:
            return run
        if time.monotonic() - started >= timeout:
            return None
        time.sleep(POLL_INTERVAL)
        run = client.get_run(run["id"])


def main(argv=None):
    parser = argparse.ArgumentParser(description="Start a sync of a mirrored project now.")
    parser.add_argument("name", help="project name")
    parser.add_argument("--wait", action="store_true", help="follow the run until it ends")
    parser.add_argument("--timeout", type=float, default=3600, metavar="SECONDS",
                        help="with --wait, stop following after this long (default: %(default)s)")
    args = parser.parse_args(argv)

    client = MirrorSyncClient()
    run = client.trigger_sync(args.name)
    print(f"run {run['id']} for project {run['project']} is {run['state']}")
    if not args.wait:
        return 0
    final = follow_run(client, run, args.timeout)
    if final is None:
        print(f"run {run['id']} not finished after {args.timeout:g}s; it goes on: "
              f"see examples/show_run.py {run['id']}", file=sys.stderr)
        return 2
    print(describe_run(final))
    return 0 if final["state"] in GOOD_RUN_STATES else 1


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
