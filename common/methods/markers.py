"""``upstream_marker``: fetch one small file of the upstream first, to skip a pull when it did not change.

For Arch's ``lastupdate`` the sibling ``lastsync`` comes along: Arch's own sync
script copies it on every run, changed or not, because archweb measures a
mirror's delay from the ``lastsync`` it serves. It is copied as received,
never written by us.
"""

import hashlib
import os
import shutil

from common.methods import rsync as rsync_method

ARCH_MARKER, ARCH_COMPANION = "lastupdate", "lastsync"


def companions(marker):
    """Files fetched, and copied into the tree, together with ``marker``."""
    directory, name = os.path.split(marker)
    return (os.path.join(directory, ARCH_COMPANION),) if name == ARCH_MARKER else ()


def filter_rules(paths):
    """rsync rules that let exactly ``paths`` (and their parent directories) through."""
    rules = []
    for path in paths:
        parts = path.strip("/").split("/")
        rules += [f"--include=/{'/'.join(parts[:depth])}/" for depth in range(1, len(parts))]
        rules.append(f"--include=/{'/'.join(parts)}")
    return (*dict.fromkeys(rules), "--exclude=*")


def digest(data):
    return hashlib.sha256(data).hexdigest()


class MarkerFetch:
    """The marker (and its companions) fetched into ``scratch``; ``marker`` is its bytes or None."""

    def __init__(self, scratch, result, marker, paths):
        self.scratch = scratch
        self.result = result
        self.paths = paths
        self.marker = marker

    @property
    def marker_digest(self):
        return None if self.marker is None else digest(self.marker)

    def copy_companions(self, tree):
        """Copy the companions fetched into ``tree`` (write, then rename); returns the ones copied."""
        copied = []
        for path in self.paths[1:]:
            source = os.path.join(self.scratch, path)
            if not os.path.isfile(source) or os.path.islink(source):
                continue
            target = os.path.join(tree, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            staging = target + ".mirrorsync-new"
            shutil.copy2(source, staging)
            os.replace(staging, target)
            copied.append(path)
        return copied


def fetch_marker(spec, runners, marker, scratch, log_path, cancel=None):
    """Fetch ``marker`` and its companions from ``spec.source`` into a fresh ``scratch`` directory."""
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    paths = (marker.strip("/"), *companions(marker.strip("/")))
    job = rsync_method.job(spec, scratch, extra_options=filter_rules(paths), excludes=(), delete=False)
    result, _ = rsync_method.run_stage(runners, job, log_path, "marker", cancel, None, None)
    content = None
    marker_path = os.path.join(scratch, paths[0])
    if result.ok and os.path.isfile(marker_path) and not os.path.islink(marker_path):
        with open(marker_path, "rb") as stream:
            content = stream.read(1024 * 1024)
    return MarkerFetch(scratch, result, content, paths)
