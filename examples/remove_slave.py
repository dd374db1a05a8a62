#!/usr/bin/env python3
"""Remove a slave: its key stops working at once and it loses access to the master's rsync daemon."""

import argparse
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors


def main(argv=None):
    parser = argparse.ArgumentParser(description="Remove a slave from the mirror-sync master.")
    parser.add_argument("name", help="slave name, as examples/list_slaves.py shows it")
    args = parser.parse_args(argv)
    MirrorSyncClient().delete_slave(args.name)
    print(f"removed slave {args.name}: its key no longer works (a slave still running with the join token "
          "enrolls again: stop it first, or rotate JOIN_TOKEN)")


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
