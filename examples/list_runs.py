#!/usr/bin/env python3
"""List a project's runs, newest first, with each retry's link to the run it retries."""

import argparse
import json
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors
from reports import run_table


def main(argv=None):
    parser = argparse.ArgumentParser(description="List the sync runs of one project, newest first.")
    parser.add_argument("name", help="project name")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="show at most N runs (the master allows 1-500; default: its default, 50)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    args = parser.parse_args(argv)
    runs = MirrorSyncClient().project_runs(args.name, limit=args.limit)
    if args.json:
        print(json.dumps(runs, indent=2, sort_keys=True))
    elif not runs:
        print(f"no runs of project {args.name} yet: start one with examples/sync_project.py {args.name}")
    else:
        print(run_table(runs))


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
