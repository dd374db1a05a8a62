"""Fan-out side by side with bare rsync: trigger -> every slave published, and what snapshots cost on disk.

Real processes on loopback: an upstream rsync daemon, ``python -m master`` and
N slaves (``python -m slave``). For each tree size it pulls the tree once (so
every slave holds it), changes ``--change`` of its files upstream, then times
a trigger until every slave reported success. The baseline does the same work
with bare rsync: upstream -> a master directory, then that directory -> every
slave directory in parallel (full tree rsyncs, as a cron script would), and,
for the changed-files line, the same with ``--files-from`` listing only the
changed files. Each case is the median of ``--repeat`` alternated pairs.

    .venv/bin/python bench/fanout.py [--files 1000,10000] [--change 0.01] [--slaves 4] [--repeat 3]
"""

import argparse
import concurrent.futures
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.processes import DEFAULT_JOIN_TOKEN, start_master, start_slave, wait_for  # noqa: E402
from tests.support.rsyncd import RsyncDaemon  # noqa: E402

FINAL = {"success", "partial", "failed", "interrupted", "cancelled"}


def build_tree(root, files):
    """``files`` small files, 100 per directory."""
    rng = random.Random(1)
    for index in range(files):
        directory = root / f"d{index // 100:05d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{index:07d}.dat").write_bytes(rng.randbytes(256))


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
    return changed


def rsync(source, destination, files_from=None):
    argv = ["rsync", "-aH", "--delete-delay", "--delay-updates", "--safe-links", "--numeric-ids"]
    if files_from is not None:
        argv.append(f"--files-from={files_from}")
    subprocess.run([*argv, "--", f"{source}/", f"{destination}/"], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)


def bare_round(upstream_url, master_dir, slave_dirs, files_from=None):
    """Upstream -> master, then master -> every slave in parallel; returns seconds."""
    started = time.perf_counter()
    rsync(upstream_url, master_dir, files_from)
    with concurrent.futures.ThreadPoolExecutor(len(slave_dirs)) as pool:
        list(pool.map(lambda target: rsync(master_dir, target, files_from), slave_dirs))
    return time.perf_counter() - started


class Ours:
    def __init__(self, root, upstream_url, slaves):
        self.master = start_master(root / "master", extra_env={
            "MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN, "MIRRORSYNC_LOG_LEVEL": "WARNING",
            "MIRRORSYNC_HEARTBEAT_TIMEOUT": "30"}, log_dir=root / "logs")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {self.master.admin_token}"
        self.slaves = [start_slave(root / f"s{i}", f"s{i}", self.master.url, log_dir=root / "logs",
                                   extra_env={"MIRRORSYNC_LOG_LEVEL": "WARNING"}) for i in range(slaves)]
        wait_for(lambda: len([s for s in self.session.get(self.master.url + "/api/v1/slaves").json()
                              if s["state"] == "online"]) == slaves, 60, message="slaves online")
        self.session.post(self.master.url + "/api/v1/projects",
                          json={"name": "bench", "upstream": upstream_url}).raise_for_status()

    def sync(self):
        """Trigger -> every slave reported; returns (seconds, run)."""
        started = time.perf_counter()
        run = self.session.post(self.master.url + "/api/v1/projects/bench/syncs").json()
        while True:
            run = self.session.get(f"{self.master.url}/api/v1/runs/{run['id']}").json()
            if run["state"] in FINAL:
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        assert run["state"] == "success", run
        return elapsed, run

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

    The master prunes a snapshot as soon as no slave needs it, so this rebuilds the pair the
    way a pull does: the newest tree and a --link-dest copy of it, changed like the runs were."""
    snapshots = Path(data_dir) / ".snapshots" / "bench"
    [live] = [p for p in snapshots.iterdir() if not p.name.startswith(".")]
    return disk_usage(live), disk_usage(live, *(p for p in snapshots.iterdir() if p.name.startswith(".")))


def run_case(files, fraction, slaves, repeat, scratch):
    root = Path(tempfile.mkdtemp(prefix=f"fanout-{files}-", dir=scratch))
    tree = root / "upstream"
    build_tree(tree, files)
    with RsyncDaemon(root / "rsyncd", {"tree": tree}) as daemon:
        ours = Ours(root, daemon.url("tree"), slaves)
        try:
            ours.sync()  # every slave holds the tree
            bare_master, bare_slaves = root / "bare-master", [root / f"bare-{i}" for i in range(slaves)]
            bare_round(daemon.url("tree"), bare_master, bare_slaves)
            samples = {"ours": [], "bare": [], "changed-only": [], "noop-ours": [], "noop-bare": []}
            one_tree = disk_usage(bare_master)
            for generation in range(1, repeat + 1):
                changed = change_files(tree, files, fraction, generation)
                listing = root / "changed.txt"
                listing.write_text("\n".join(changed) + "\n")
                seconds, run = ours.sync()
                samples["ours"].append(seconds)
                samples["bare"].append(bare_round(daemon.url("tree"), bare_master, bare_slaves))
                change_files(tree, files, fraction, generation + 1000)  # the files-from baseline moves too
                samples["changed-only"].append(bare_round(daemon.url("tree"), bare_master, bare_slaves, listing))
                ours.sync()  # the slaves catch up with the files-from generation, untimed
            for _ in range(repeat):
                samples["noop-ours"].append(ours.sync()[0])
                samples["noop-bare"].append(bare_round(daemon.url("tree"), bare_master, bare_slaves))
            snapshots = ours.master.data_dir / ".snapshots" / "bench"
            kept = [p for p in snapshots.iterdir() if not p.name.startswith(".")]
            # One more snapshot after one run's change: a --link-dest copy, as the master makes.
            change_files(tree, files, fraction, 5000)
            pair = root / "pair"
            subprocess.run(["rsync", "-aH", f"--link-dest={bare_master}", "--", f"{tree}/", f"{pair}/"], check=True,
                           stdout=subprocess.DEVNULL)
            extra = disk_usage(bare_master, pair) - disk_usage(bare_master)
            live, with_meta = snapshot_cost(ours.master.data_dir)
        finally:
            ours.stop()
    shutil.rmtree(root, ignore_errors=True)
    median = {name: statistics.median(values) for name, values in samples.items()}
    return median, {"snapshots kept": len(kept), "one tree": one_tree, "extra": extra,
                    "manifests": with_meta - live}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="1000,10000")
    parser.add_argument("--change", type=float, default=0.01)
    parser.add_argument("--slaves", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scratch", default=None, help="where the trees go (default: the system temp dir)")
    args = parser.parse_args()
    print(f"{args.slaves} slaves, {args.change:.2%} of the files changed per run, median of {args.repeat}")
    print(f"{'files':>8} {'ours':>8} {'bare':>8} {'ratio':>6} {'changed-only':>13} {'vs changed':>10} "
          f"{'no-op ours':>10} {'no-op bare':>10} {'disk extra':>10}")
    for files in (int(n) for n in args.files.split(",")):
        median, disk = run_case(files, args.change, args.slaves, args.repeat, args.scratch)
        extra = (disk["extra"] + disk["manifests"]) / max(1, disk["one tree"])
        print(f"{files:>8} {median['ours']:>7.2f}s {median['bare']:>7.2f}s {median['ours'] / median['bare']:>6.2f} "
              f"{median['changed-only']:>12.2f}s {median['ours'] / median['changed-only']:>9.2f}x "
              f"{median['noop-ours']:>9.2f}s {median['noop-bare']:>9.2f}s {extra:>9.1%}"
              f"  ({disk['snapshots kept']} snapshots kept)")


if __name__ == "__main__":
    main()
