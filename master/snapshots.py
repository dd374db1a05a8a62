"""The master's trees as immutable snapshots, one per good pull, named by its run.

Each upstream pull writes a fresh tree, DATA_DIR/.snapshots/<project>/<run_id>.partial,
with rsync's --link-dest pointing at the newest good tree, so unchanged files
are hard links and cost no space. A pull that succeeds renames it to
DATA_DIR/.snapshots/<project>/<run_id> and swaps DATA_DIR/<project>, a symlink
with the relative target ".snapshots/<project>/<run_id>", onto it in one
rename; a pull that dies leaves only a ".partial" behind, which is deleted.
Nothing ever writes into a finished snapshot, so a slave ordered to pull run N
gets exactly run N's tree, whatever pulls came after it. The master's rsync
daemon serves DATA_DIR/.snapshots/<project> as the project's module; an order
names the snapshot within it.

An admin who puts a project on a disk of its own mounts it at
DATA_DIR/.snapshots/<project> (hard links do not cross file systems).
A tree pulled in place by an earlier release (DATA_DIR/<project> a real
directory) becomes the first snapshot when it is first seen.
"""

import dataclasses
import errno
import gzip
import json
import logging
import os
import re
import secrets
import stat

from common import changes, digests
from common.trees import PARTIAL_SUFFIX, fresh_name, remove_tree

log = logging.getLogger(__name__)

SNAPSHOTS_DIR = ".snapshots"
LEGACY_NAME = "legacy"
_SWAP_PREFIX = ".swap-"
MANIFEST_PREFIX = ".manifest-"
CHANGES_PREFIX = ".changes-"
_RUN_NAME = re.compile(r"^[0-9]+$")
# A snapshot is not public until the swap: renaming each file at the end buys nothing.
SNAPSHOT_OPTIONS = ("--no-delay-updates",)


class SnapshotError(Exception):
    """DATA_DIR/<project> or its snapshots are in a state the master must not touch."""


@dataclasses.dataclass(frozen=True)
class Staging:
    """Where one pull writes, and the rsync options that make it a snapshot of the previous tree."""
    data_dir: str
    project: str
    name: str
    destination: str
    options: tuple[str, ...]
    basis: str | None   # name of the snapshot unchanged files are linked from


def snapshots_root(data_dir):
    return os.path.join(data_dir, SNAPSHOTS_DIR)


def project_snapshots(data_dir, project):
    """The rsync daemon's module path for ``project``."""
    return os.path.join(data_dir, SNAPSHOTS_DIR, project)


def snapshot_path(data_dir, project, name):
    return os.path.join(data_dir, SNAPSHOTS_DIR, project, name)


def live_name(data_dir, project):
    """The snapshot DATA_DIR/<project> points at, or None when there is none yet.

    Raises SnapshotError when DATA_DIR/<project> is something else than our symlink
    (a real directory is adopted by ``adopt_in_place_tree`` first).
    """
    path = os.path.join(data_dir, project)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        prefix = f"{SNAPSHOTS_DIR}/{project}/"
        target = os.readlink(path)
        name = target[len(prefix):] if target.startswith(prefix) else ""
        if name and "/" not in name and not name.endswith(PARTIAL_SUFFIX) and name not in (".", ".."):
            return name
    raise SnapshotError(f"{path} is not a snapshot link of mirror-sync; move it away")


def _ensure_project_dir(data_dir, project):
    path = project_snapshots(data_dir, project)
    os.makedirs(path, mode=0o755, exist_ok=True)
    return path


def adopt_in_place_tree(data_dir, project, name):
    """Make a real DATA_DIR/<project> (pulled in place by an earlier release) the snapshot ``name``.

    Returns the adopted name, or None when there was nothing to adopt. Raises
    SnapshotError when it cannot be moved (say, a mount point).
    """
    path = os.path.join(data_dir, project)
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return None
    except FileNotFoundError:
        return None
    snapshots = _ensure_project_dir(data_dir, project)
    name = fresh_name(snapshots, name)
    target = os.path.join(snapshots, name)
    try:
        os.rename(path, target)
    except OSError as error:
        if error.errno in (errno.EXDEV, errno.EBUSY):
            raise SnapshotError(
                f"{path} is a mount point and cannot become a snapshot; mount that disk at "
                f"{snapshots} instead") from None
        raise SnapshotError(f"cannot move {path} to {target}: {error.strerror}") from None
    _point_at(data_dir, project, name)
    log.info("%s was a tree pulled in place; it is now snapshot %s", path, name)
    return name


def prepare(data_dir, project, run_id):
    """A fresh staging tree for the pull of ``run_id``. Raises SnapshotError, OSError."""
    basis = live_name(data_dir, project)
    snapshots = _ensure_project_dir(data_dir, project)
    name = str(int(run_id))
    staging = os.path.join(snapshots, name + PARTIAL_SUFFIX)
    remove_tree(staging)  # left by a pull of this run that a crash cut short
    if os.path.lexists(os.path.join(snapshots, name)):
        raise SnapshotError(f"snapshot {name} of {project} exists already")
    os.mkdir(staging, 0o755)
    options = SNAPSHOT_OPTIONS
    if basis is not None and os.path.isdir(os.path.join(snapshots, basis)):
        options += (f"--link-dest={os.path.abspath(os.path.join(snapshots, basis))}",)
    else:
        basis = None
    return Staging(data_dir, project, name, staging, options, basis)


@dataclasses.dataclass(frozen=True)
class Sealed:
    """A finished snapshot: its digest, and what changed since the tree it was linked from."""
    name: str
    digest: str
    changes: changes.ChangeList | None   # None: there was no previous tree to compare with


def manifest_dir(data_dir, project, name):
    """Where the manifest of snapshot ``name`` is kept, inside the module: slaves fetch it to name
    the paths where their tree differs."""
    return os.path.join(project_snapshots(data_dir, project), f"{MANIFEST_PREFIX}{name}")


def manifest_path(data_dir, project, name):
    return os.path.join(manifest_dir(data_dir, project, name), "manifest.gz")


def changes_dir(data_dir, project, name):
    """Where the change list from the previous snapshot to ``name`` is kept, inside the module."""
    return os.path.join(project_snapshots(data_dir, project), f"{CHANGES_PREFIX}{name}")


def _write_changes(data_dir, project, name, base, base_digest, change_list):
    directory = changes_dir(data_dir, project, name)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    body = {"base": base, "base_digest": base_digest, "changed": list(change_list.changed),
            "deleted": list(change_list.deleted), "touch": [list(pair) for pair in change_list.touch]}
    tmp = os.path.join(directory, ".changes.gz.tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=3) as out:
        json.dump(body, out)
    os.replace(tmp, os.path.join(directory, "changes.gz"))


def _manifest_of(data_dir, project, name):
    """The saved manifest of snapshot ``name``, walking it once if it has none (an adopted tree)."""
    path = manifest_path(data_dir, project, name)
    try:
        return digests.load(path)
    except (OSError, ValueError):
        entries = digests.manifest(snapshot_path(data_dir, project, name))
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        digests.save(entries, path)
        return entries


def commit(staging):
    """Make the staged tree the newest good one: describe it, rename it, swap DATA_DIR/<project> onto it.

    One walk of the new tree gives its manifest (kept beside it) and digest, and
    the change list against the previous tree. Raises OSError; DATA_DIR/<project>
    then still points at the previous tree.
    """
    data_dir, project = staging.data_dir, staging.project
    entries = digests.manifest(staging.destination)
    os.makedirs(manifest_dir(data_dir, project, staging.name), mode=0o755, exist_ok=True)
    digests.save(entries, manifest_path(data_dir, project, staging.name))
    change_list = None
    if staging.basis is not None:
        base_entries = _manifest_of(data_dir, project, staging.basis)
        change_list = changes.between(base_entries, entries)
        _write_changes(data_dir, project, staging.name, staging.basis, digests.digest(base_entries), change_list)
    snapshots = project_snapshots(data_dir, project)
    os.rename(staging.destination, os.path.join(snapshots, staging.name))
    _point_at(data_dir, project, staging.name)
    for directory in (snapshots, data_dir):
        _fsync_directory(directory)
    return Sealed(staging.name, digests.digest(entries), change_list)


def abort(staging):
    """Delete what a failed pull wrote; the previous tree is untouched. Never raises."""
    remove_tree(staging.destination)
    remove_tree(manifest_dir(staging.data_dir, staging.project, staging.name))
    remove_tree(changes_dir(staging.data_dir, staging.project, staging.name))


def _point_at(data_dir, project, name):
    """Swap DATA_DIR/<project> onto snapshot ``name`` in one rename."""
    link = os.path.join(data_dir, f"{_SWAP_PREFIX}{project}-{secrets.token_hex(6)}")
    os.symlink(f"{SNAPSHOTS_DIR}/{project}/{name}", link)
    try:
        os.replace(link, os.path.join(data_dir, project))
    except OSError:
        os.unlink(link)
        raise


def exists(data_dir, project, name):
    return os.path.isdir(snapshot_path(data_dir, project, name))


def names(data_dir, project):
    """Finished snapshots of ``project``, oldest run first."""
    try:
        entries = os.listdir(project_snapshots(data_dir, project))
    except FileNotFoundError:
        return []
    finished = [name for name in entries
                if not name.endswith(PARTIAL_SUFFIX) and not name.startswith(".")]
    return sorted(finished, key=lambda name: (not _RUN_NAME.match(name), int(name) if _RUN_NAME.match(name)
                                              else 0, name))


def prune(data_dir, project, keep):
    """Delete every finished snapshot of ``project`` but the live one, any newer one and those named
    in ``keep``. Returns the names removed. Never raises.

    A pull being committed has renamed its snapshot but may not have swapped the link yet: the
    names are listed before the link is read, and none newer than the live one goes.
    """
    candidates = names(data_dir, project)
    try:
        live = live_name(data_dir, project)
    except (SnapshotError, OSError) as error:
        log.warning("not pruning the snapshots of %s: %s", project, error)
        return []
    if live is None:
        return []
    wanted = {str(name) for name in keep} | {live}
    newest = int(live) if _RUN_NAME.match(live) else None
    removed = []
    for name in candidates:
        if name in wanted or (newest is not None and _RUN_NAME.match(name) and int(name) > newest):
            continue
        if remove_tree(snapshot_path(data_dir, project, name)):
            remove_tree(manifest_dir(data_dir, project, name))
            remove_tree(changes_dir(data_dir, project, name))
            removed.append(name)
    if removed:
        log.info("pruned snapshots %s of %s: no slave needs them", ", ".join(removed), project)
    return removed


def remove_leftovers(data_dir, project):
    """Delete staging trees and swap links a stopped pull left; returns how many went."""
    removed = 0
    snapshots = project_snapshots(data_dir, project)
    try:
        entries = os.listdir(snapshots)
    except FileNotFoundError:
        entries = []
    for name in entries:
        if name.endswith(PARTIAL_SUFFIX) and remove_tree(os.path.join(snapshots, name)):
            removed += 1
    try:
        links = [n for n in os.listdir(data_dir) if n.startswith(f"{_SWAP_PREFIX}{project}-")]
    except FileNotFoundError:
        links = []
    for name in links:
        if remove_tree(os.path.join(data_dir, name)):
            removed += 1
    return removed


def _fsync_directory(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as error:
        log.warning("cannot flush %s to disk: %s", path, error)
    finally:
        os.close(fd)
