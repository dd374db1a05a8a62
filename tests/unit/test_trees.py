"""common.trees: the hard-link copy snapshots start from."""

import os

from common.trees import link_copy


def test_a_link_copy_shares_files_and_copies_directories_and_symlinks_with_their_times(tmp_path):
    source, copy = tmp_path / "source", tmp_path / "copy"
    (source / "pool").mkdir(parents=True)
    (source / "pool" / "a.deb").write_text("a")
    os.link(source / "pool" / "a.deb", source / "a-again.deb")
    os.symlink("pool/a.deb", source / "latest")
    os.utime(source / "latest", (1_500_000_000, 1_500_000_000), follow_symlinks=False)
    os.utime(source / "pool", (1_400_000_000, 1_400_000_000))
    os.chmod(source / "pool", 0o555)
    os.utime(source, (1_300_000_000, 1_300_000_000))
    copy.mkdir()
    link_copy(source, copy)
    inode = os.lstat(source / "pool" / "a.deb").st_ino
    assert {os.lstat(copy / name).st_ino for name in ("pool/a.deb", "a-again.deb")} == {inode}
    assert os.readlink(copy / "latest") == "pool/a.deb"
    # rsync --times keeps a symlink's own time, and a copy that lost it would differ from a full pull.
    assert os.lstat(copy / "latest").st_mtime == 1_500_000_000
    pool = os.lstat(copy / "pool")
    assert (oct(pool.st_mode & 0o7777), pool.st_mtime) == ("0o555", 1_400_000_000)
    assert pool.st_ino != os.lstat(source / "pool").st_ino
    # The top's time too: a copy made a second after its source must not look changed.
    assert os.lstat(copy).st_mtime == 1_300_000_000
