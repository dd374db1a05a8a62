#!/usr/bin/env python3
"""Enable a slave: the master sends it orders again and catches it up."""

import argparse
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors


def main(argv=None):
    parser = argparse.ArgumentParser(description="Enable a slave: the master sends it orders again and catches it up.")
    parser.add_argument("name", help="slave name, as examples/list_slaves.py shows it")
    args = parser.parse_args(argv)
    slave = MirrorSyncClient().update_slave(args.name, {"enabled": True})
    print(f"enabled slave {slave['name']} (state: {slave.get('state')})")


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
