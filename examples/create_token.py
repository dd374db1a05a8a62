#!/usr/bin/env python3
"""Create an API token and print it: the only time it is shown, as the master keeps only its hash.

    MIRRORSYNC_TOKEN=<an admin token> examples/create_token.py grafana --role readonly
"""

import argparse
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors


def main(argv=None):
    parser = argparse.ArgumentParser(description="Create an API token on the mirror-sync master (admins only).")
    parser.add_argument("name", help="who or what the token is for, e.g. grafana or alice")
    parser.add_argument("--role", choices=("readonly", "admin"), default="readonly",
                        help="readonly may read everything but tokens; admin may do everything "
                             "(default: %(default)s)")
    parser.add_argument("--expires-in", type=int, metavar="SECONDS",
                        help="the token stops working after this many seconds (default: never)")
    args = parser.parse_args(argv)
    request = {"name": args.name, "role": args.role}
    if args.expires_in is not None:
        request["expires_in"] = args.expires_in
    token = MirrorSyncClient().create_token(request)
    expiry = f"expires {token['expires_at']}" if token.get("expires_at") else "never expires"
    print(f"created {token['role']} token {token['id']} for {token['name']} ({expiry})")
    print(f"token: {token['token']}")
    print("Store it now: the master keeps only its hash and cannot show it again.")


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
