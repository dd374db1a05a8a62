"""Telling where btrfs snapshots can be had, without a btrfs file system."""

import pytest

from master import btrfs, snapshots

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /srv rw,relatime shared:20 - ext4 /dev/sdb1 rw
41 40 0:36 / /srv/mirror\\040data rw,relatime shared:21 - btrfs /dev/sdc1 rw,space_cache=v2
42 41 0:37 / /srv/mirror\\040data/scratch rw - tmpfs tmpfs rw
43 22 0:38 / /srv rw,relatime shared:22 - xfs /dev/sdd1 rw
"""


@pytest.fixture
def mount_table(tmp_path, monkeypatch):
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO)
    monkeypatch.setattr(btrfs, "_MOUNTINFO", str(table))


@pytest.mark.parametrize("path, kind", [
    ("/srv/mirror data/.snapshots/debian", "btrfs"),   # a space in the mount point, as the kernel escapes it
    ("/srv/mirror data", "btrfs"),
    ("/srv/mirror data/scratch/x", "tmpfs"),
    ("/srv/mirror datax", "xfs"),                       # a longer name is not under the mount point
    ("/srv/other", "xfs"),                              # the later of two mounts on /srv hides the earlier
    ("/home", "ext4"),
])
def test_the_file_system_of_a_path_is_the_innermost_mount_over_it(mount_table, path, kind):
    assert btrfs.file_system(path) == kind


def test_an_unreadable_mount_table_tells_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(btrfs, "_MOUNTINFO", str(tmp_path / "missing"))
    assert btrfs.file_system("/srv") is None
    assert not btrfs.is_subvolume(str(tmp_path))


def test_btrfs_snapshots_asked_for_where_there_are_none_refuse_the_pull(tmp_path, monkeypatch):
    monkeypatch.setattr(btrfs, "file_system", lambda path: "ext4")
    with pytest.raises(snapshots.SnapshotError, match=r"SNAPSHOT_METHOD is btrfs but .* is on ext4, not btrfs"):
        snapshots.prepare(str(tmp_path), "debian", 1, snapshots.BTRFS)
    monkeypatch.setattr(btrfs, "file_system", lambda path: "btrfs")
    monkeypatch.setattr(btrfs, "available", lambda: False)
    with pytest.raises(snapshots.SnapshotError, match=r"the btrfs command is not installed \(package btrfs-progs\)"):
        snapshots.prepare(str(tmp_path), "debian", 1, snapshots.BTRFS)
    # "auto" takes hard links there instead.
    staging = snapshots.prepare(str(tmp_path), "debian", 1, snapshots.AUTO)
    assert not staging.subvolume and staging.start == snapshots.EMPTY


def test_a_short_command_gets_no_setting_or_secret_and_its_failure_says_what_it_printed(monkeypatch):
    from common.processes import run_briefly
    monkeypatch.setenv("MIRRORSYNC_ADMIN_TOKEN", "secret-token")
    monkeypatch.setenv("RSYNC_PASSWORD", "secret-password")
    run_briefly(["sh", "-c", 'test -z "$MIRRORSYNC_ADMIN_TOKEN$RSYNC_PASSWORD"'])
    with pytest.raises(OSError, match=r"^sh -c 'echo first; echo no such subvolume >&2; exit 3': no such subvolume$"):
        run_briefly(["sh", "-c", "echo first; echo no such subvolume >&2; exit 3"])
