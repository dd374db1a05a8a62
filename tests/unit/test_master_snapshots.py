"""The master's snapshots on a real file system: each good pull a whole tree, named by its run."""

import os

import pytest

from common import changes, digests
from master import snapshots


def stage(data_dir, project, run_id):
    """A staged tree as a pull gets it: prepared, then started from the previous tree."""
    staging = snapshots.prepare(data_dir, project, run_id)
    snapshots.fill(staging)
    return staging


def pull(staging, files):
    """What rsync does into a staging tree, reduced to writing ``files`` (path -> content): each into a
    new file renamed over the old name, never into the file that is there."""
    for path, content in files.items():
        full = os.path.join(staging.destination, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full + ".new", "w") as out:
            out.write(content)
        os.replace(full + ".new", full)


def test_a_committed_pull_becomes_the_tree_data_dir_points_at(tmp_path):
    data = str(tmp_path)
    first = stage(data, "debian", 1)
    assert first.basis is None and not any(o.startswith("--link-dest") for o in first.options)
    pull(first, {"a.txt": "one"})
    sealed = snapshots.commit(first)
    assert os.readlink(tmp_path / "debian") == ".snapshots/debian/1"
    assert (tmp_path / "debian" / "a.txt").read_text() == "one"
    assert sealed.digest.startswith("sha256:") and sealed.changes is None

    second = stage(data, "debian", 2)
    assert second.basis == "1"
    assert not any(o.startswith("--link-dest") for o in second.options)
    # The new tree starts as hard links of the previous one: rsync then pulls into it in place.
    assert os.stat(os.path.join(second.destination, "a.txt")).st_ino == os.stat(tmp_path / "debian" / "a.txt").st_ino
    pull(second, {"a.txt": "one", "b.txt": "two"})
    os.utime(os.path.join(second.destination, "a.txt"), (os.stat(tmp_path / "debian" / "a.txt").st_mtime,) * 2)
    sealed = snapshots.commit(second)
    assert os.readlink(tmp_path / "debian") == ".snapshots/debian/2"
    # The root is listed too when its time moved (to the second).
    assert set(sealed.changes.changed) - {"."} == {"b.txt"} and sealed.changes.created == 1
    assert (tmp_path / ".snapshots" / "debian" / "1" / "a.txt").read_text() == "one", "run 1's tree stays"


def test_a_pull_that_dies_leaves_the_previous_tree_and_nothing_else(tmp_path):
    data = str(tmp_path)
    first = stage(data, "debian", 1)
    pull(first, {"a.txt": "one"})
    snapshots.commit(first)
    doomed = stage(data, "debian", 2)
    pull(doomed, {"a.txt": "half"})
    snapshots.abort(doomed)
    assert os.readlink(tmp_path / "debian") == ".snapshots/debian/1"
    assert sorted(os.listdir(tmp_path / ".snapshots" / "debian")) == [".manifest-1", "1"]


def test_snapshots_no_one_needs_are_pruned_and_the_live_one_never(tmp_path):
    data = str(tmp_path)
    for run_id in (1, 2, 3, 4):
        staging = stage(data, "debian", run_id)
        pull(staging, {"a.txt": str(run_id)})
        snapshots.commit(staging)
    # 3 stays too: run 5's tree starts from it, made into run 4's.
    assert snapshots.prune(data, "debian", keep={"2"}) == ["1"]
    assert snapshots.names(data, "debian") == ["2", "3", "4"]
    assert not (tmp_path / ".snapshots" / "debian" / ".manifest-1").exists()
    snapshots._committed.pop((data, "debian"))   # a restarted master knows no such step
    assert snapshots.prune(data, "debian", keep=()) == ["2", "3"]
    assert not (tmp_path / ".snapshots" / "debian" / ".changes-3").exists()


def test_a_tree_pulled_in_place_is_adopted_as_the_first_snapshot(tmp_path):
    (tmp_path / "debian" / "pool").mkdir(parents=True)
    (tmp_path / "debian" / "pool" / "a.deb").write_text("deb")
    assert snapshots.adopt_in_place_tree(str(tmp_path), "debian", "7") == "7"
    assert os.readlink(tmp_path / "debian") == ".snapshots/debian/7"
    assert (tmp_path / "debian" / "pool" / "a.deb").read_text() == "deb"
    assert snapshots.adopt_in_place_tree(str(tmp_path), "debian", "7") is None, "only once"
    staging = stage(str(tmp_path), "debian", 8)
    assert staging.basis == "7"


def test_something_foreign_at_the_project_path_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink("elsewhere", tmp_path / "debian")
    with pytest.raises(snapshots.SnapshotError):
        stage(str(tmp_path), "debian", 1)


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


def test_a_snapshot_being_committed_is_never_pruned(tmp_path, monkeypatch):
    """The scheduler's sweep may prune between a pull's rename and its link swap."""
    data = str(tmp_path)
    first = stage(data, "debian", 1)
    pull(first, {"a.txt": "one"})
    snapshots.commit(first)
    second = stage(data, "debian", 2)
    pull(second, {"a.txt": "two"})
    swap = snapshots._point_at
    pruned = []

    def prune_then_swap(*args):
        pruned.extend(snapshots.prune(data, "debian", keep=set()))  # the link still names run 1
        swap(*args)
    monkeypatch.setattr(snapshots, "_point_at", prune_then_swap)
    snapshots.commit(second)
    assert pruned == [] and snapshots.names(data, "debian") == ["1", "2"]
    assert snapshots.prune(data, "debian", keep=set()) == [], "run 3 starts from run 1's tree"
    snapshots._committed.pop((data, "debian"))   # as after a restart: nothing to start from
    assert snapshots.prune(data, "debian", keep=set()) == ["1"]


def test_nothing_is_pruned_before_the_first_pull_is_committed(tmp_path):
    data = str(tmp_path)
    staging = stage(data, "debian", 1)
    pull(staging, {"a.txt": "one"})
    os.rename(staging.destination, tmp_path / ".snapshots" / "debian" / "1")  # renamed, not yet linked
    assert snapshots.prune(data, "debian", keep=set()) == []


def test_a_new_tree_starts_as_hard_links_with_directories_and_symlinks_of_its_own(tmp_path):
    data = str(tmp_path)
    first = stage(data, "debian", 1)
    pull(first, {"pool/a.deb": "deb", "pool/b.deb": "b"})
    os.link(os.path.join(first.destination, "pool/a.deb"), os.path.join(first.destination, "pool/a-again.deb"))
    os.symlink("pool/a.deb", os.path.join(first.destination, "latest"))
    os.chmod(os.path.join(first.destination, "pool"), 0o555)
    os.utime(os.path.join(first.destination, "pool"), (1_600_000_000, 1_600_000_000))
    snapshots.commit(first)
    old = tmp_path / ".snapshots" / "debian" / "1"
    second = stage(data, "debian", 2)
    new = second.destination
    assert os.stat(os.path.join(new, "pool/a.deb")).st_ino == os.stat(old / "pool/a.deb").st_ino
    assert os.stat(os.path.join(new, "pool/a-again.deb")).st_ino == os.stat(old / "pool/a.deb").st_ino
    assert os.readlink(os.path.join(new, "latest")) == "pool/a.deb"
    assert os.lstat(os.path.join(new, "latest")).st_ino != os.lstat(old / "latest").st_ino
    pool = os.stat(os.path.join(new, "pool"))
    assert pool.st_ino != os.stat(old / "pool").st_ino
    assert (pool.st_mode & 0o777, int(pool.st_mtime)) == (0o555, 1_600_000_000)
    assert digests.manifest(new) == digests.manifest(old)


def test_attributes_rsync_changes_in_place_stay_off_the_previous_tree(tmp_path):
    """rsync changes a file's mode (or, with --checksum, its time) on the file that is there, which the
    new tree shares with the previous one: the commit gives each its own."""
    data = str(tmp_path)
    first = stage(data, "debian", 1)
    pull(first, {"pool/a.deb": "deb", "pool/b.deb": "b"})
    os.link(os.path.join(first.destination, "pool/a.deb"), os.path.join(first.destination, "pool/a-again.deb"))
    os.chmod(os.path.join(first.destination, "pool/a.deb"), 0o644)
    os.utime(os.path.join(first.destination, "pool/a.deb"), (1_600_000_000, 1_600_000_000))
    snapshots.commit(first)
    old = tmp_path / ".snapshots" / "debian" / "1"
    before = digests.manifest(old)
    second = stage(data, "debian", 2)
    new = second.destination
    pool_time = os.stat(os.path.join(new, "pool")).st_mtime_ns
    os.chmod(os.path.join(new, "pool/a.deb"), 0o600)           # as rsync does: on the shared file
    os.utime(os.path.join(new, "pool/a.deb"), (1_700_000_000, 1_700_000_000))
    os.utime(os.path.join(new, "pool"), ns=(pool_time, pool_time))
    sealed = snapshots.commit(second)
    assert digests.manifest(old) == before, "run 1's tree is as it was"
    assert sealed.digest == digests.digest(digests.manifest(tmp_path / "debian"))
    fresh = os.stat(tmp_path / "debian" / "pool/a.deb")
    assert (fresh.st_mode & 0o777, int(fresh.st_mtime)) == (0o600, 1_700_000_000)
    assert fresh.st_ino != os.stat(old / "pool/a.deb").st_ino
    assert os.stat(tmp_path / "debian" / "pool/a-again.deb").st_ino == fresh.st_ino, "the hard link stays one"
    assert os.stat(tmp_path / "debian" / "pool/b.deb").st_ino == os.stat(old / "pool/b.deb").st_ino
    assert os.stat(tmp_path / "debian" / "pool").st_mtime_ns == pool_time


def test_what_rsync_skipped_where_the_previous_tree_had_something_is_gone(tmp_path):
    """Upstream replaced swap/ by an unsafe symlink, which --safe-links skips: pulled in place, the old
    swap/ would stay; a tree pulled afresh has nothing there, and neither does this one."""
    data = str(tmp_path)
    first = stage(data, "debian", 1)
    pull(first, {"swap/x": "x", "fifo-was-here": "f", "keep": "k"})
    snapshots.commit(first)
    second = stage(data, "debian", 2)
    root_time = os.stat(second.destination).st_mtime_ns
    log_path = tmp_path / "run.log"
    log_path.write_text('$ rsync ...\nignoring unsafe symlink "swap" -> "/etc"\n'
                        'skipping non-regular file "fifo-was-here"\n'
                        'skipping non-regular file "../outside"\nkeep\n')
    (tmp_path / "outside").write_text("not ours")
    assert len(snapshots.drop_skipped(second, str(log_path))) == 2
    assert sorted(os.listdir(second.destination)) == ["keep"]
    assert os.stat(second.destination).st_mtime_ns == root_time
    assert (tmp_path / "outside").exists()
    assert (tmp_path / ".snapshots" / "debian" / "1" / "swap" / "x").exists(), "the previous tree keeps it"


def test_a_manifest_updated_from_a_change_list_is_the_manifest_a_walk_gives(tmp_path):
    """What a slave does after a changes-only pull instead of walking its tree."""
    import shutil
    root = tmp_path / "tree"
    build(root, {"a/x.txt": "x", "a/deep/y.txt": "y", "gone/z.txt": "z", "swap/w.txt": "w", "c.txt": "c",
                 "link": "->c.txt", "small.txt": "s"})
    os.link(root / "c.txt", root / "c-again.txt")
    before = digests.manifest(root)
    shutil.rmtree(root / "gone")                                   # a deleted directory
    shutil.rmtree(root / "swap")
    os.symlink("a", root / "swap")                                 # a directory replaced by a symlink
    os.rename(root / "small.txt", root / "small-renamed.txt")      # a rename
    os.unlink(root / "c-again.txt")                                # a hard link undone...
    os.link(root / "a" / "x.txt", root / "x-again.txt")            # ...and a new one
    (root / "a" / "deep" / "y.txt").write_text("longer y")         # a file changed
    os.chmod(root / "a" / "deep", 0o700)
    after = digests.manifest(root)
    change_list = changes.between(before, after)
    updated = digests.updated(before, str(root), change_list.changed, change_list.deleted,
                              [path for path, _ in change_list.touch])
    assert updated == after
    assert digests.digest(updated) == digests.digest(after)


def test_a_pull_that_dies_after_rsync_changed_a_shared_file_in_place_leaves_the_previous_tree_as_it_was(tmp_path):
    data = str(tmp_path)
    first = stage(data, "debian", 1)
    pull(first, {"private.txt": "p"})
    os.chmod(os.path.join(first.destination, "private.txt"), 0o600)
    snapshots.commit(first)
    before = digests.manifest(tmp_path / "debian")
    doomed = stage(data, "debian", 2)
    os.chmod(os.path.join(doomed.destination, "private.txt"), 0o640)   # rsync, before the disk filled up
    os.utime(os.path.join(doomed.destination, "private.txt"), (1_500_000_000, 1_500_000_000))
    snapshots.abort(doomed)
    assert digests.manifest(tmp_path / "debian") == before


def test_a_staged_tree_is_only_filled_when_the_pull_runs(tmp_path):
    """A pull skipped for an unchanged upstream marker costs no copy of the tree."""
    data = str(tmp_path)
    first = stage(data, "debian", 1)
    pull(first, {"a.txt": "one"})
    snapshots.commit(first)
    second = snapshots.prepare(data, "debian", 2)
    assert second.basis == "1" and os.listdir(second.destination) == []
    snapshots.fill(second)
    assert os.listdir(second.destination) == ["a.txt"]


def test_a_manifest_saved_by_an_earlier_release_still_loads(tmp_path):
    """Earlier releases wrote one JSON row per line; snapshots they made keep theirs."""
    import gzip
    import json
    root = tmp_path / "tree"
    build(root, {"a/x.txt": "x", "link": "->a/x.txt"})
    entries = digests.manifest(root)
    old = tmp_path / "manifest.gz"
    with gzip.open(old, "wt", encoding="utf-8") as out:
        for entry in entries:
            out.write(json.dumps([entry.path, entry.type, entry.size, entry.mtime, entry.mode, entry.target,
                                  entry.group]) + "\n")
    assert digests.load(old) == entries
    array_of_rows = tmp_path / "array.gz"   # the release before this one: one JSON array of rows
    with gzip.open(array_of_rows, "wt", encoding="utf-8") as out:
        out.write(json.dumps([list(entry) for entry in entries]))
    assert digests.load(array_of_rows) == entries
    digests.save(entries, tmp_path / "new.gz")
    assert digests.load(tmp_path / "new.gz") == entries
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError):
        digests.load(tmp_path / "bad.gz")


def file_inodes(root):
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                found[os.path.relpath(path, root)] = os.lstat(path).st_ino
    return found


def awkward_pull(staging):
    """Run 2 after run 1 of ``recycled``, as rsync does it in place: new inodes for what changed, a mode
    changed on the shared file, a directory made a file, a symlink retargeted, a new hard link, a
    directory deleted, a read-only directory written in."""
    new = staging.destination

    def at(path):
        return os.path.join(new, path)
    pull(staging, {"pool/a.deb": "a, second version", "pool/new/c.deb": "c", "same-size.txt": "2222"})
    os.utime(at("same-size.txt"), (1_600_000_000, 1_600_000_000))   # as with --checksum: same size and time
    os.chmod(at("pool/b.deb"), 0o600)
    for name in os.listdir(at("dir-to-file")):
        os.unlink(os.path.join(at("dir-to-file"), name))
    os.rmdir(at("dir-to-file"))
    pull(staging, {"dir-to-file": "now a file"})
    os.unlink(at("latest"))
    os.symlink("pool/b.deb", at("latest"))
    os.link(at("pool/new/c.deb"), at("c-again.deb"))
    os.chmod(at("readonly"), 0o755)
    os.unlink(at("readonly/old.txt"))
    pull(staging, {"readonly/fresh.txt": "fresh"})
    os.chmod(at("readonly"), 0o555)
    for name in os.listdir(at("gone")):
        os.unlink(os.path.join(at("gone"), name))
    os.rmdir(at("gone"))


def three_runs(data):
    first = stage(data, "recycled", 1)
    pull(first, {"pool/a.deb": "a", "pool/b.deb": "b", "dir-to-file/x": "x", "readonly/old.txt": "old",
                 "gone/g.txt": "g", "same.txt": "same", "same-size.txt": "1111"})
    os.utime(os.path.join(first.destination, "same-size.txt"), (1_600_000_000, 1_600_000_000))
    os.symlink("pool/a.deb", os.path.join(first.destination, "latest"))
    os.chmod(os.path.join(first.destination, "readonly"), 0o555)
    snapshots.commit(first)
    second = stage(data, "recycled", 2)
    awkward_pull(second)
    snapshots.commit(second)
    return snapshots.prepare(data, "recycled", 3)


def test_a_snapshot_no_slave_needs_becomes_the_next_tree_instead_of_a_copy(tmp_path, caplog):
    data = str(tmp_path)
    third = three_runs(data)
    root = tmp_path / ".snapshots" / "recycled"
    first_inode = os.lstat(root / "1").st_ino
    with caplog.at_level("INFO"):
        snapshots.fill(third, needed={"2"})
    assert "snapshot 1, which no slave needs any more, starts run 3's tree" in caplog.text
    assert os.lstat(third.destination).st_ino == first_inode, "run 1's tree was reused, not copied"
    assert snapshots.names(data, "recycled") == ["2"] and not (root / ".manifest-1").exists()
    # Exactly run 2's tree, every file the very file run 2 has: what rsync's quick check would not see
    # (a content that differs at the same size and time) cannot linger.
    assert digests.manifest(third.destination) == digests.manifest(root / "2")
    assert file_inodes(third.destination) == file_inodes(root / "2")
    assert (root / "2" / "same-size.txt").read_text() == "2222"
    assert open(os.path.join(third.destination, "same-size.txt")).read() == "2222"
    assert os.lstat(os.path.join(third.destination, "latest")).st_mtime_ns == \
        os.lstat(root / "2" / "latest").st_mtime_ns
    pull(third, {"same.txt": "same, third"})
    sealed = snapshots.commit(third)
    assert set(sealed.changes.changed) - {"."} == {"same.txt"} and sealed.changes.deleted == ()
    assert (root / "2" / "same.txt").read_text() == "same"


def test_a_snapshot_a_slave_still_pulls_is_never_reused(tmp_path):
    data = str(tmp_path)
    third = three_runs(data)
    snapshots.fill(third, needed={"1", "2"})
    assert snapshots.names(data, "recycled") == ["1", "2"]
    assert digests.manifest(third.destination) == digests.manifest(tmp_path / ".snapshots" / "recycled" / "2")


def test_a_reused_snapshot_that_does_not_come_out_right_gives_way_to_a_copy(tmp_path, monkeypatch, caplog):
    data = str(tmp_path)
    third = three_runs(data)
    real_replace = os.replace

    def failing(source, destination):
        if destination.endswith("same.txt") or destination.endswith("a.deb"):
            raise OSError(28, "No space left on device")
        return real_replace(source, destination)
    monkeypatch.setattr(snapshots.os, "replace", failing)
    snapshots.fill(third, needed={"2"})
    monkeypatch.setattr(snapshots.os, "replace", real_replace)
    assert "could not be made into snapshot 2" in caplog.text
    assert snapshots.names(data, "recycled") == ["2"]
    assert digests.manifest(third.destination) == digests.manifest(tmp_path / ".snapshots" / "recycled" / "2")
    assert file_inodes(third.destination) == file_inodes(tmp_path / ".snapshots" / "recycled" / "2")


def test_the_manifests_kept_in_memory_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshots, "_committed", {})
    monkeypatch.setattr(snapshots, "_COMMITTED_ENTRIES", 5)
    data = str(tmp_path)
    for project in ("one", "two"):
        staging = stage(data, project, 1)
        pull(staging, {"a": "a", "b": "b", "c": "c"})
        snapshots.commit(staging)
    assert [key[1] for key in snapshots._committed] == ["two"], "the older project's manifest went"
    # It is read back from disk when needed: the next change list is still right.
    staging = stage(data, "one", 2)
    pull(staging, {"d": "d"})
    assert set(snapshots.commit(staging).changes.changed) - {"."} == {"d"}


def write_log(path, *segments):
    with open(path, "w", encoding="utf-8") as out:
        for header, lines, footer in segments:
            out.write(header + "\n" + "".join(line + "\n" for line in lines) + (footer + "\n" if footer else ""))


def test_what_rsync_itemized_is_read_from_the_pull_log(tmp_path):
    tree = str(tmp_path / "3.partial")
    pull = f"$ rsync --recursive '--out-format=%i %n' -- rsync://u/m/ {tree}/"
    marker = f"$ rsync -- rsync://u/m/lastupdate {tmp_path}/markers/"
    log = tmp_path / "3.log"
    write_log(log, (marker, [">f+++++++++ lastupdate"], "# exit code 0, ok"),
              (pull, [".d..t...... ./", ">f.st...... pool/a b.deb", "cd+++++++++ pool/new/", "hf+++++++++ link",
                      "cL+++++++++ latest", r">f+++++++++ odd-\#377-\#134#041", "*deleting   gone/x",
                      "*deleting   gone/", "Number of files: 36", "sent 75 bytes  received 984 bytes"],
               "# exit code 0, ok"))
    changed, deleted, linked = snapshots.itemized(str(log), tree)
    assert changed == {".", "pool/a b.deb", "pool/new", "link", "latest", os.fsdecode(b"odd-\xff-\\#041")}
    assert deleted == {"gone/x", "gone"} and linked
    assert "lastupdate" not in changed, "another rsync's names are not the tree's"


@pytest.mark.parametrize("segments", [
    [("$ rsync -- rsync://u/m/ {tree}/", [">f+++++++++ a"], "# exit code 0, ok")],     # not itemized
    [("$ rsync '--out-format=%i %n' -- rsync://u/m/ {tree}/", [">f+++++++++ a"], None)],   # no end: a full disk
    [("$ rsync '--out-format=%i %n' -- rsync://u/m/ {tree}/",
      [">f+++++++++ a", "# the output of the child was not all copied: what followed its end is missing"],
      "# exit code 0, ok")],
    [("$ sync-script {tree}", ["made something"], "# exit code 0, ok")],
])
def test_a_log_that_cannot_vouch_for_every_change_gives_nothing(tmp_path, segments):
    tree = str(tmp_path / "3.partial")
    log = tmp_path / "3.log"
    write_log(log, *[(header.format(tree=tree), lines, footer) for header, lines, footer in segments])
    assert snapshots.itemized(str(log), tree) is None
    assert snapshots.itemized(str(tmp_path / "missing.log"), tree) is None


def test_a_log_of_no_rsync_into_the_tree_says_nothing_changed_never(tmp_path):
    log = tmp_path / "3.log"
    write_log(log, ("$ rsync '--out-format=%i %n' -- rsync://u/m/lastupdate /elsewhere/", [], "# exit code 0, ok"))
    assert snapshots.itemized(str(log), str(tmp_path / "3.partial")) is None


def listing_pull(tmp_path, data, changed_lines):
    """Run 2 of project debian staged from run 1 (keep, d/stay, d/gone, old/x, old/sub/y) and the log of
    a listing pull into it that itemized ``changed_lines``."""
    first = stage(data, "debian", 1)
    pull(first, {"keep": "k", "d/stay": "s", "d/gone": "g", "old/x": "x", "old/sub/y": "y"})
    snapshots.commit(first)
    second = stage(data, "debian", 2)
    log = tmp_path / "2.log"
    write_log(log, (f"$ rsync --recursive '--out-format=%i %n' -- rsync://u/m/ {second.destination}/",
                    changed_lines, "# exit code 0, ok"))
    return second, str(log)


def test_what_rsync_did_not_name_is_deleted_with_its_directory_and_the_times_kept(tmp_path):
    """Without --delete rsync names every upstream entry (the unchanged ones go to a list, not the log):
    what the previous tree had and no name matches is gone, a directory with all under it, and the
    directories it was in keep the times rsync gave them."""
    data = str(tmp_path)
    second, log = listing_pull(tmp_path, data, [">f.st...... d/stay"])
    assert snapshots.can_list(second)
    d = os.path.join(second.destination, "d")
    os.utime(d, (1_700_000_000, 1_700_000_000))
    root_time = os.stat(second.destination).st_mtime_ns
    deleted = snapshots.delete_unlisted(second, ["./", "keep", "d/"], log, 4)
    assert deleted == ["d/gone", "old"]
    assert sorted(os.listdir(second.destination)) == ["d", "keep"] and os.listdir(d) == ["stay"]
    assert os.stat(d).st_mtime == 1_700_000_000 and os.stat(second.destination).st_mtime_ns == root_time
    assert os.path.exists(os.path.join(data, ".snapshots", "debian", "1", "old", "sub", "y")), "the previous tree keeps it"


@pytest.mark.parametrize("listed, changed_lines, total", [
    (["./", "keep", "d/"], [">f.st...... d/stay"], 5),                 # rsync counted one more than it named
    (["./", "keep", "d/", "new"], [">f.st...... d/stay"], 5),          # "unchanged", yet not in the previous tree
    (["./", "keep", "d/"], [">f+++++++++ d/ghost", ">f.st...... d/stay"], 5),   # "changed", yet not in the tree
    (["./", "keep", "d/"], [">f.st...... d/stay"], None),              # no count: no --stats at the end
])
def test_names_that_cannot_vouch_for_upstreams_whole_list_delete_nothing(tmp_path, listed, changed_lines, total):
    """A name misread, or one rsync left out, would delete what upstream still has: the names must add up
    to rsync's own count, the unchanged ones be in the previous tree and the changed ones in the new one;
    else nothing is deleted here (the pull runs again with rsync deleting)."""
    data = str(tmp_path)
    second, log = listing_pull(tmp_path, data, changed_lines)
    assert snapshots.delete_unlisted(second, listed, log, total) is None
    assert sorted(os.listdir(second.destination)) == ["d", "keep", "old"]


def test_a_name_rsync_escaped_or_skipped_is_still_named(tmp_path):
    """rsync prints a name's odd bytes as \\#ooo, and names an unsafe symlink or a device only to say it
    skips it: those still count as upstream's, so nothing of theirs is deleted here."""
    data = str(tmp_path)
    first = stage(data, "debian", 1)
    pull(first, {"new\nline": "n", "swap": "s", "gone": "g"})
    snapshots.commit(first)
    second = stage(data, "debian", 2)
    log = tmp_path / "2.log"
    write_log(log, (f"$ rsync --recursive '--out-format=%i %n' -- rsync://u/m/ {second.destination}/",
                    ['ignoring unsafe symlink "swap" -> "/etc"'], "# exit code 0, ok"))
    assert snapshots.delete_unlisted(second, ["./", r"new\#012line"], str(log), 3) == ["gone"]
    assert sorted(os.listdir(second.destination)) == ["new\nline", "swap"]


def test_a_snapshots_manifest_is_saved_while_its_orders_go_out_and_waited_for_before_it_is_read(
        tmp_path, monkeypatch):
    """The orders need only the digest: the manifest file is written beside them, in a thread of its
    own, and whoever reads it (``saved()`` before the run is final, the next pull's change list) waits."""
    import threading
    data = str(tmp_path)
    first = stage(data, "debian", 1)
    pull(first, {"a.txt": "one", "d/b.txt": "two"})
    release, real_save = threading.Event(), digests.save
    monkeypatch.setattr(digests, "save", lambda entries, path: (release.wait(10), real_save(entries, path)))
    sealed = snapshots.commit(first)
    path = snapshots.manifest_path(data, "debian", "1")
    assert not os.path.exists(path), "commit waited for the manifest file"
    snapshots._committed.pop((data, "debian"))   # the next pull reads it from the file
    monkeypatch.setattr(digests, "manifest", lambda *args, **kwargs: pytest.fail("walked, not waiting for the file"))
    threading.Timer(0.05, release.set).start()
    assert snapshots._manifest_of(data, "debian", "1")[1] == sealed.digest
    sealed.saved()
    assert digests.digest(digests.load(path)) == sealed.digest
