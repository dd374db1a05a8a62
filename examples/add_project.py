#!/usr/bin/env python3
"""Create a mirrored project on the master.

    MIRRORSYNC_TOKEN=... examples/add_project.py debian rsync://ftp.debian.org/debian/ \
        --schedule "0 */6 * * *" --option=--bwlimit=20000 --exclude "*.iso"

rsync options start with "-", so pass them as --option=VALUE. An upstream
password, if the upstream module needs one, is read from the environment
variable MIRRORSYNC_UPSTREAM_PASSWORD so it never shows on a command line.
"""

import argparse
import os
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors
from reports import describe_project


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Create a mirrored project on the mirror-sync master.",
        epilog="Example: %(prog)s debian rsync://ftp.example.org/debian/ "
               "--schedule '0 */6 * * *' --option=--bwlimit=20000 --exclude '*.iso'",
    )
    parser.add_argument("name", help="project name (a slug: letters, digits, '-', '_', '.')")
    parser.add_argument("upstream", help="rsync://[user@]host[:port]/module[/path]")
    parser.add_argument("--schedule", metavar="CRON",
                        help="5-field crontab, e.g. '0 */6 * * *' (default: the master's default)")
    parser.add_argument("--manual", action="store_true",
                        help="no schedule: sync only when triggered")
    parser.add_argument("--option", dest="rsync_options", action="append", metavar="OPT",
                        help="extra rsync option, repeatable; write it as --option=--bwlimit=1000")
    parser.add_argument("--exclude", dest="excludes", action="append", metavar="PATTERN",
                        help="rsync exclude pattern, repeatable")
    parser.add_argument("--timeout", type=int, metavar="SECONDS",
                        help="give up a sync after this many seconds")
    parser.add_argument("--disabled", action="store_true",
                        help="create the project disabled (no scheduled syncs)")
    args = parser.parse_args(argv)
    if args.manual and args.schedule:
        parser.error("--manual and --schedule exclude each other")
    return args


def project_from(args):
    project = {"name": args.name, "upstream": args.upstream}
    if args.manual:
        project["schedule"] = None
    elif args.schedule is not None:
        project["schedule"] = args.schedule
    if args.disabled:
        project["enabled"] = False
    if args.rsync_options is not None:
        project["rsync_options"] = args.rsync_options
    if args.excludes is not None:
        project["excludes"] = args.excludes
    if args.timeout is not None:
        project["timeout"] = args.timeout
    password = os.environ.get("MIRRORSYNC_UPSTREAM_PASSWORD")
    if password:
        project["upstream_password"] = password
    return project


def main(argv=None):
    args = parse_args(argv)
    created = MirrorSyncClient().create_project(project_from(args))
    print(f"created project {created['name']}")
    print(describe_project(created))


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
