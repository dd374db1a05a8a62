#!/usr/bin/env python3
"""A guided tour: a sample upstream, a master, one project, one sync, all on loopback.

    make demo                                   # keeps running until Ctrl-C
    .venv/bin/python examples/demo.py --once    # stops after the first run

It builds a sample tree full of awkward names and links, serves it with a
real rsync daemon, starts ``python -m master`` over a fresh DATA_DIR, creates
the project ``demo`` through the REST API, syncs it and shows the result.
Then it leaves the master running for you to explore until Ctrl-C or
SIGTERM, which stop every process it started.
"""

import argparse
import os
import secrets
import shutil
import signal
import stat
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(REPO_ROOT))

from mirrorsync_api import GOOD_RUN_STATES, MirrorSyncClient, run_reporting_errors  # noqa: E402
from reports import describe_run, human_size  # noqa: E402
from sync_project import follow_run  # noqa: E402
from tests.support.processes import ServiceNotReady, start_master  # noqa: E402
from tests.support.rsyncd import RsyncDaemon, RsyncDaemonError  # noqa: E402
from tests.support.trees import build_tricky_tree  # noqa: E402

PROJECT = "demo"
UPSTREAM_MODULE = "demo-upstream"
SYNC_TIMEOUT = 120
LISTED_ENTRIES = 12


class Stopped(Exception):
    """Ctrl-C or SIGTERM arrived: unwind so every process the demo started gets stopped."""


def _stop_requested(signum, frame):
    # A second Ctrl-C must not cut the cleanup short: the children run in
    # their own sessions and would outlive the demo.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Run a local mirror-sync demo on loopback.")
    parser.add_argument("--once", action="store_true",
                        help="exit after the first run instead of waiting for Ctrl-C")
    parser.add_argument("--dir", type=Path, metavar="PATH",
                        help="keep the demo's files here (e.g. ./demo-data) instead of a temporary "
                             "directory that is removed at the end; it must be empty or missing")
    return parser.parse_args(argv)


def prepare_dir(path):
    """The demo's working directory; returns (path, remove_at_exit)."""
    if path is None:
        return Path(tempfile.mkdtemp(prefix="mirror-sync-demo-")), True
    path = path.resolve()
    if path.exists() and any(path.iterdir()):
        raise SystemExit(f"error: {path} is not empty: remove it or choose another --dir")
    path.mkdir(parents=True, exist_ok=True)
    return path, False


def list_entries(root, limit=LISTED_ENTRIES):
    """An ``ls -l``-like listing of the first entries under ``root``, names escaped."""
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            info = path.lstat()
            relpath = path.relative_to(root).as_posix()
            shown = relpath.encode("unicode_escape").decode("ascii") if not relpath.isprintable() else relpath
            if stat.S_ISLNK(info.st_mode):
                shown += f" -> {os.readlink(path)}"
            rows.append(f"  {stat.filemode(info.st_mode)} {info.st_size:>9}  {shown}")
            if len(rows) == limit:
                return rows
    return rows


def shown_python():
    """How to call this Python from the repository root, e.g. '.venv/bin/python'."""
    executable = Path(sys.executable)
    if executable.is_relative_to(REPO_ROOT):
        return executable.relative_to(REPO_ROOT).as_posix()
    return "python3"


def run_demo(args, workdir):
    upstream_tree = workdir / "upstream"
    data_dir = workdir / "data"
    print(f"demo directory: {workdir}")

    build_tricky_tree(upstream_tree)
    print(f"built a sample upstream tree in {upstream_tree}")

    with RsyncDaemon(workdir / "upstream-rsyncd", {UPSTREAM_MODULE: upstream_tree}) as upstream:
        upstream_url = upstream.url(UPSTREAM_MODULE)
        print(f"upstream rsync daemon serves it at {upstream_url}")

        token = secrets.token_urlsafe(24)
        print("starting the master (python -m master) ...")
        with start_master(data_dir, admin_token=token, log_dir=workdir) as master:
            print(f"master is up at {master.url} (log: {master.log_path})")
            client = MirrorSyncClient(master.url, token)

            project = client.create_project({"name": PROJECT, "upstream": upstream_url, "schedule": None})
            print(f"created project {project['name']!r} (upstream {project['upstream']}, manual schedule)")

            run = client.trigger_sync(PROJECT)
            print(f"triggered run {run['id']}; following it:")
            final = follow_run(client, run, SYNC_TIMEOUT)
            if final is None:
                print(f"error: run {run['id']} did not finish within {SYNC_TIMEOUT}s", file=sys.stderr)
                return 1
            print()
            print(describe_run(final))
            synced = data_dir / PROJECT
            print()
            print(f"synced tree: {synced}")
            if synced.is_dir():
                print("\n".join(list_entries(synced)))
            size = client.get_project(PROJECT).get("size")
            if size is not None:
                print(f"project size reported by the API: {human_size(size)}")
            if final["state"] not in GOOD_RUN_STATES:
                print(f"the run ended {final['state']}; its log:", file=sys.stderr)
                print(client.run_log(final["id"]), file=sys.stderr)
                return 1
            if args.once:
                return 0

            print()
            print("The master keeps running; try the API:")
            print(f"  export MIRRORSYNC_URL={master.url}")
            print(f"  export MIRRORSYNC_TOKEN={token}")
            print(f"  curl -H 'Authorization: Bearer {token}' {master.url}/api/v1/projects/{PROJECT}")
            python = shown_python()
            print(f"  {python} examples/list_projects.py")
            print(f"  {python} examples/sync_project.py {PROJECT} --wait")
            print("press Ctrl-C to stop", flush=True)
            while master.is_running():
                time.sleep(0.5)
            print(f"error: the master exited with code {master.returncode}; log tail:\n{master.log_tail()}",
                  file=sys.stderr)
            return 1


def main(argv=None):
    args = parse_args(argv)
    workdir, remove_at_exit = prepare_dir(args.dir)
    signal.signal(signal.SIGINT, _stop_requested)
    signal.signal(signal.SIGTERM, _stop_requested)
    try:
        return run_reporting_errors(lambda: run_demo(args, workdir))
    except Stopped:
        return 0
    except (ServiceNotReady, RsyncDaemonError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        print("stopped the master and the upstream rsync daemon")
        if remove_at_exit:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"demo files kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
