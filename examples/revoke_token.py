#!/usr/bin/env python3
"""Revoke an API token: it stops working at once and stays listed as revoked."""

import argparse
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors


def main(argv=None):
    parser = argparse.ArgumentParser(description="Revoke an API token of the mirror-sync master (admins only).")
    parser.add_argument("token_id", type=int, help="token id, as examples/list_tokens.py shows it")
    args = parser.parse_args(argv)
    token = MirrorSyncClient().revoke_token(args.token_id)
    print(f"revoked token {token['id']} ({token['name']}, {token['role']}) at {token['revoked_at']}")


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
