#!/usr/bin/env python3
"""Show one run: its state, times, transfer stats, slaves and, with --log, its rsync log."""

import argparse
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors
from reports import describe_run


def main(argv=None):
    parser = argparse.ArgumentParser(description="Show one sync run of the mirror-sync master.")
    parser.add_argument("run_id", help="run id, as printed by sync_project.py")
    parser.add_argument("--log", action="store_true", help="print the run's log as well")
    args = parser.parse_args(argv)
    client = MirrorSyncClient()
    print(describe_run(client.get_run(args.run_id)))
    if args.log:
        log = client.run_log(args.run_id)
        print("--- log ---")
        print(log.rstrip("\n") if log.strip() else "(empty)")


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
