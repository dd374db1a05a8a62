#!/usr/bin/env python3
"""List the projects the master mirrors, with their status and next run."""

import argparse
import json
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors
from reports import project_table


def main(argv=None):
    parser = argparse.ArgumentParser(description="List the projects the mirror-sync master mirrors.")
    parser.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    args = parser.parse_args(argv)
    projects = MirrorSyncClient().list_projects()
    if args.json:
        print(json.dumps(projects, indent=2, sort_keys=True))
    elif not projects:
        print("no projects yet: add one with examples/add_project.py")
    else:
        print(project_table(projects))


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
