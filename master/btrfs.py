"""btrfs subvolumes for the master's snapshots: a new tree in constant time, copy-on-write.

Where a project's snapshots live on btrfs, each one is a subvolume and the next pull starts
from a writable snapshot of the previous one (``btrfs subvolume snapshot``): no link per file,
and rsync's in-place changes of a file's attributes reach the new tree only. Deleting one is
``btrfs subvolume delete``, which the file system finishes in the background; that needs root,
or the mount option ``user_subvol_rm_allowed``, else the tree is emptied and removed as any
other (an empty subvolume may be removed by its owner).

The btrfs command of btrfs-progs does the work, run from an argument list.
"""

import logging
import os
import re
import shutil
import stat

from common.processes import run_briefly
from common.trees import remove_tree

log = logging.getLogger(__name__)

COMMAND = "btrfs"
_TIMEOUT = 120            # seconds; creating or deleting a subvolume waits for a transaction at most
_SUBVOLUME_ROOT = 256     # the inode of every subvolume's top directory
_MOUNTINFO = "/proc/self/mountinfo"
_ESCAPE = re.compile(r"\\([0-7]{3})")


def file_system(path):
    """The type of the file system ``path`` is on ("btrfs", "ext4"...), from the mount table; None
    when it cannot be read."""
    real = os.path.realpath(path)
    best, kind = None, None
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="surrogateescape") as mounts:
            for line in mounts:
                before, separator, after = line.partition(" - ")
                fields = before.split()
                if not separator or len(fields) < 5 or not after.split():
                    continue
                point = _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) >= len(best)):   # a later mount hides an earlier one
                    best, kind = point, after.split()[0]
    except OSError:
        return None
    return kind


def available():
    return shutil.which(COMMAND) is not None


def is_subvolume(path):
    """Whether ``path`` (not followed if a symlink) is the top directory of a btrfs subvolume."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_ino == _SUBVOLUME_ROOT and file_system(path) == "btrfs"


def _run(*args):
    """Run ``btrfs *args``; raises OSError with what it said when it fails."""
    run_briefly([COMMAND, *args], _TIMEOUT)


def create(path):
    """A new empty subvolume at ``path``. Raises OSError."""
    _run("subvolume", "create", path)


def snapshot(source, target):
    """A writable snapshot of subvolume ``source`` at ``target``, which must not exist. Raises OSError."""
    _run("subvolume", "snapshot", source, target)


def delete(path):
    """Delete the tree at ``path``: a subvolume at once, anything else (or a subvolume this process may
    not delete) file by file. Returns whether it went; logs instead of raising."""
    if is_subvolume(path) and available():
        try:
            _run("subvolume", "delete", path)
            return True
        except OSError as error:
            log.debug("%s; removing it file by file", error)
    return remove_tree(path)
