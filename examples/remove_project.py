#!/usr/bin/env python3
"""Remove a project from the master."""

import argparse
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors


def main(argv=None):
    parser = argparse.ArgumentParser(description="Remove a mirrored project from the mirror-sync master.")
    parser.add_argument("name", help="project name")
    args = parser.parse_args(argv)
    MirrorSyncClient().delete_project(args.name)
    print(f"removed project {args.name}")


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
