"""The master's snapshots on a real file system: each good pull a whole tree, named by its run."""

import os

import pytest

from common import changes, digests
from master import snapshots


def pull(staging, files):
    """What rsync does into a staging tree, reduced to writing ``files`` (path -> content)."""
    for path, content in files.items():
        full = os.path.join(staging.destination, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as out:
            out.write(content)


def test_a_committed_pull_becomes_the_tree_data_dir_points_at(tmp_path):
    data = str(tmp_path)
    first = snapshots.prepare(data, "debian", 1)
    assert first.basis is None and not any(o.startswith("--link-dest") for o in first.options)
    pull(first, {"a.txt": "one"})
    sealed = snapshots.commit(first)
    assert os.readlink(tmp_path / "debian") == ".snapshots/debian/1"
    assert (tmp_path / "debian" / "a.txt").read_text() == "one"
    assert sealed.digest.startswith("sha256:") and sealed.changes is None

    second = snapshots.prepare(data, "debian", 2)
    assert second.basis == "1"
    assert f"--link-dest={tmp_path / '.snapshots' / 'debian' / '1'}" in second.options
    pull(second, {"a.txt": "one", "b.txt": "two"})
    os.utime(os.path.join(second.destination, "a.txt"), (os.stat(tmp_path / "debian" / "a.txt").st_mtime,) * 2)
    sealed = snapshots.commit(second)
    assert os.readlink(tmp_path / "debian") == ".snapshots/debian/2"
    # The root is listed too when its time moved (to the second).
    assert set(sealed.changes.changed) - {"."} == {"b.txt"} and sealed.changes.created == 1
    assert (tmp_path / ".snapshots" / "debian" / "1" / "a.txt").read_text() == "one", "run 1's tree stays"


def test_a_pull_that_dies_leaves_the_previous_tree_and_nothing_else(tmp_path):
    data = str(tmp_path)
    first = snapshots.prepare(data, "debian", 1)
    pull(first, {"a.txt": "one"})
    snapshots.commit(first)
    doomed = snapshots.prepare(data, "debian", 2)
    pull(doomed, {"a.txt": "half"})
    snapshots.abort(doomed)
    assert os.readlink(tmp_path / "debian") == ".snapshots/debian/1"
    assert sorted(os.listdir(tmp_path / ".snapshots" / "debian")) == [".manifest-1", "1"]


def test_snapshots_no_one_needs_are_pruned_and_the_live_one_never(tmp_path):
    data = str(tmp_path)
    for run_id in (1, 2, 3, 4):
        staging = snapshots.prepare(data, "debian", run_id)
        pull(staging, {"a.txt": str(run_id)})
        snapshots.commit(staging)
    assert snapshots.prune(data, "debian", keep={"2"}) == ["1", "3"]
    assert snapshots.names(data, "debian") == ["2", "4"]
    assert not (tmp_path / ".snapshots" / "debian" / ".manifest-1").exists()
    assert not (tmp_path / ".snapshots" / "debian" / ".changes-3").exists()


def test_a_tree_pulled_in_place_is_adopted_as_the_first_snapshot(tmp_path):
    (tmp_path / "debian" / "pool").mkdir(parents=True)
    (tmp_path / "debian" / "pool" / "a.deb").write_text("deb")
    assert snapshots.adopt_in_place_tree(str(tmp_path), "debian", "7") == "7"
    assert os.readlink(tmp_path / "debian") == ".snapshots/debian/7"
    assert (tmp_path / "debian" / "pool" / "a.deb").read_text() == "deb"
    assert snapshots.adopt_in_place_tree(str(tmp_path), "debian", "7") is None, "only once"
    staging = snapshots.prepare(str(tmp_path), "debian", 8)
    assert staging.basis == "7"


def test_something_foreign_at_the_project_path_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink("elsewhere", tmp_path / "debian")
    with pytest.raises(snapshots.SnapshotError):
        snapshots.prepare(str(tmp_path), "debian", 1)


def build(root, spec):
    for path, kind in spec.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if kind == "dir":
            os.makedirs(full, exist_ok=True)
        elif kind.startswith("->"):
            os.symlink(kind[2:], full)
        else:
            with open(full, "w") as out:
                out.write(kind)
            os.utime(full, (1_700_000_000, 1_700_000_000))


def test_the_digest_sees_names_kinds_sizes_times_modes_links_and_hard_links(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for root in (one, two):
        build(root, {"a/x.txt": "x", "b": "->a/x.txt", "c.txt": "c"})
        os.link(root / "c.txt", root / "d.txt")
    assert digests.tree_digest(one)[0] == digests.tree_digest(two)[0]
    changes_to_make = [
        lambda root: os.chmod(root / "c.txt", 0o600),
        lambda root: os.utime(root / "a" / "x.txt", (1, 1)),
        lambda root: (os.unlink(root / "b"), os.symlink("c.txt", root / "b")),
        lambda root: (os.unlink(root / "d.txt"), build(root, {"d.txt": "c"})),
    ]
    for change in changes_to_make:
        before = digests.tree_digest(two)
        change(two)
        after = digests.tree_digest(two)
        assert after[0] != before[0]
        assert digests.first_differences(before[1], after[1])


def test_a_change_list_names_what_to_transfer_and_what_to_delete(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    build(old, {"keep.txt": "k", "dir/inner.txt": "i", "gone/deep/x": "x", "moved.txt": "m"})
    build(new, {"keep.txt": "k", "dir": "now a file", "renamed.txt": "m"})
    os.utime(new / "keep.txt", (1_700_000_000, 1_700_000_000))
    os.utime(old / "keep.txt", (1_700_000_000, 1_700_000_000))
    change_list = changes.between(digests.manifest(old), digests.manifest(new))
    assert set(change_list.changed) == {"dir", "renamed.txt"}
    # Children first, and the directory that became a file is deleted before it arrives again.
    assert change_list.deleted == ("moved.txt", "gone/deep/x", "gone/deep", "gone", "dir/inner.txt", "dir")
