#!/usr/bin/env python3
"""List the master's API tokens (admins only): role, expiry, last use and revocation, never the tokens themselves."""

import argparse
import json
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors
from reports import token_table


def main(argv=None):
    parser = argparse.ArgumentParser(description="List the mirror-sync master's API tokens (admins only).")
    parser.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    args = parser.parse_args(argv)
    tokens = MirrorSyncClient().list_tokens()
    if args.json:
        print(json.dumps(tokens, indent=2, sort_keys=True))
    elif not tokens:
        print("no tokens yet: create one with examples/create_token.py")
    else:
        print(token_table(tokens))


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
