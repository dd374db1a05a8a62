#!/usr/bin/env python3
"""Disable a slave: the master sends it no more orders and closes its rsync access."""

import argparse
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors


def main(argv=None):
    parser = argparse.ArgumentParser(description="Disable a slave: the master sends it no more orders and closes its rsync access.")
    parser.add_argument("name", help="slave name, as examples/list_slaves.py shows it")
    args = parser.parse_args(argv)
    slave = MirrorSyncClient().update_slave(args.name, {"enabled": False})
    print(f"disabled slave {slave['name']} (state: {slave.get('state')})")


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
