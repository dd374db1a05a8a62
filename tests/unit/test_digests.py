"""common.digests: the manifest and digest master and slaves compare, which must not change between releases."""

import os

from common import changes, digests


def build(root):
    root = os.fspath(root)
    os.makedirs(f"{root}/pool/ünï")
    with open(f"{root}/pool/a.deb", "wb") as out:
        out.write(b"a" * 10)
    os.link(f"{root}/pool/a.deb", f"{root}/a-again.deb")
    odd = os.fsdecode(os.fsencode(root) + b"/odd-\xff.txt")   # not UTF-8
    with open(odd, "wb") as out:
        out.write(b"odd")
    open(f"{root}/pool/ünï/tab\there", "wb").close()
    os.symlink("pool/a.deb", f"{root}/latest")
    for path, mode in (("pool/a.deb", 0o640), ("pool/ünï/tab\there", 0o644), (odd, 0o644), ("pool/ünï", 0o755),
                       ("pool", 0o755), (".", 0o755)):
        os.chmod(os.path.join(root, path), mode)
    for number, path in enumerate(("pool/a.deb", odd, "pool/ünï/tab\there", "pool/ünï", "pool", ".")):
        os.utime(os.path.join(root, path), (1_500_000_000 + number,) * 2)


def test_the_digest_of_a_tree_is_what_every_release_computes(tmp_path):
    build(tmp_path / "tree")
    entries = digests.manifest(tmp_path / "tree")
    assert [entry.path for entry in entries] == [".", "a-again.deb", "latest", "odd-\udcff.txt", "pool",
                                                 "pool/a.deb", "pool/ünï", "pool/ünï/tab\there"]
    assert entries[1] == digests.Entry("a-again.deb", "f", 10, 1_500_000_000, 0o640, None, "a-again.deb")
    assert entries[2] == digests.Entry("latest", "l", target="pool/a.deb")
    # Pinned: slaves of one release compare with a master of another.
    assert digests.digest(entries) == "sha256:63770a3ea3d5120401a3e3fa5265215b98bdb0b50d985beb5a60ba4024cda64c"
    # The root's own time is not part of it; any other time is.
    os.utime(tmp_path / "tree", (1, 1))
    assert digests.digest(digests.manifest(tmp_path / "tree")) == digests.digest(entries)
    os.utime(tmp_path / "tree" / "pool", (1, 1))
    assert digests.digest(digests.manifest(tmp_path / "tree")) != digests.digest(entries)


def test_a_saved_manifest_loads_as_it_was_odd_bytes_and_all(tmp_path):
    build(tmp_path / "tree")
    entries = digests.manifest(tmp_path / "tree")
    digests.save(entries, tmp_path / "m.gz")
    assert digests.load(tmp_path / "m.gz") == entries


def test_a_manifest_updated_from_the_paths_that_moved_is_the_walk_of_the_tree(tmp_path):
    tree = tmp_path / "tree"
    build(tree)
    before = digests.manifest(tree)
    os.unlink(tree / "a-again.deb")   # the group of pool/a.deb is gone
    (tree / "pool" / "new.deb").write_text("new")
    os.chmod(tree / "pool" / "ünï" / "tab\there", 0o600)
    after = digests.manifest(tree)
    change_list = changes.between(before, after)
    # The directories that gained or lost a name have new times.
    assert set(change_list.changed) == {".", "pool", "pool/new.deb", "pool/a.deb", "pool/ünï/tab\there"}
    assert change_list.deleted == ("a-again.deb",)
    assert digests.updated(before, tree, change_list.changed, change_list.deleted) == after
    assert digests.first_differences(before, after, limit=4) == ["a-again.deb", "pool", "pool/a.deb", "pool/new.deb"]


def test_paths_sort_by_their_bytes_even_where_text_order_differs():
    # A byte that is not UTF-8 (a surrogate escape) sorts after every character, as its byte does.
    assert digests.sort_paths(["\udcff", "\ue000", "\U0001f600", "a/b", "a-b", "a"]) == \
        ["a", "a-b", "a/b", "\ue000", "\U0001f600", "\udcff"]
    assert digests.sort_paths(["b", "a/b", "a"], reverse=True) == ["b", "a/b", "a"]


def test_a_saved_manifest_loads_as_it_was_whatever_its_names(tmp_path):
    root = tmp_path / "tree"
    build(root)
    os.makedirs(root / "new\nline" / "dir")
    with open(root / "new\nline" / "f\nile", "w") as out:
        out.write("x")
    os.link(root / "new\nline" / "f\nile", root / "new\nline" / "dir" / "again\n")
    open(root / "-sorts-before-the-root", "w").close()
    os.symlink("new\nline/f\nile", root / "link\n")
    os.utime(root, (1_234_567_890, 1_234_567_890))
    entries = digests.manifest(root)
    assert entries[0].path == "-sorts-before-the-root" and any(entry.group for entry in entries)
    for keep_lines in (False, True):
        if keep_lines:
            digests.digest(entries)
        digests.save(entries, tmp_path / "saved.gz")
        loaded = digests.load(tmp_path / "saved.gz")
        assert loaded == entries and digests.find(loaded, ".").mtime == 1_234_567_890
        assert digests.digest(loaded) == digests.digest(entries)
    digests.save(digests.Manifest(), tmp_path / "empty.gz")
    assert digests.load(tmp_path / "empty.gz") == []


def test_a_saved_manifest_cut_short_is_refused(tmp_path):
    import gzip
    import pytest
    entries = digests.manifest(tmp_path)
    digests.save(entries, tmp_path / "saved.gz")
    text = gzip.decompress((tmp_path / "saved.gz").read_bytes())
    (tmp_path / "cut.gz").write_bytes(gzip.compress(text[:-3]))
    with pytest.raises(ValueError, match="not a manifest"):
        digests.load(tmp_path / "cut.gz")


def test_a_hard_link_group_left_with_one_file_by_deletions_is_spliced_as_the_walk_sees_it(tmp_path):
    """rsync names the paths it deleted, not the file that was linked with them: that one is no hard link
    any more (or is one of a smaller group, maybe named by another member), and must be looked at again."""
    tree = tmp_path / "tree"
    (tree / "gone").mkdir(parents=True)
    (tree / "z-kept").write_text("shared\n")
    for partner in ("a-deleted", "gone/inside"):
        os.link(tree / "z-kept", tree / partner)
    (tree / "m-kept").write_text("three\n")
    for partner in ("b-deleted", "n-kept"):
        os.link(tree / "m-kept", tree / partner)
    before = digests.manifest(tree)
    assert {entry.path: entry.group for entry in before if entry.group} == {
        "a-deleted": "a-deleted", "gone/inside": "a-deleted", "z-kept": "a-deleted",
        "b-deleted": "b-deleted", "m-kept": "b-deleted", "n-kept": "b-deleted"}
    os.unlink(tree / "a-deleted")
    os.unlink(tree / "b-deleted")
    (tree / "gone" / "inside").unlink()
    (tree / "gone").rmdir()
    # As rsync itemizes it: the deleted names (a directory without what was in it) and the directory
    # whose time moved; neither kept file.
    spliced, _ = digests.splice(before, tree, ["."], ["a-deleted", "b-deleted", "gone"])
    walked = digests.manifest(tree)
    assert spliced == walked, digests.first_differences(spliced, walked)
    assert {entry.path: entry.group for entry in walked if entry.group} == {"m-kept": "m-kept", "n-kept": "m-kept"}
