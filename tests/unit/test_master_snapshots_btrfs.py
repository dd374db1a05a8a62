"""The master's snapshots as btrfs subvolumes, on a real btrfs file system of the test's own."""

import os

import pytest

from common import digests
from master import btrfs, snapshots
from tests.support import btrfs as btrfs_mount
from tests.unit.test_master_snapshots import pull


@pytest.fixture(scope="module")
def mount_point(tmp_path_factory):
    with btrfs_mount.mounted(str(tmp_path_factory.mktemp("btrfs"))) as point:
        yield point


@pytest.fixture
def data(mount_point, request):
    path = os.path.join(mount_point, request.node.name.replace("[", "-").replace("]", ""))
    os.makedirs(path)
    return path


def stage(data, run_id, method=snapshots.AUTO, project="debian"):
    staging = snapshots.prepare(data, project, run_id, method)
    snapshots.fill(staging)
    return staging


def first_tree(data, method=snapshots.AUTO):
    """Run 1 of ``debian``: files, a hard link, a symlink with a time of its own, a read-only directory."""
    staging = stage(data, 1, method)
    pull(staging, {"pool/a.deb": "deb", "pool/b.deb": "b", "readonly/r.txt": "r"})
    at = staging.destination
    os.link(os.path.join(at, "pool/a.deb"), os.path.join(at, "pool/a-again.deb"))
    os.symlink("pool/a.deb", os.path.join(at, "latest"))
    os.utime(os.path.join(at, "latest"), (1_500_000_000, 1_500_000_000), follow_symlinks=False)
    os.chmod(os.path.join(at, "readonly"), 0o555)
    os.utime(os.path.join(at, "readonly"), (1_600_000_000, 1_600_000_000))
    snapshots.commit(staging)
    return os.path.join(data, ".snapshots", "debian", "1")


def test_each_tree_is_a_subvolume_and_the_next_starts_as_its_snapshot(data, caplog):
    old = first_tree(data)
    assert btrfs.is_subvolume(old), "the first tree is a subvolume of its own"
    before = digests.manifest(old)

    with caplog.at_level("INFO"):
        second = stage(data, 2)
    assert second.start == snapshots.SNAPSHOT and "run 2's tree starts as a btrfs snapshot of 1" in caplog.text
    new = second.destination
    assert btrfs.is_subvolume(new)
    assert digests.manifest(new) == before
    # A snapshot, not hard links: the same inodes on another subvolume, each file linked once.
    mine, theirs = os.stat(os.path.join(new, "pool/b.deb")), os.stat(os.path.join(old, "pool/b.deb"))
    assert mine.st_ino == theirs.st_ino and mine.st_dev != theirs.st_dev and mine.st_nlink == 1

    # What rsync changes in place (a mode, a time) stays in the new tree without any copy.
    os.chmod(os.path.join(new, "pool/b.deb"), 0o600)
    os.utime(os.path.join(new, "pool/b.deb"), (1_700_000_000, 1_700_000_000))
    pull(second, {"pool/c.deb": "c"})
    sealed = snapshots.commit(second)
    assert digests.manifest(old) == before, "run 1's tree is as it was"
    live = os.path.join(data, "debian")
    assert os.readlink(live) == ".snapshots/debian/2" and btrfs.is_subvolume(os.path.realpath(live))
    assert sealed.digest == digests.digest(digests.manifest(live))
    assert set(sealed.changes.changed) >= {"pool/b.deb", "pool/c.deb"}
    assert os.stat(os.path.join(live, "pool/b.deb")).st_mode & 0o777 == 0o600


def test_a_dead_pull_and_pruned_snapshots_leave_no_subvolume_behind(data, mount_point):
    first_tree(data)
    second = stage(data, 2)
    pull(second, {"pool/c.deb": "c"})
    snapshots.commit(second)
    doomed = stage(data, 3)
    pull(doomed, {"pool/a.deb": "half"})
    snapshots.abort(doomed)
    assert not os.path.lexists(doomed.destination)
    assert snapshots.prune(data, "debian", keep=set()) == ["1"], "no spare is kept: a snapshot costs nothing"
    assert btrfs_mount.subvolumes(mount_point, data) == [".snapshots/debian/2"]
    assert open(os.path.join(data, "debian", "pool/a.deb")).read() == "deb"

    # A staged tree a crash left is deleted when the same run is staged again, and at start-up.
    left = snapshots.prepare(data, "debian", 4)
    snapshots.fill(left)
    assert snapshots.prepare(data, "debian", 4).start == snapshots.SNAPSHOT
    assert snapshots.remove_leftovers(data, "debian") == 1
    assert btrfs_mount.subvolumes(mount_point, data) == [".snapshots/debian/2"]


def test_a_tree_of_another_kind_before_is_copied_with_every_attribute(data, caplog):
    """The first pull after moving to btrfs starts from a tree of hard links, which cannot be
    snapshotted (nor linked to from a subvolume): a copy, walked at its commit. And back again."""
    old = first_tree(data, snapshots.HARDLINKS)
    assert not btrfs.is_subvolume(old)
    before = digests.manifest(old)
    with caplog.at_level("INFO"):
        second = stage(data, 2)
    assert second.start == snapshots.COPY and second.subvolume and btrfs.is_subvolume(second.destination)
    assert "run 2's tree starts as a copy of 1, which is not a btrfs subvolume" in caplog.text
    assert digests.manifest(second.destination) == before
    pull(second, {"pool/c.deb": "c"})
    # Even given what rsync itemized, a copy's tree is walked: none of its inodes are the previous tree's.
    sealed = snapshots.commit(second, itemized=({"pool/c.deb"}, set(), False))
    assert "described from the" not in caplog.text
    assert sealed.digest == digests.digest(digests.manifest(os.path.join(data, "debian")))
    assert digests.manifest(old) == before

    third = stage(data, 3, snapshots.HARDLINKS)
    assert third.start == snapshots.COPY and not third.subvolume and not btrfs.is_subvolume(third.destination)
    assert digests.manifest(third.destination) == digests.manifest(os.path.join(data, "debian"))
    snapshots.commit(third)
    assert stage(data, 4, snapshots.HARDLINKS).start == snapshots.LINKS
