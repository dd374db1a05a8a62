"""Unfinished --delay-updates folders are removed after a failed pull, never through symlinks."""

import os

from common.rsync import DELAY_DIR, RsyncJob, RsyncRunner, remove_partial_updates


def test_leftover_delay_folders_are_removed_everywhere_but_through_symlinks(tmp_path):
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    for folder in (tree / DELAY_DIR, tree / "a" / "b" / DELAY_DIR, outside / DELAY_DIR):
        folder.mkdir(parents=True)
        (folder / "half.bin").write_bytes(b"x" * 10)
    (tree / "a" / "keep.txt").write_text("kept")
    os.symlink(outside, tree / "link")
    assert remove_partial_updates(tree) == 2
    assert not (tree / DELAY_DIR).exists() and not (tree / "a" / "b" / DELAY_DIR).exists()
    assert (tree / "a" / "keep.txt").read_text() == "kept"
    assert (outside / DELAY_DIR / "half.bin").exists(), "a symlink must never lead the cleanup out of the tree"


def test_a_failed_pull_cleans_up_after_itself(tmp_path):
    tree = tmp_path / "tree"
    (tree / DELAY_DIR).mkdir(parents=True)
    (tree / DELAY_DIR / "half.bin").write_bytes(b"x")
    result = RsyncRunner().run(RsyncJob(str(tmp_path / "no-such-source"), str(tree)), str(tmp_path / "log"))
    assert not result.ok
    assert not (tree / DELAY_DIR).exists()
    assert "unfinished --delay-updates" in (tmp_path / "log").read_text()
