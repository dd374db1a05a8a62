"""What the master's upstream pull costs at a given tree size, piece by piece, against rsync alone.

The 100k-file case of ``fanout.py`` compares ours with a baseline whose upstream leg is told the
changed files (``--files-from``). The master cannot be: it learns what changed from rsync's scan of
upstream. This times that scan and the master's own rsync command line on one tree of ``--files``
files with ``--change`` of them changed before each timed pull, each timed alone, alternated:

- ``list``: ``rsync --list-only`` of the module through the upstream rsync daemon: the upstream's
  walk and its file list, which any client that does not know the change pays;
- ``ours``: the master's pull as it runs it (``common.rsync.build_command`` with the snapshot's
  options, progress on) into a hard-link copy of the tree before the change;
- ``ours, no --delete-delay``: the same without rsync's second look at each directory;
- ``changed files only``: bare ``rsync -aH --files-from`` of the changed files, the baseline's
  upstream leg.

    .venv/bin/python bench/upstream_scan.py [--files 100000] [--change 0.001] [--repeat 5] [--scratch DIR]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fanout import build_tree, change_files, rsync  # noqa: E402
from common.rsync import RsyncJob, build_command  # noqa: E402
from common.trees import link_copy  # noqa: E402
from master.snapshots import SNAPSHOT_OPTIONS  # noqa: E402
from tests.support.rsyncd import RsyncDaemon  # noqa: E402

def run(argv):
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def ours(source, destination, drop=()):
    argv = build_command(RsyncJob(source, str(destination), options=SNAPSHOT_OPTIONS), progress=True)
    run([word for word in argv if word not in drop])


def timed(leg):
    started = time.perf_counter()
    leg()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--change", type=float, default=0.001)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scratch", default=None, help="where the trees go (default: the system temp dir)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="upstream-scan-", dir=args.scratch))
    try:
        upstream, base, target = root / "upstream", root / "base", root / "target"
        build_tree(upstream, args.files)
        with RsyncDaemon(root / "rsyncd", {"tree": upstream}) as daemon:
            url = daemon.url("tree")
            rsync(url, base)
            listing = root / "changed.txt"
            legs = {   # the bare legs are fanout.py's own rsync
                "list": lambda: run(["rsync", "-rlpt", "--no-inc-recursive", "--list-only",
                                     "--sockopts=TCP_NODELAY", f"{url}/"]),
                "ours": lambda: ours(url, target),
                "ours, no --delete-delay": lambda: ours(url, target, drop=("--delete-delay",)),
                "changed files only": lambda: rsync(url, target, listing),
            }
            samples = {name: [] for name in legs}
            generation = 1
            for _ in range(args.repeat):
                for name, leg in legs.items():
                    shutil.rmtree(target, ignore_errors=True)
                    target.mkdir()
                    link_copy(base, target)   # the tree before the change, as a pull starts it
                    listing.write_text("\n".join(change_files(upstream, args.files, args.change, generation)) + "\n")
                    generation += 1
                    os.sync()
                    samples[name].append(timed(leg))
                    rsync(url, base)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.files} files, {args.change:.1%} changed before each pull; median of {args.repeat}, alternated")
    for name, values in samples.items():
        print(f"  {name:<26} {statistics.median(values) * 1000:>6.0f} ms   "
              + " ".join(f"{value * 1000:.0f}" for value in values))


if __name__ == "__main__":
    main()
