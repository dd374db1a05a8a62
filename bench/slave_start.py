"""A slave's start with many published trees: watching them again and looking for what changed.

When a slave starts it watches every tree it publishes again and looks at each entry's ctime for
what changed while no slave ran (README, "How it works" step 5). This times that work, in one
process with the slave's real SyncWorker and inotify, for ``--projects`` trees of ``--files`` files
each (100 files per directory), already published and noted as a pull leaves them: from taking the
role that runs pulls to every look done, and the inotify watches it then holds.

    .venv/bin/python bench/slave_start.py [--projects 1000] [--files 100] [--scratch DIR]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import digests  # noqa: E402
from common.clock import SystemClock  # noqa: E402
from slave.credentials import Credentials, CredentialStore  # noqa: E402
from slave.syncs import SyncRecords, SyncWorker  # noqa: E402
from slave.transfers import PublishedTrees  # noqa: E402
from slave.watch import TreeWatch  # noqa: E402

IDENTITY = Credentials(name="bench", signing_key="bench-key", rsync_user="u", rsync_password="p",
                       master_url="http://127.0.0.1:1")


def publish(state_dir, public_dir, projects, files):
    published = PublishedTrees(state_dir)
    for number in range(projects):
        project = f"p{number:04}"
        tree = os.path.join(public_dir, project)
        for index in range(files):
            directory = os.path.join(tree, f"d{index // 100:03}")
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, f"f{index % 100:02}"), "w") as stream:
                stream.write("x" * 256)
        entries = digests.manifest(tree)
        order = {"rsyncd_host": "127.0.0.1", "rsyncd_port": 1, "timeout": 60, "snapshot": "1", "digest": None}
        published.remember(project, "1", digests.digest(entries), entries, order=order)
        published.note_pull(project, IDENTITY.enrollment, 1, True, digests.digest(entries))


class Outbox:
    def put(self, *args, **kwargs):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--scratch", default=None)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="slave-start-", dir=args.scratch)
    try:
        state_dir, public_dir = os.path.join(scratch, "state"), os.path.join(scratch, "public")
        os.makedirs(public_dir)
        os.makedirs(state_dir)
        CredentialStore(state_dir).save(IDENTITY)
        began = time.perf_counter()
        publish(state_dir, public_dir, args.projects, args.files)
        print(f"published {args.projects} trees of {args.files} files in {time.perf_counter() - began:.1f} s")
        os.sync()
        watch = TreeWatch()
        worker = SyncWorker(state_dir=state_dir, public_dir=public_dir, runner=None,
                            records=SyncRecords(os.path.join(state_dir, "syncs")), outbox=Outbox(),
                            credentials=CredentialStore(state_dir).load, clock=SystemClock(),
                            max_concurrent=4, log_retention=5, watch=watch, repair_delay=10)
        began = time.perf_counter()
        assert worker.claim()
        claimed = time.perf_counter() - began
        assert worker.wait_idle(600)
        done = time.perf_counter() - began
        watches = len(watch._dirs)
        print(f"claim {claimed * 1000:.0f} ms; every tree watched and looked at {done:.2f} s after it "
              f"({done / args.projects * 1000:.2f} ms a tree, {done / (args.projects * args.files) * 1e6:.1f} us a file); "
              f"{watches} inotify watches; edits found: {len(watch.due(0))}")
        worker.stop(5)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
