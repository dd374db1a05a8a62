#!/usr/bin/env python3
"""A guided tour on loopback: a sample upstream, a master, two slaves, and one change reaching both.

    make demo                                   # keeps running until Ctrl-C
    .venv/bin/python examples/demo.py --once    # stops after the second run

It builds a sample tree full of awkward names and links, serves it with a
real rsync daemon, starts ``python -m master`` over a fresh DATA_DIR and two
``python -m slave`` (mirror1, mirror2) that enroll with the join token. It
creates the project ``demo`` through the REST API and syncs it, then changes
the upstream (one file added, one deleted, one modified), syncs again and
shows the change on both slaves. Then it leaves everything running for you to
explore until Ctrl-C or SIGTERM, which stop every process it started.
"""

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(REPO_ROOT))

from master.rsyncd import config_paths  # noqa: E402
from mirrorsync_api import (FINAL_RUN_STATES, MasterUnreachable, MirrorSyncClient,  # noqa: E402
                            run_reporting_errors)
from reports import describe_run, human_size, parse_time, slave_table  # noqa: E402
from tests.support.processes import ServiceNotReady, start_master, start_slave  # noqa: E402
from tests.support.rsyncd import RsyncDaemon, RsyncDaemonError  # noqa: E402
from tests.support.trees import build_tricky_tree, describe_tree  # noqa: E402

PROJECT = "demo"
UPSTREAM_MODULE = "demo-upstream"
SLAVE_NAMES = ("mirror1", "mirror2")
# Fast timers so the demo takes seconds: slaves heartbeat every second, the
# master calls one offline after 5 silent seconds and checks catch-up every second.
MASTER_SETTINGS = {"MIRRORSYNC_CATCHUP_INTERVAL": "1", "MIRRORSYNC_HEARTBEAT_TIMEOUT": "5"}
SLAVE_SETTINGS = {"MIRRORSYNC_HEARTBEAT_INTERVAL": "1"}
SYNC_TIMEOUT = 120
ONLINE_TIMEOUT = 30
POLL_INTERVAL = 0.2
LISTED_ENTRIES = 12
LOG_TAIL_CHARS = 3000
# What the upstream change deletes and modifies; both exist in the sample tree.
DELETED_FILE = "medium.bin"
MODIFIED_FILE = "small.txt"


class Stopped(Exception):
    """Ctrl-C or SIGTERM arrived: unwind so every process the demo started gets stopped."""


class DemoFailed(Exception):
    """The demo cannot go on; the message says why, with a log tail when a process died."""


def _stop_requested(signum, frame):
    # A second Ctrl-C must not cut the cleanup short: the children run in
    # their own sessions and would outlive the demo.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Run a local mirror-sync demo on loopback: "
                                                 "an upstream, a master and two slaves.")
    parser.add_argument("--once", action="store_true",
                        help="exit after the second run instead of waiting for Ctrl-C")
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


def exit_description(returncode):
    """'exited with code 1' or 'was killed by SIGKILL' for a Popen return code."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


class Cluster:
    """The upstream daemon, the master and the slaves the demo started, watched at every poll."""

    def __init__(self, upstream, master, slaves, client):
        self.upstream = upstream
        self.master = master
        self.slaves = slaves
        self.client = client

    def check_alive(self):
        """Raise DemoFailed with the log tail of the first process that exited."""
        for service in [self.master, *self.slaves.values()]:
            if not service.is_running():
                raise DemoFailed(f"{service.name} {exit_description(service.returncode)}; "
                                 f"the end of its log ({service.log_path}):\n"
                                 f"{service.log_tail(LOG_TAIL_CHARS)}")
        if self.upstream.process is None or self.upstream.process.poll() is not None:
            raise DemoFailed(f"the upstream rsync daemon exited; the end of its log "
                             f"({self.upstream.log_path}):\n{self.upstream.read_log()[-LOG_TAIL_CHARS:]}")

    def pause(self, seconds=POLL_INTERVAL):
        time.sleep(seconds)
        self.check_alive()

    def slave_listing(self):
        return {slave["name"]: slave for slave in self.client.request("GET", "/api/v1/slaves").json()}


def wait_slaves_online(cluster, timeout=ONLINE_TIMEOUT):
    """Poll GET /api/v1/slaves until every demo slave is online and return the listing; raises DemoFailed."""
    deadline = time.monotonic() + timeout
    while True:
        listing = cluster.slave_listing()
        states = {name: listing.get(name, {}).get("state", "not enrolled") for name in cluster.slaves}
        if all(state == "online" for state in states.values()):
            return listing
        if time.monotonic() >= deadline:
            raise DemoFailed(f"the slaves were not all online after {timeout}s: "
                             + ", ".join(f"{name} {state}" for name, state in states.items()))
        cluster.pause()


def follow_run(cluster, run, timeout=SYNC_TIMEOUT):
    """Print the run's state changes and each slave's until the run is final; returns it; raises DemoFailed."""
    started = time.monotonic()
    run_state, slave_states = None, {}
    while True:
        stamp = f"[{time.monotonic() - started:5.1f}s]"
        if run["state"] != run_state:
            run_state = run["state"]
            print(f"{stamp} run {run['id']}: {run_state}", flush=True)
        for entry in run.get("slaves") or []:
            if slave_states.get(entry["slave"]) != entry["state"]:
                slave_states[entry["slave"]] = entry["state"]
                print(f"{stamp}   {entry['slave']}: {entry['state']}", flush=True)
        if run_state in FINAL_RUN_STATES:
            return run
        if time.monotonic() - started >= timeout:
            raise DemoFailed(f"run {run['id']} did not finish within {timeout}s (still {run_state})")
        cluster.pause()
        run = cluster.client.get_run(run["id"])


def sync_and_show(cluster, why):
    """Sync the demo project, follow the run and print it; raises DemoFailed unless it succeeded."""
    run = cluster.client.trigger_sync(PROJECT)
    print(f"triggered run {run['id']} ({why}); following it:")
    final = follow_run(cluster, run)
    print()
    print(describe_run(final, list_slaves=False))
    print()
    print(indent(slave_table(final)))
    if final["state"] != "success":
        print(f"\nthe run ended {final['state']}; its log:", file=sys.stderr)
        print(cluster.client.run_log(final["id"]) or "(empty)", file=sys.stderr)
        for entry in final.get("slaves") or []:
            slave = cluster.slaves.get(entry["slave"])
            if entry["state"] != "success" and slave is not None:
                print(f"\nthe end of {slave.name}'s log ({slave.log_path}):\n{slave.log_tail(LOG_TAIL_CHARS)}",
                      file=sys.stderr)
        raise DemoFailed(f"run {final['id']} ended {final['state']}, not success")
    return final


def indent(text, prefix="  "):
    return "\n".join(prefix + line for line in text.splitlines())


def compare_with_master(master_tree, slave_tree):
    """A phrase saying whether ``slave_tree`` matches ``master_tree``: names, contents, links, modes, times."""
    want, got = describe_tree(master_tree), describe_tree(slave_tree) if slave_tree.is_dir() else {}
    differing = sorted(path for path in want.keys() | got.keys() if want.get(path) != got.get(path))
    if not differing:
        return f"same as the master's tree ({len(want) - 1} entries)"
    return f"DIFFERS from the master's tree in {len(differing)} entries, e.g. {differing[0]!r}"


@dataclass
class UpstreamChange:
    added: str
    deleted: str
    modified: str
    modified_content: bytes


def change_upstream(tree):
    """Add one file, delete one and modify one in the upstream tree; returns what changed."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    added = f"NEWS-{stamp}.txt"
    (tree / added).write_text(f"news from upstream, {stamp}\n", encoding="utf-8")
    (tree / DELETED_FILE).unlink()
    modified = tree / MODIFIED_FILE
    modified.write_bytes(modified.read_bytes() + f"changed upstream at {stamp}\n".encode())
    return UpstreamChange(added, DELETED_FILE, MODIFIED_FILE, modified.read_bytes())


def show_change(change, name, tree):
    """Print whether ``tree`` shows each part of ``change``; returns True when all of it arrived."""
    added, deleted, modified = tree / change.added, tree / change.deleted, tree / change.modified
    checks = [
        (f"+ {change.added}", added.is_file(), "present", "MISSING"),
        (f"- {change.deleted}", not deleted.exists(), "gone", "STILL THERE"),
        (f"~ {change.modified}", modified.is_file() and modified.read_bytes() == change.modified_content,
         "updated", "OLD CONTENT"),
    ]
    width = max(len(label) for label, *_ in checks)
    print(f"  {name}: {tree}")
    for label, passed, good, bad in checks:
        print(f"    {label:<{width}}  {good if passed else bad}")
    arrived = all(passed for _, passed, *_ in checks)
    print(f"    => the change {'reached' if arrived else 'did NOT reach'} {name}")
    return arrived


def show_freshness(cluster, run):
    """Print each slave's freshness from the public feed; raises DemoFailed unless all are fresh at ``run``."""
    feed = {entry["name"]: entry for entry in cluster.client.request("GET", "/api/v1/status").json()}
    held = feed.get(PROJECT, {}).get("slaves", {})
    print(f"freshness in the public feed (GET {cluster.master.url}/api/v1/status):")
    stale = []
    for name in cluster.slaves:
        entry = held.get(name, {})
        since = parse_time(entry.get("since"))
        when = f" since {since:%H:%M:%S} UTC" if since else ""
        print(f"  {name}: {entry.get('state', 'unknown')} at run {entry.get('run_id')}{when}")
        if entry.get("state") != "fresh" or entry.get("run_id") != run["id"]:
            stale.append(name)
    if stale:
        raise DemoFailed(f"not fresh at run {run['id']}: {', '.join(stale)}")


def stop_orphaned_rsyncd(config_path):
    """SIGTERM an rsync daemon still serving ``config_path`` once the master is gone (Linux /proc).

    The master runs its daemon in a session of its own, so a master killed with
    SIGKILL leaves it behind; the config path is unique to this demo's DATA_DIR.
    """
    wanted = f"--config={config_path}".encode()
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for entry in proc.iterdir():
        try:
            if entry.name.isdigit() and wanted in (entry / "cmdline").read_bytes().split(b"\0"):
                os.killpg(int(entry.name), signal.SIGTERM)  # the daemon leads its own group
        except (OSError, ProcessLookupError):
            continue


def start_cluster(stack, workdir, upstream):
    """Start the master and the slaves, each stopped when ``stack`` closes; returns the Cluster."""
    admin_token = secrets.token_urlsafe(24)
    join_token = secrets.token_urlsafe(24)
    data_dir = workdir / "data"
    print("starting the master (python -m master) ...")
    stack.callback(stop_orphaned_rsyncd, config_paths(data_dir)[0])
    master = stack.enter_context(start_master(
        data_dir, admin_token=admin_token, log_dir=workdir,
        extra_env=dict(MASTER_SETTINGS, MIRRORSYNC_JOIN_TOKEN=join_token)))
    print(f"master is up at {master.url} (rsync daemon on port {master.rsyncd_port}, log: {master.log_path})")
    slaves = {}
    for name in SLAVE_NAMES:
        print(f"starting slave {name} (python -m slave) ...")
        slave = stack.enter_context(start_slave(workdir / name, name, master.url, join_token=join_token,
                                                extra_env=SLAVE_SETTINGS, log_dir=workdir))
        print(f"slave {name} is up at {slave.url} (log: {slave.log_path})")
        slaves[name] = slave
    cluster = Cluster(upstream, master, slaves, MirrorSyncClient(master.url, admin_token))
    cluster.check_alive()
    return cluster


def run_demo(args, workdir):
    upstream_tree = workdir / "upstream"
    print(f"demo directory: {workdir}")

    build_tricky_tree(upstream_tree)
    print(f"built a sample upstream tree in {upstream_tree}")

    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(
            RsyncDaemon(workdir / "upstream-rsyncd", {UPSTREAM_MODULE: upstream_tree}))
        print(f"upstream rsync daemon serves it at {upstream.url(UPSTREAM_MODULE)}")
        cluster = start_cluster(stack, workdir, upstream)
        try:
            return tour(args, cluster, upstream_tree)
        except MasterUnreachable:
            cluster.check_alive()  # a master that died says so with its log tail
            raise


def tour(args, cluster, upstream_tree):
    """Two syncs, one upstream change between them, shown on every tree; returns the exit code."""
    master, client = cluster.master, cluster.client
    master_tree = master.data_dir / PROJECT

    print("waiting for both slaves to enroll and heartbeat ...")
    listing = wait_slaves_online(cluster)
    print("slaves (GET /api/v1/slaves):")
    for name in cluster.slaves:
        slave = listing[name]
        print(f"  {name}: {slave['state']}, reached at {slave.get('url')}, last seen {slave.get('last_seen')}")

    upstream_url = cluster.upstream.url(UPSTREAM_MODULE)
    project = client.create_project({"name": PROJECT, "upstream": upstream_url, "schedule": None})
    print(f"\ncreated project {project['name']!r} (upstream {project['upstream']}, manual schedule)")
    first = sync_and_show(cluster, "first pull")
    print(f"\ntree on the master: {master_tree}")
    print("\n".join(list_entries(master_tree)))
    for name, slave in cluster.slaves.items():
        tree = slave.tree(PROJECT)
        print(f"tree on {name}: {tree}: {compare_with_master(master_tree, tree)}")
    size = client.get_project(PROJECT).get("size")
    if size is not None:
        print(f"project size reported by the API: {human_size(size)}")

    change = change_upstream(upstream_tree)
    print(f"\nchanged the upstream: added {change.added}, deleted {change.deleted}, "
          f"modified {change.modified}")
    second = sync_and_show(cluster, "after the upstream change")
    print("\ndid the change reach every tree?")
    arrived = [show_change(change, "master", master_tree)]
    for name, slave in cluster.slaves.items():
        arrived.append(show_change(change, name, slave.tree(PROJECT)))
        print(f"    whole tree: {compare_with_master(master_tree, slave.tree(PROJECT))}")
    if not all(arrived):
        raise DemoFailed(f"run {second['id']} succeeded but the change is missing from a tree")
    print()
    show_freshness(cluster, second)

    print(f"\nruns {first['id']} and {second['id']} succeeded; the trees:")
    print(f"  master   {master_tree}")
    for name, slave in cluster.slaves.items():
        print(f"  {name:<8} {slave.tree(PROJECT)}")
    print(f"\nthe API at {master.url} (until the demo stops):")
    print(f"  export MIRRORSYNC_URL={master.url}")
    print(f"  export MIRRORSYNC_TOKEN={client.token}")
    print(f"  curl -H 'Authorization: Bearer {client.token}' {master.url}/api/v1/slaves")
    print(f"  curl {master.url}/api/v1/status")
    python = shown_python()
    print(f"  {python} examples/list_projects.py")
    print(f"  {python} examples/sync_project.py {PROJECT} --wait")
    if args.once:
        return 0

    print("press Ctrl-C to stop", flush=True)
    while True:
        cluster.pause(0.5)


def main(argv=None):
    args = parse_args(argv)
    workdir, remove_at_exit = prepare_dir(args.dir)
    signal.signal(signal.SIGINT, _stop_requested)
    signal.signal(signal.SIGTERM, _stop_requested)
    try:
        return run_reporting_errors(lambda: run_demo(args, workdir))
    except Stopped:
        return 0
    except (DemoFailed, ServiceNotReady, RsyncDaemonError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        # Files first: printing can fail when the terminal or pipe is gone.
        if remove_at_exit:
            shutil.rmtree(workdir, ignore_errors=True)
        print("stopped the slaves, the master and the upstream rsync daemon", flush=True)
        if remove_at_exit:
            print(f"removed {workdir} (keep the demo's files with --dir PATH)")
        else:
            print(f"demo files kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
