"""A btrfs file system of a test's own: an image file mounted on a loop device, unmounted after."""

import contextlib
import os
import shutil
import subprocess

import pytest

IMAGE_SIZE = 256 * 1024 * 1024   # sparse: costs what is written


def _missing():
    """Why this machine cannot mount a btrfs image, or None."""
    if os.geteuid() != 0:
        return "mounting a btrfs image on a loop device needs root"
    for tool in ("mkfs.btrfs", "btrfs", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (btrfs-progs, util-linux)"
    return None


def _run(argv):
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)


@contextlib.contextmanager
def mounted(directory):
    """Yield an empty btrfs file system's mount point under ``directory``; skips the test, saying why,
    when the machine cannot make one."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    image, point = os.path.join(directory, "btrfs.img"), os.path.join(directory, "btrfs")
    os.makedirs(point)
    with open(image, "wb") as out:
        out.truncate(IMAGE_SIZE)
    made = _run(["mkfs.btrfs", "-q", image])
    assert made.returncode == 0, made.stderr
    mount = _run(["mount", "-o", "loop", image, point])
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a btrfs image here: {mount.stderr.strip()}")
    try:
        yield point
    finally:
        if _run(["umount", point]).returncode != 0:
            _run(["umount", "-l", point])   # a process of the test still in it: detach now, free later
        os.unlink(image)


def subvolumes(point, under):
    """Paths, relative to ``under``, of the subvolumes below ``under`` on the btrfs mounted at ``point``."""
    listed = _run(["btrfs", "subvolume", "list", point])
    assert listed.returncode == 0, listed.stderr
    prefix = os.path.relpath(under, point) + "/"
    paths = (line.split(" path ", 1)[1] for line in listed.stdout.splitlines() if " path " in line)
    return sorted(path[len(prefix):] for path in paths if path.startswith(prefix))
