"""Fan-out side by side with bare rsync: trigger -> every slave published, and what snapshots cost on disk.

Real processes on loopback: an upstream rsync daemon, ``python -m master`` and
N slaves (``python -m slave``). For each tree size it pulls the tree once (so
every slave holds it), changes ``--change`` of its files upstream, then times
a trigger until every slave reported success. The baseline does the same work
with bare rsync: upstream -> a master directory, then that directory -> every
slave directory in parallel (full tree rsyncs, as a cron script would), and,
for the changed-files line, the same with ``--files-from`` listing only the
changed files (on both legs). Each case is the median of ``--repeat``
alternated pairs.

"fan-out" splits off the second half: for ours, from the end of the master's
pull (the master's INFO line "run N of P: syncing -> distributing", written
once the tree is sealed, right before the orders go out) to the run's
finished_at; for bare rsync, the parallel master -> slaves rsyncs.

    .venv/bin/python bench/fanout.py [--files 1000,10000] [--change 0.01] [--slaves 4] [--repeat 3]
    .venv/bin/python bench/fanout.py --case p1      # 1k, 10k, 100k files at 1%, and 100k at 0.1%
    .venv/bin/python bench/fanout.py --case big     # 100k files at 0.1% only
"""

import argparse
import concurrent.futures
import datetime
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import settings  # noqa: E402
from common import filelists  # noqa: E402
from common.trees import link_copy  # noqa: E402
from tests.support.processes import DEFAULT_JOIN_TOKEN, start_master, start_slave, wait_for  # noqa: E402
from tests.support.rsyncd import RsyncDaemon  # noqa: E402

FINAL = {"success", "partial", "failed", "interrupted", "cancelled"}
# --case: (files, fraction changed per run) pairs; one tree per file count serves its fractions.
CASES = {"p1": [(1000, 0.01), (10000, 0.01), (100000, 0.01), (100000, 0.001)],
         "big": [(100000, 0.001)]}


# --filelist: the upstream publishes a list of its tree after every change (Fedora's fullfiletimelist),
# and the project pulls by it (upstream_filelist).
FILELIST = []
LIST_NAME = "fullfiletimelist-bench"


def publish(root):
    """Rewrite the upstream's list after a change, as Fedora's create-filelist runs after each push;
    returns the paths it changed (the list), none without --filelist."""
    if not FILELIST:
        return []
    filelists.write(root, root / LIST_NAME)
    return [LIST_NAME]


def build_tree(root, files):
    """``files`` small files, 100 per directory."""
    rng = random.Random(1)
    for index in range(files):
        directory = root / f"d{index // 100:05d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{index:07d}.dat").write_bytes(rng.randbytes(256))
    publish(root)


def change_files(root, files, fraction, generation):
    """Rewrite ``fraction`` of the files (other content, new mtime); returns their relative paths."""
    count = max(1, int(files * fraction))
    rng = random.Random(generation)
    changed = []
    for index in rng.sample(range(files), count):
        relative = f"d{index // 100:05d}/f{index:07d}.dat"
        (root / relative).write_bytes(rng.randbytes(256))
        os.utime(root / relative, (1_800_000_000 + generation, 1_800_000_000 + generation))
        changed.append(relative)
    return changed + publish(root)


BARE_EXTRA = []   # --bare-sockopts: the socket option ours gives rsync (common.rsync.DAEMON_OPTIONS)


def rsync(source, destination, files_from=None):
    argv = ["rsync", "-aH", "--delete-delay", "--delay-updates", "--safe-links", "--numeric-ids", *BARE_EXTRA]
    if files_from is not None:
        argv.append(f"--files-from={files_from}")
    subprocess.run([*argv, "--", f"{source}/", f"{destination}/"], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)


def settle():
    """Write back every dirty page before a timed leg: the leg before it (the other side's, or the
    change just made upstream) leaves tens of thousands of dirty inodes and pages at 100k files, and
    their writeback would otherwise land in whichever leg comes next."""
    os.sync()


def bare_round(upstream_url, master_dir, slave_dirs, files_from=None):
    """Upstream -> master, then master -> every slave in parallel; returns (seconds, seconds of the fan-out)."""
    started = time.perf_counter()
    rsync(upstream_url, master_dir, files_from)
    pulled = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(slave_dirs)) as pool:
        list(pool.map(lambda target: rsync(master_dir, target, files_from), slave_dirs))
    ended = time.perf_counter()
    return ended - started, ended - pulled


# The timers a deployment runs with, not the tests' fast ones (start_master and start_slave poll ten
# times as often and heartbeat every 0.3 s: 13 heartbeats a second from 4 slaves, and the executor's
# 10 polls a second, cost the master about 4% of a core while idle, taken from the pulls being timed).
PRODUCTION_MASTER = {f"MIRRORSYNC_{name}": str(getattr(settings, name))
                     for name in ("POLL_INTERVAL", "RECONCILE_INTERVAL", "HEARTBEAT_TIMEOUT")}
PRODUCTION_SLAVE = {f"MIRRORSYNC_{name}": str(getattr(settings, name))
                    for name in ("HEARTBEAT_INTERVAL", "REPORT_RETRY_MAX")}


class Ours:
    def __init__(self, root, upstream_url, slaves):
        # INFO: the move to distributing, the end of the pull, is read from the log.
        self.master = start_master(root / "master", extra_env={
            **PRODUCTION_MASTER, "MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN, "MIRRORSYNC_LOG_LEVEL": "INFO"},
            log_dir=root / "logs")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.master.admin_token}"
        self.slaves = [start_slave(root / f"s{i}", f"s{i}", self.master.url, log_dir=root / "logs",
                                   extra_env={**PRODUCTION_SLAVE, "MIRRORSYNC_LOG_LEVEL": "WARNING"})
                       for i in range(slaves)]
        wait_for(lambda: len([s for s in self.session.get(self.master.url + "/api/v1/slaves").json()
                              if s["state"] == "online"]) == slaves, 60, message="slaves online")
        project = {"name": "bench", "upstream": upstream_url}
        if FILELIST:
            project["upstream_filelist"] = LIST_NAME
        self.session.post(self.master.url + "/api/v1/projects", json=project).raise_for_status()

    def sync(self):
        """Trigger -> every slave reported; returns (seconds, {phase: seconds}) with the phases of ``phases``.

        The seconds are the master's own: the run's ``created_at`` (the trigger taken) to its
        ``finished_at`` (the last slave's report recorded). The end is read from the master's log,
        whose new bytes this process looks at every 10 ms: asking the API instead would load the very
        process being timed (the API and the pulls share it), about 10 ms of its time a question.
        """
        with open(self.master.log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            run = self.session.post(self.master.url + "/api/v1/projects/bench/syncs").json()
            ended = re.compile(rb"run %d of bench: \w+ -> (%s)\b" % (run["id"], "|".join(FINAL).encode()))
            seen = b""
            while not ended.search(seen):
                time.sleep(0.01)
                seen = seen[-200:] + log.read()
        run = self.session.get(f"{self.master.url}/api/v1/runs/{run['id']}").json()
        assert run["state"] == "success", run
        created, finished = (datetime.datetime.fromisoformat(run[key]) for key in ("created_at", "finished_at"))
        return (finished - created).total_seconds(), self.phases(run)

    def phases(self, run):
        """Where a run's time went, from its timestamps and the master's log line at the end of its pull:
        start (queued -> pulling), pull (pulling -> tree sealed, orders about to go out), fan-out
        (-> the run's end, every slave reported)."""
        created, started, finished = (datetime.datetime.fromisoformat(run[key])
                                      for key in ("created_at", "started_at", "finished_at"))
        if run.get("skipped"):   # an unchanged upstream_filelist: no pull, no order
            return {"start ours": (started - created).total_seconds(),
                    "pull ours": (finished - started).total_seconds(), "fan-out ours": 0.0}
        moved = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: "
                          + re.escape(f"run {run['id']} of bench: syncing -> distributing"), self.master.log_text())
        if moved is None:
            raise RuntimeError(f"no move to distributing of run {run['id']} in {self.master.log_path}")
        pull_end = datetime.datetime.strptime(moved.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone()
        return {"start ours": (started - created).total_seconds(), "pull ours": (pull_end - started).total_seconds(),
                "fan-out ours": (finished - pull_end).total_seconds()}

    def stop(self):
        for slave in self.slaves:
            slave.stop()
        self.master.stop()


def disk_usage(*paths):
    """Bytes of disk blocks under ``paths``, each inode once (hard links are free)."""
    seen, total = set(), 0
    for path in paths:
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def snapshot_cost(data_dir):
    """Extra disk of the newest snapshot over the one before, as a fraction of one tree.

    The master prunes a snapshot once no slave needs it (at its next sweep), so this rebuilds the
    pair the way a pull does: the newest tree and a hard-link copy of it, changed like the runs were.
    Returns (the live tree's bytes, those plus its manifest and change list)."""
    snapshots = Path(data_dir) / ".snapshots" / "bench"
    live = (Path(data_dir) / "bench").resolve()
    meta = [snapshots / f".manifest-{live.name}", snapshots / f".changes-{live.name}"]
    return disk_usage(live), disk_usage(live, *(p for p in meta if p.exists()))


def run_case(files, fractions, slaves, repeat, scratch):
    """One tree of ``files`` files; for each fraction, the medians of ``repeat`` runs changing that much."""
    if scratch:
        os.makedirs(scratch, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"fanout-{files}-", dir=scratch))
    tree = root / "upstream"
    build_tree(tree, files)
    results = []
    with RsyncDaemon(root / "rsyncd", {"tree": tree}) as daemon:
        ours = Ours(root, daemon.url("tree"), slaves)
        try:
            ours.sync()  # every slave holds the tree
            bare_master, bare_slaves = root / "bare-master", [root / f"bare-{i}" for i in range(slaves)]
            bare_round(daemon.url("tree"), bare_master, bare_slaves)
            one_tree = disk_usage(bare_master)
            noop = {"noop-ours": [], "noop-bare": []}
            for _ in range(repeat):
                settle()
                noop["noop-ours"].append(ours.sync()[0])
                settle()
                noop["noop-bare"].append(bare_round(daemon.url("tree"), bare_master, bare_slaves)[0])
            for number, fraction in enumerate(fractions):
                samples = {"ours": [], "bare": [], "changed-only": [], "start ours": [], "pull ours": [],
                           "fan-out ours": [], "pull bare": [], "fan-out bare": [], "fan-out changed": [],
                           "pair ratio": []}
                for generation in range(100 * number + 1, 100 * number + repeat + 1):
                    change_files(tree, files, fraction, generation)
                    settle()
                    seconds, phases = ours.sync()
                    samples["ours"].append(seconds)
                    for phase, value in phases.items():
                        samples[phase].append(value)
                    settle()
                    seconds, fan_out = bare_round(daemon.url("tree"), bare_master, bare_slaves)
                    samples["bare"].append(seconds)
                    samples["pull bare"].append(seconds - fan_out)
                    samples["fan-out bare"].append(fan_out)
                    # The files-from baseline gets a change of its own, listed exactly; bare master and
                    # slaves hold the tree before it, so only the listed files differ.
                    listing = root / "changed.txt"
                    listing.write_text("\n".join(change_files(tree, files, fraction, generation + 1000)) + "\n")
                    settle()
                    seconds, fan_out = bare_round(daemon.url("tree"), bare_master, bare_slaves, listing)
                    samples["changed-only"].append(seconds)
                    # Ours and the changed-files round of one generation run seconds apart, on the same
                    # machine state: their ratio moves less than the ratio of the two medians.
                    samples["pair ratio"].append(samples["ours"][-1] / seconds)
                    samples["fan-out changed"].append(fan_out)
                    ours.sync()  # the slaves catch up with the files-from generation, untimed
                snapshots = ours.master.data_dir / ".snapshots" / "bench"
                kept = [p for p in snapshots.iterdir() if not p.name.startswith(".")]
                # One more snapshot after one run's change, as the master makes it: a hard-link copy
                # of the tree before, then the pull into it in place.
                change_files(tree, files, fraction, 5000 + number)
                pair = root / "pair"
                shutil.rmtree(pair, ignore_errors=True)
                pair.mkdir()
                link_copy(bare_master, pair)
                subprocess.run(["rsync", "-aH", "--delete", "--", f"{tree}/", f"{pair}/"], check=True,
                               stdout=subprocess.DEVNULL)
                extra = disk_usage(bare_master, pair) - disk_usage(bare_master)
                live, with_meta = snapshot_cost(ours.master.data_dir)
                median = {name: statistics.median(values) for name, values in {**samples, **noop}.items()}
                results.append((fraction, median, {"snapshots kept": len(kept), "one tree": one_tree,
                                                   "extra": extra, "manifests": with_meta - live,
                                                   "pairs": samples["pair ratio"]}))
                if number + 1 < len(fractions):
                    bare_round(daemon.url("tree"), bare_master, bare_slaves)  # bare holds the 5000 change too
                    ours.sync()
        finally:
            ours.stop()
    shutil.rmtree(root, ignore_errors=True)
    return results


def cases(args):
    """[(files, [fractions])] in the order given."""
    pairs = CASES[args.case] if args.case else [(int(n), args.change) for n in args.files.split(",")]
    grouped = {}
    for files, fraction in pairs:
        grouped.setdefault(files, []).append(fraction)
    return list(grouped.items())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="1000,10000")
    parser.add_argument("--change", type=float, default=0.01)
    parser.add_argument("--case", choices=sorted(CASES), default=None,
                        help="p1: 1k, 10k, 100k files at 1%% and 100k at 0.1%%; big: 100k at 0.1%% "
                             "(instead of --files and --change)")
    parser.add_argument("--slaves", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scratch", default=None, help="where the trees go (default: the system temp dir)")
    parser.add_argument("--filelist", action="store_true",
                        help="the upstream publishes a fullfiletimelist after each change and the project pulls "
                             "by it (upstream_filelist); the changed-files baseline carries the list too")
    parser.add_argument("--bare-sockopts", action="store_true",
                        help="bare rsync with --sockopts=TCP_NODELAY too, as ours pulls from a daemon")
    args = parser.parse_args()
    if args.bare_sockopts:
        BARE_EXTRA.append("--sockopts=TCP_NODELAY")
    if args.filelist:
        FILELIST.append(LIST_NAME)
    print(f"{args.slaves} slaves, median of {args.repeat}; fan-out: end of the master's pull -> every slave done"
          + ("; bare with --sockopts=TCP_NODELAY" if args.bare_sockopts else "")
          + (f"; upstream_filelist {LIST_NAME}" if args.filelist else ""))
    print(f"{'files':>8} {'change':>6} {'ours':>8} {'bare':>8} {'ratio':>6} {'changed-only':>13} {'vs changed':>10} "
          f"{'fan-out ours':>12} {'bare':>7} {'changed':>8} "
          f"{'no-op ours':>10} {'no-op bare':>10} {'disk extra':>10}")
    split = []
    for files, fractions in cases(args):
        for fraction, median, disk in run_case(files, fractions, args.slaves, args.repeat, args.scratch):
            split.append((files, fraction, median, disk["pairs"]))
            extra = (disk["extra"] + disk["manifests"]) / max(1, disk["one tree"])
            print(f"{files:>8} {fraction:>6.1%} {median['ours']:>7.2f}s {median['bare']:>7.2f}s "
                  f"{median['ours'] / median['bare']:>6.2f} "
                  f"{median['changed-only']:>12.2f}s {median['ours'] / median['changed-only']:>9.2f}x "
                  f"{median['fan-out ours']:>11.2f}s {median['fan-out bare']:>6.2f}s "
                  f"{median['fan-out changed']:>7.2f}s "
                  f"{median['noop-ours']:>9.2f}s {median['noop-bare']:>9.2f}s {extra:>9.1%}"
                  f"  ({disk['snapshots kept']} snapshots kept)", flush=True)
    print("where the time goes (ours: run created_at -> started_at -> end of pull -> finished_at; "
          "bare: upstream -> master, master -> slaves)")
    print(f"{'files':>8} {'change':>6} {'start ours':>10} {'pull ours':>10} {'pull bare':>10} "
          f"{'fan-out ours':>12} {'fan-out bare':>12}")
    for files, fraction, median, _ in split:
        print(f"{files:>8} {fraction:>6.1%} {median['start ours']:>9.2f}s {median['pull ours']:>9.2f}s "
              f"{median['pull bare']:>9.2f}s {median['fan-out ours']:>11.2f}s {median['fan-out bare']:>11.2f}s")
    print("ours / changed-only of each generation (the two rounds seconds apart), in the order run")
    for files, fraction, median, pairs in split:
        print(f"{files:>8} {fraction:>6.1%}  median {median['pair ratio']:.2f}x  "
              + " ".join(f"{ratio:.2f}x" for ratio in pairs))


if __name__ == "__main__":
    main()
