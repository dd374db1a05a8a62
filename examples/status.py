#!/usr/bin/env python3
"""Show the public status feed: every project's state and how fresh each slave's copy is.

The feed is public, so no token is needed (and none is sent); only
MIRRORSYNC_URL is read.
"""

import argparse
import json
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors
from reports import describe_status


def main(argv=None):
    parser = argparse.ArgumentParser(description="Show the mirror-sync master's public status feed.")
    parser.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    args = parser.parse_args(argv)
    feed = MirrorSyncClient(token="").status_feed()
    if args.json:
        print(json.dumps(feed, indent=2, sort_keys=True))
    elif not feed:
        print("no projects yet")
    else:
        print("\n\n".join(describe_status(entry) for entry in feed))


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
