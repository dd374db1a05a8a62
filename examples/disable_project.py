#!/usr/bin/env python3
"""Disable a project: no scheduled syncs and no manual triggers until it is enabled again."""

import argparse
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors


def main(argv=None):
    parser = argparse.ArgumentParser(description="Disable a project: no scheduled syncs and no manual triggers until it is enabled again.")
    parser.add_argument("name", help="project name")
    args = parser.parse_args(argv)
    project = MirrorSyncClient().update_project(args.name, {"enabled": False})
    print(f"disabled project {project['name']} (status: {project.get('status')})")


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
