#!/usr/bin/env python3
"""List the slaves enrolled with the master: state (online, offline, new, disabled) and last heartbeat."""

import argparse
import json
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors
from reports import slave_list_table


def main(argv=None):
    parser = argparse.ArgumentParser(description="List the slaves enrolled with the mirror-sync master.")
    parser.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    args = parser.parse_args(argv)
    slaves = MirrorSyncClient().list_slaves()
    if args.json:
        print(json.dumps(slaves, indent=2, sort_keys=True))
    elif not slaves:
        print("no slaves yet: start one with `python -m slave` and the master's MIRRORSYNC_JOIN_TOKEN")
    else:
        print(slave_list_table(slaves))


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
