#!/usr/bin/env python3
"""Change some settings of a project; whatever is not given stays as it is.

    examples/update_project.py debian --schedule "30 */4 * * *" --disable
    examples/update_project.py debian --manual --option=--bwlimit=5000

--option and --exclude replace the whole list; --no-options and
--no-excludes empty it. A new upstream password is read from
MIRRORSYNC_UPSTREAM_PASSWORD when --password-from-env is given.
"""

import argparse
import os
import sys

from mirrorsync_api import MirrorSyncClient, run_reporting_errors
from reports import describe_project


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Change settings of a mirrored project.")
    parser.add_argument("name", help="project name")
    schedule = parser.add_mutually_exclusive_group()
    schedule.add_argument("--schedule", metavar="CRON", help="new 5-field crontab")
    schedule.add_argument("--manual", action="store_true", help="drop the schedule: sync only on demand")
    parser.add_argument("--upstream", metavar="URL", help="new rsync:// upstream")
    enabled = parser.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_const", const=True)
    enabled.add_argument("--disable", dest="enabled", action="store_const", const=False)
    options = parser.add_mutually_exclusive_group()
    options.add_argument("--option", dest="rsync_options", action="append", metavar="OPT",
                         help="rsync option, repeatable, replaces the list; write it as --option=--bwlimit=1000")
    options.add_argument("--no-options", dest="rsync_options", action="store_const", const=[],
                         help="remove every extra rsync option")
    excludes = parser.add_mutually_exclusive_group()
    excludes.add_argument("--exclude", dest="excludes", action="append", metavar="PATTERN",
                          help="exclude pattern, repeatable, replaces the list")
    excludes.add_argument("--no-excludes", dest="excludes", action="store_const", const=[],
                          help="remove every exclude pattern")
    parser.add_argument("--timeout", type=int, metavar="SECONDS", help="new sync timeout")
    parser.add_argument("--password-from-env", action="store_true",
                        help="set the upstream password from MIRRORSYNC_UPSTREAM_PASSWORD")
    args = parser.parse_args(argv)
    changes = changes_from(args)
    if args.password_from_env and "upstream_password" not in changes:
        parser.error("--password-from-env: MIRRORSYNC_UPSTREAM_PASSWORD is not set")
    if not changes:
        parser.error("nothing to change: give at least one option")
    return args.name, changes


def changes_from(args):
    changes = {}
    if args.manual:
        changes["schedule"] = None
    elif args.schedule is not None:
        changes["schedule"] = args.schedule
    for field in ("upstream", "enabled", "rsync_options", "excludes", "timeout"):
        value = getattr(args, field)
        if value is not None:
            changes[field] = value
    if args.password_from_env and os.environ.get("MIRRORSYNC_UPSTREAM_PASSWORD"):
        changes["upstream_password"] = os.environ["MIRRORSYNC_UPSTREAM_PASSWORD"]
    return changes


def main(argv=None):
    name, changes = parse_args(argv)
    updated = MirrorSyncClient().update_project(name, changes)
    print(f"updated project {updated['name']}: {', '.join(sorted(changes))}")
    print(describe_project(updated))


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
