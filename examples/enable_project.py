#!/usr/bin/env python3
"""Enable a project: its schedule runs again and it may be synced."""

import argparse
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors


def main(argv=None):
    parser = argparse.ArgumentParser(description="Enable a project: its schedule runs again and it may be synced.")
    parser.add_argument("name", help="project name")
    args = parser.parse_args(argv)
    project = MirrorSyncClient().update_project(args.name, {"enabled": True})
    print(f"enabled project {project['name']} (status: {project.get('status')})")


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
