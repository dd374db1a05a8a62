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


def file_digest(path):
    """The sha256 of the whole file at ``path``, read in pieces. Raises OSError."""
    hashed = hashlib.sha256()
    with open(path, "rb") as stream:
        for piece in iter(lambda: stream.read(1 << 20), b""):
            hashed.update(piece)
    return hashed.hexdigest()


class MarkerFetch:
    """The marker (and its companions) fetched into ``scratch``; ``marker_digest``, the sha256 of the
    whole marker, None when it did not come. ``paths``: the marker, its companions, then ``also``."""

    def __init__(self, scratch, result, marker_digest, paths, companions=()):
        self.scratch = scratch
        self.result = result
        self.paths = paths
        self.companions = companions
        self.marker_digest = marker_digest

    def fetched(self, path):
        """The local path of ``path`` when it came as a regular file, else None."""
        local = os.path.join(self.scratch, path.strip("/"))
        return local if os.path.isfile(local) and not os.path.islink(local) else None

    def copy_companions(self, tree):
        """Copy the companions fetched into ``tree`` (write, then rename); returns the ones copied."""
        return [path for path in self.companions if self.copy_into(tree, path)]

    def copy_into(self, tree, path):
        """Copy ``path`` as fetched into ``tree`` (write, then rename; its times kept); returns whether it
        did. Raises OSError."""
        source = self.fetched(path)
        if source is None:
            return False
        target = os.path.join(tree, path.strip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        staging = target + ".mirrorsync-new"
        shutil.copy2(source, staging)
        os.replace(staging, target)
        return True


def fetch_marker(spec, runners, marker, scratch, log_path, cancel=None, also=(), fresh=True):
    """Fetch ``marker``, its companions and the paths ``also`` from ``spec.source`` into ``scratch``, in
    one rsync. Not ``fresh``, what an earlier fetch left there is kept: an unchanged file does not
    travel again (compared by checksum), a changed one (a file list of megabytes) comes by rsync's
    delta algorithm, and rsync deletes what upstream no longer has of those paths. ``fresh`` (the
    project's settings changed, say) starts from an empty directory."""
    if fresh:
        shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch, exist_ok=True)
    marker = marker.strip("/")
    companion_paths = companions(marker)
    paths = tuple(dict.fromkeys((marker, *companion_paths, *(path.strip("/") for path in also))))
    # --checksum: a marker rewritten within the second at the same size would pass rsync's quick check.
    job = rsync_method.job(spec, scratch, extra_options=("--checksum", *filter_rules(paths)), excludes=())
    result, _ = rsync_method.run_stage(runners, job, log_path, "marker", cancel, None, None)
    fetch = MarkerFetch(scratch, result, None, paths, companion_paths)
    fetched = fetch.fetched(marker) if result.ok else None
    if fetched is not None:
        fetch.marker_digest = file_digest(fetched)
    return fetch
