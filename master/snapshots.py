"""The master's trees as immutable snapshots, one per good pull, named by its run.

Each upstream pull writes a fresh tree, DATA_DIR/.snapshots/<project>/<run_id>.partial,
that starts as a copy of the newest good tree made of hard links (directories and
symlinks are copied), so unchanged files cost no space; rsync then pulls into it in
place (or, when no slave needs the snapshot before the previous one any more, starts as
that one, made into the previous tree by replaying what the last run changed: ``_recycle``).
rsync writes every changed file to a new file and renames it over the link, so
the previous tree keeps its own; the one change rsync makes to a file in place, its
attributes (a mode, or a time with --checksum), is undone on the previous tree when the
pull is committed: the new tree gets a copy of its own (``_unshare``). This costs a
walk of the tree in one process instead of rsync's --link-dest, which resolves the
whole basis path again for every file (rsync 3.4 and later), three times slower at
10,000 files. A pull that succeeds renames it to
DATA_DIR/.snapshots/<project>/<run_id> and swaps DATA_DIR/<project>, a symlink
with the relative target ".snapshots/<project>/<run_id>", onto it in one
rename; a pull that dies leaves only a ".partial" behind, which is deleted.
Nothing ever writes into a finished snapshot, so a slave ordered to pull run N
gets exactly run N's tree, whatever pulls came after it. The master's rsync
daemon serves DATA_DIR/.snapshots/<project> as the project's module; an order
names the snapshot within it.

Where DATA_DIR/.snapshots/<project> is on btrfs, each snapshot is a subvolume instead and the
next tree starts as a writable btrfs snapshot of the previous one, in constant time
(``master.btrfs``; the SNAPSHOT_METHOD setting). A tree whose previous one is of the other
kind (the first pull after moving to btrfs, or back) starts as a copy made with
``cp --reflink=auto``, which shares the files' data where the file system can.

An admin who puts a project on a disk of its own mounts it at
DATA_DIR/.snapshots/<project> (hard links do not cross file systems).
A tree pulled in place by an earlier release (DATA_DIR/<project> a real
directory) becomes the first snapshot when it is first seen.
"""

import array
import collections
import dataclasses
import errno
import gzip
import json
import logging
import os
import re
import secrets
import shlex
import stat
import threading
import time
import typing

from common import changes, digests
from master import btrfs
from common.processes import OUTPUT_CUT_SHORT, run_briefly
from common.trees import (PARTIAL_SUFFIX, fresh_name, link_copy, new_link, private_copy, real_parents, remove_tree,
                          safe_relative, unchanged_directory)

log = logging.getLogger(__name__)

SNAPSHOTS_DIR = ".snapshots"
LEGACY_NAME = "legacy"
_SWAP_PREFIX = ".swap-"
MANIFEST_PREFIX = ".manifest-"
CHANGES_PREFIX = ".changes-"
_RUN_NAME = re.compile(r"^[0-9]+$")
# A snapshot is not public until the swap: renaming each file at the end buys nothing.
# --info=name1 names what moved, and what rsync skipped (``drop_skipped``); the out-format puts
# rsync's itemized change before each name (``itemized``), as `rsync -i` does but without the
# link targets, which a name may look like. --no-inc-recursive: the whole list is sent, then
# checked, instead of a directory at a time with a round of the protocol each; a pull that changes
# little takes 10-20% less time (measured at 100,000 files: bench/README), and its progress knows
# the total from the start. Both ends then hold the whole list: 5-6 MB more each at 100,000 files
# (12 MB instead of 6-8), about 60 bytes a file; a project of millions of files can take rsync's
# incremental recursion back with --inc-recursive in its rsync_options (they come after these).
ITEM_FORMAT = "%i %n"
SNAPSHOT_OPTIONS = ("--no-delay-updates", "--no-inc-recursive", "--info=name1", f"--out-format={ITEM_FORMAT}")
# A tree is described by a walk at least this often (seconds), else from what rsync itemized
# (the VERIFY_INTERVAL setting).
WALK_INTERVAL = 3600.0
# SNAPSHOT_METHOD: how a new tree starts as the previous one.
AUTO, BTRFS, HARDLINKS = "auto", "btrfs", "hardlinks"
METHODS = (AUTO, BTRFS, HARDLINKS)
# Staging.start: how this one does.
EMPTY, LINKS, SNAPSHOT, COPY = "empty", "links", "snapshot", "copy"
_ITEM_START = re.compile(rb"[<>ch.][fdLDS]")
_DELETING = b"*deleting   "
_CUT_SHORT = OUTPUT_CUT_SHORT.encode()
# What rsync skips (an unsafe symlink under --safe-links, a device or special file), as it says so.
_SKIPPED = re.compile(r'(?:ignoring unsafe symlink "(?P<link>.+?)" -> "|skipping non-regular file "(?P<other>.+)")')
_RSYNC_ESCAPE = re.compile(rb"\\#([0-7]{3})")


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
    start: str = LINKS          # how the tree starts as the basis: EMPTY, LINKS, SNAPSHOT (btrfs) or COPY
    subvolume: bool = False     # whether the tree is a btrfs subvolume


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


def prepare(data_dir, project, run_id, method=AUTO):
    """A fresh staging tree for the pull of ``run_id``; ``method`` is one of METHODS. Raises
    SnapshotError, OSError."""
    basis = live_name(data_dir, project)
    snapshots = _ensure_project_dir(data_dir, project)
    name = str(int(run_id))
    staging = os.path.join(snapshots, name + PARTIAL_SUFFIX)
    btrfs.delete(staging)  # left by a pull of this run that a crash cut short
    if os.path.lexists(os.path.join(snapshots, name)):
        raise SnapshotError(f"snapshot {name} of {project} exists already")
    if basis is None or not os.path.isdir(os.path.join(snapshots, basis)):
        basis = None
    subvolume = _subvolumes(snapshots, method)
    basis_subvolume = basis is not None and btrfs.is_subvolume(os.path.join(snapshots, basis))
    if basis is None:
        start = EMPTY
    elif subvolume and basis_subvolume:
        start = SNAPSHOT
    else:
        start = COPY if subvolume or basis_subvolume else LINKS
    if subvolume and start != SNAPSHOT:
        btrfs.create(staging)
    else:
        os.mkdir(staging, 0o755)   # a snapshot replaces it when the pull starts (``fill``)
    return Staging(data_dir, project, name, staging, SNAPSHOT_OPTIONS, basis, start, subvolume)


def _subvolumes(snapshots, method):
    """Whether new trees in ``snapshots`` are btrfs subvolumes. Raises SnapshotError when ``method``
    asks for btrfs where it cannot be had."""
    if method == HARDLINKS:
        return False
    kind = btrfs.file_system(snapshots)
    on_btrfs = kind == "btrfs"
    if method == BTRFS and not on_btrfs:
        raise SnapshotError(f"SNAPSHOT_METHOD is btrfs but {snapshots} is on {kind or 'an unknown file system'}, "
                            "not btrfs")
    if method == BTRFS and not btrfs.available():
        raise SnapshotError(f"SNAPSHOT_METHOD is btrfs but the {btrfs.COMMAND} command is not installed "
                            "(package btrfs-progs)")
    return on_btrfs and btrfs.available()


def fill(staging, needed=None):
    """Start the staged tree as the previous one, just before the pull writes into it (a pull skipped
    for an unchanged upstream marker never pays for it). Raises OSError.

    With ``needed``, the names of the snapshots that must stay, an older snapshot no slave needs
    any more is made into the previous tree instead, when this process knows what changed between
    the two (``_recycle``): that costs what the last run changed, where a copy made of hard links
    costs a link per file, and pruning the old tree as much again.
    """
    if staging.basis is None:
        return
    basis = snapshot_path(staging.data_dir, staging.project, staging.basis)
    if staging.start == SNAPSHOT:
        os.rmdir(staging.destination)
        btrfs.snapshot(basis, staging.destination)
        log.info("%s: run %s's tree starts as a btrfs snapshot of %s", staging.project, staging.name, staging.basis)
        return
    if staging.start == COPY:
        _copy(basis, staging.destination)
        log.info("%s: run %s's tree starts as a copy of %s, which is %s", staging.project, staging.name,
                 staging.basis, "not a btrfs subvolume" if staging.subvolume else "a btrfs subvolume")
        return
    if needed is not None and _recycle(staging, set(needed)):
        return
    link_copy(basis, staging.destination)


def _copy(source, target):
    """Copy the tree ``source`` into the empty directory ``target`` with every attribute and hard link,
    sharing the files' data where the file system can (a btrfs subvolume and a plain directory, either
    way round). Raises OSError."""
    run_briefly(["cp", "-a", "--reflink=auto", "--", os.path.join(source, "."), target])


def _recycle(staging, needed):
    """Turn the snapshot before the previous one into the staged tree, when no slave needs it and this
    process committed the previous one (and so knows each path that differs between the two); returns
    whether it did. Anything unexpected leaves the staged tree empty for a copy instead."""
    data_dir, project = staging.data_dir, staging.project
    described = _committed.get((data_dir, project))
    if described is None or described.name != staging.basis or described.step is None:
        return False
    step = described.step
    old = snapshot_path(data_dir, project, step.base)
    if step.base in needed or step.base == staging.basis:
        return False
    lock = _tree_locks[(data_dir, project)]
    if not lock.acquire(blocking=False):
        return False   # the sweep is deleting it right now
    try:
        if not os.path.isdir(old) or os.path.islink(old):
            return False
        os.rmdir(staging.destination)
        os.rename(old, staging.destination)
    finally:
        lock.release()
    for directory in (manifest_dir(data_dir, project, step.base), changes_dir(data_dir, project, step.base)):
        remove_tree(directory)
    try:
        _replay(snapshot_path(data_dir, project, staging.basis), staging.destination, step)
    except OSError as error:
        log.warning("%s: snapshot %s could not be made into snapshot %s (%s); copying that instead",
                    project, step.base, staging.basis, error)
        remove_tree(staging.destination)
        os.mkdir(staging.destination, 0o755)
        return False
    log.info("%s: snapshot %s, which no slave needs any more, starts run %s's tree (%d paths made as in %s)",
             project, step.base, staging.name, len(step.changed) + len(step.deleted), staging.basis)
    return True


def _replay(source, target, step):
    """Make ``target`` (the tree ``step`` starts from) the same as ``source`` (where it ends): hard links
    to its files, copies of its directories and symlinks, with their modes and times. Raises OSError,
    also when a path does not end up as in ``source``."""
    opened = {}   # directory -> its mode, for those made writable on the way
    touched = set()

    def writable(directory):
        if directory not in opened:
            mode = stat.S_IMODE(os.lstat(directory).st_mode)
            if not mode & stat.S_IWUSR:
                os.chmod(directory, mode | stat.S_IRWXU)
            opened[directory] = mode

    def parent(path):
        return path.rpartition("/")[0] or "."

    def full(root, path):
        return root if path == "." else os.path.join(root, path)

    for path in step.deleted:   # children first
        destination = full(target, path)
        if os.path.lexists(destination):
            writable(full(target, parent(path)))
            remove_tree(destination)
            if os.path.lexists(destination):
                raise OSError(f"cannot remove {path}")
        touched.add(parent(path))
    for path in step.changed:   # parents first
        touched.add(path if path == "." else parent(path))
        if path == ".":
            continue
        info = os.lstat(full(source, path))
        destination = full(target, path)
        writable(full(target, parent(path)))
        if stat.S_ISDIR(info.st_mode):
            if os.path.lexists(destination) and not (os.path.isdir(destination) and not os.path.islink(destination)):
                remove_tree(destination)
            if not os.path.lexists(destination):
                os.mkdir(destination, 0o700)
            touched.add(path)
        elif stat.S_ISREG(info.st_mode):
            os.replace(new_link(full(source, path), destination), destination)
        elif stat.S_ISLNK(info.st_mode):
            link = f"{destination}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
            os.symlink(os.readlink(full(source, path)), link)
            os.utime(link, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
            os.replace(link, destination)
        else:
            raise OSError(f"{path} is neither a file, a directory nor a symlink")
    # Every directory written in, deepest first: its mode and times as in ``source``.
    touched.update("." if directory == target else os.path.relpath(directory, target) for directory in opened)
    for path in sorted(touched, key=lambda p: -1 if p == "." else p.count("/"), reverse=True):
        if not os.path.lexists(full(source, path)):
            continue   # gone in ``source`` too (a directory deleted with its parent)
        info = os.lstat(full(source, path))
        os.chmod(full(target, path), stat.S_IMODE(info.st_mode))
        os.utime(full(target, path), ns=(info.st_atime_ns, info.st_mtime_ns))
    for path in step.changed:
        if not _same_entry(os.lstat(full(source, path)), full(source, path), full(target, path)):
            raise OSError(f"{path} is not as in the tree it should be")
    for path in step.deleted:
        if path not in step.changed and os.path.lexists(full(target, path)):
            raise OSError(f"{path} is still there")


def _same_entry(info, source, target):
    try:
        other = os.lstat(target)
    except FileNotFoundError:
        return False
    if stat.S_IFMT(info.st_mode) != stat.S_IFMT(other.st_mode):
        return False
    if stat.S_ISREG(info.st_mode):
        return (info.st_dev, info.st_ino) == (other.st_dev, other.st_ino)
    if stat.S_ISLNK(info.st_mode):
        return os.readlink(source) == os.readlink(target)
    return stat.S_IMODE(info.st_mode) == stat.S_IMODE(other.st_mode) and int(info.st_mtime) == int(other.st_mtime)


@dataclasses.dataclass(frozen=True)
class Sealed:
    """A finished snapshot: its digest, and what changed since the tree it was linked from."""
    name: str
    digest: str
    changes: changes.ChangeList | None   # None: there was no previous tree to compare with
    saved: typing.Callable[[], None] = lambda: None   # waits until its manifest file is written


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


def read_changes(data_dir, project, name):
    """The change list kept with snapshot ``name`` (base, base_digest, changed, deleted, touch), or None."""
    try:
        with gzip.open(os.path.join(changes_dir(data_dir, project, name), "changes.gz"), "rt",
                       encoding="utf-8") as stream:
            body = json.load(stream)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log.warning("the change list of snapshot %s of %s is unreadable: %s", name, project, error)
        return None
    body.setdefault("touch", [])
    return body


@dataclasses.dataclass(frozen=True)
class _Step:
    """How snapshot ``base`` becomes the one after it: the paths that differ (by their entry, or a file by
    its inode), parents first, and the paths gone, children first."""
    base: str
    changed: tuple[str, ...]
    deleted: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Described:
    """The snapshot a project last committed in this process: the next pull's change list starts
    from its manifest without reading it back, and ``step`` lets the snapshot before it be reused."""
    name: str
    entries: list
    digest: str
    inodes: array.array | None   # each entry's inode (0: not a file), None when not all on one device
    step: _Step | None
    walked_at: float = 0.0       # time.monotonic() of the walk this manifest comes from


# By (data_dir, project), the most recently committed last. Bounded: a project past the bound reads its
# manifest back from disk and starts its next tree as a copy.
_committed = {}
_COMMITTED_ENTRIES = 1_000_000   # about 350 MB, digest lines included
_committed_lock = threading.Lock()
# (data_dir, project, name) -> the thread saving that snapshot's manifest (``_save_aside``).
_saving = {}
# A tree being deleted by ``prune`` must not be reused by a pull at the same moment, nor the reverse.
_tree_locks = collections.defaultdict(threading.Lock)


def _manifest_of(data_dir, project, name):
    """(manifest, digest) of snapshot ``name``: the one this process committed last, else the saved
    one, else from a walk of it (an adopted tree), saved then."""
    cached = _committed.get((data_dir, project))
    if cached is not None and cached.name == name:
        return cached.entries, cached.digest
    _wait_saved(data_dir, project, name)
    path = manifest_path(data_dir, project, name)
    try:
        entries = digests.load(path)
    except (OSError, ValueError):
        entries = digests.manifest(snapshot_path(data_dir, project, name))
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        digests.save(entries, path)
    return entries, digests.digest(entries)


def commit(staging, itemized=None, walk_interval=WALK_INTERVAL):
    """Make the staged tree the newest good one: describe it, rename it, swap DATA_DIR/<project> onto it.

    The new tree's manifest (kept beside it) and digest, and the change list
    against the previous tree, come from one walk of it, or, with ``itemized``
    (what rsync itemized of the pull, see ``itemized``) and the previous tree's
    manifest at hand, from that manifest and the paths rsync named, each looked
    at again: that costs what the pull changed. A walk is made at least every
    ``walk_interval`` seconds all the same, and then the two are compared. Raises OSError;
    DATA_DIR/<project> then still points at the previous tree.
    """
    data_dir, project = staging.data_dir, staging.project
    before = _committed.get((data_dir, project))
    if before is None or before.name != staging.basis:
        before = None
    incremental = None
    if itemized is not None and before is not None and staging.start != COPY:   # a copy's inodes are all new
        incremental = _from_itemized(staging, before, itemized)
    files, walked_at, edits = None, before.walked_at if before is not None else 0.0, None
    if incremental is None or time.monotonic() - walked_at >= walk_interval:
        files, walked_at = {}, time.monotonic()
        entries = digests.manifest(staging.destination, files)
        if incremental is not None and incremental[0] != entries:
            log.error("%s: the manifest from what rsync itemized differs from a walk of the tree, first at %s; "
                      "the walk's is kept", project,
                      ", ".join(map(repr, digests.first_differences(entries, incremental[0]))) or "the root")
        elif incremental is not None:
            log.info("%s: a walk of run %s's tree agrees with what rsync itemized", project, staging.name)
        incremental = None
    else:
        entries, moved, edits = incremental
        log.info("%s: run %s's tree described from the %d paths rsync itemized, no walk", project, staging.name,
                 len(moved))
    os.makedirs(manifest_dir(data_dir, project, staging.name), mode=0o755, exist_ok=True)
    digest = digests.digest(entries)   # before the save starts: both want the entries' lines
    saved = _save_aside(entries, data_dir, project, staging.name)
    change_list, unshared = None, []
    if staging.basis is not None:
        base_entries, base_digest = _manifest_of(data_dir, project, staging.basis)
        change_list = changes.between(base_entries, entries, edits)
        if staging.start == LINKS:   # a btrfs snapshot or a copy shares no inode with the previous tree
            unshared = _unshare(staging, base_entries, change_list)
        if files is not None:
            for path in unshared:
                info = os.lstat(os.path.join(staging.destination, path))
                files[path] = (info.st_dev, info.st_ino)
        _write_changes(data_dir, project, staging.name, staging.basis, base_digest, change_list)
    if files is not None:
        inodes = _inodes(entries, files)
    else:
        inodes = _inodes_after(before, entries, edits, staging.destination, unshared)
    snapshots = project_snapshots(data_dir, project)
    os.rename(staging.destination, os.path.join(snapshots, staging.name))
    _point_at(data_dir, project, staging.name)
    for directory in (snapshots, data_dir):
        _fsync_directory(directory)
    step = None
    if change_list is not None and before is not None and staging.start == LINKS:
        changed = set(change_list.changed)
        if incremental is not None:
            changed.update(moved)   # every file rsync wrote is named: its inode is new
        elif before.inodes is not None and inodes is not None:
            # A path is the same in both trees when its entry is and, for a file, its inode: rsync
            # may replace a file by one of the same size and time (--checksum).
            old = dict(zip((entry.path for entry in before.entries), before.inodes))
            changed.update(entry.path for entry, inode in zip(entries, inodes)
                           if inode and old.get(entry.path) != inode)
        else:
            changed = None
        if changed is not None:
            step = _Step(staging.basis, tuple(digests.sort_paths(list(changed))), change_list.deleted)
    _remember(data_dir, project, _Described(staging.name, entries, digest, inodes, step, walked_at))
    return Sealed(staging.name, digest, change_list, saved)


def _save_aside(entries, data_dir, project, name):
    """Save the manifest of snapshot ``name`` in a thread of its own (compressing it lets go of the GIL):
    the orders need only its digest, and a slave fetches the file only when its tree differs. Returns
    what waits for the file (``Sealed.saved``). A manifest that cannot be saved is logged; whoever needs
    it walks the snapshot instead (``_manifest_of``)."""
    key = (data_dir, project, name)

    def save():
        try:
            digests.save(entries, manifest_path(data_dir, project, name))
        except OSError as error:
            log.error("%s: the manifest of snapshot %s cannot be saved (%s); it is walked again when needed",
                      project, name, error)
        finally:
            with _committed_lock:
                if _saving.get(key) is threading.current_thread():
                    del _saving[key]
    thread = threading.Thread(target=save, name=f"manifest-{project}-{name}")
    with _committed_lock:
        _saving[key] = thread
    thread.start()
    return thread.join


def _wait_saved(data_dir, project, name):
    """Wait for the manifest of snapshot ``name`` if a thread is still saving it."""
    with _committed_lock:
        thread = _saving.get((data_dir, project, name))
    if thread is not None:
        thread.join()


def itemized(log_path, destination):
    """What rsync itemized of the pull into ``destination``, from the pull's log: (paths changed, paths
    deleted, whether it made hard links); None when the log cannot vouch for all of it (unreadable,
    no rsync into the tree, one without the itemizing out-format, or one whose end is not in the
    log: a full disk drops the lines that follow). The log of another rsync (the upstream marker's) is left
    out. A line of anything else that looks like an itemized one only names a path that is looked
    at again for nothing."""
    changed, deleted, linked = set(), set(), False
    into_tree = open_segment = seen = False
    wanted = os.path.normpath(os.fspath(destination))
    try:
        with open(log_path, "rb") as lines:
            for raw in lines:
                line = raw.rstrip(b"\n")
                if line.startswith(b"$ "):
                    if open_segment:
                        return None
                    try:
                        argv = shlex.split(line[2:].decode("utf-8", "surrogateescape"))
                    except ValueError:
                        return None
                    into_tree = bool(argv) and os.path.normpath(argv[-1]) == wanted
                    if into_tree and f"--out-format={ITEM_FORMAT}" not in argv:
                        return None
                    open_segment = into_tree
                    seen = seen or into_tree
                    continue
                if not into_tree:
                    continue
                if line == _CUT_SHORT:
                    return None
                if line.startswith(b"# exit code "):
                    open_segment = into_tree = False
                    continue
                if line.startswith(_DELETING):
                    target = deleted
                elif len(line) > 12 and line[11:12] == b" " and _ITEM_START.match(line[:2]):
                    target = changed
                    linked = linked or line.startswith(b"hf")
                else:
                    continue
                target.add(_rsync_name(line[12:]))
    except OSError:
        return None
    return (changed, deleted, linked) if seen and not open_segment else None


def _inodes_after(before, entries, edits, root, unshared):
    """Each entry's inode: the previous tree's, but for the entries ``edits`` made and the files
    ``_unshare`` replaced, looked at again (None when the previous tree's are not known)."""
    if before.inodes is None:
        return None

    def inode(entry):
        if entry.type != digests.FILE:
            return 0
        try:
            info = os.lstat(os.path.join(root, entry.path))
        except FileNotFoundError:
            return 0
        return info.st_ino if stat.S_ISREG(info.st_mode) else 0
    inodes = digests.apply_edits(before.inodes, edits, lambda edit: map(inode, edit.entries), array.array("Q"))
    for path in unshared:
        index = digests.index_of(entries, path)
        if index is not None:
            inodes[index] = inode(entries[index])
    return inodes


def _from_itemized(staging, before, itemized):
    """(manifest, paths whose files rsync wrote, the edits that made the manifest from the previous one)
    of the staged tree from the previous tree's manifest and what rsync itemized; None when that is no
    cheaper than a walk. Costs what the pull changed, but for hard links made or changed."""
    changed, deleted, linked = itemized
    if len(changed) + len(deleted) > max(len(before.entries) // 4, 1000):
        return None   # a walk costs about as much
    entries = before.entries
    again = set(changed)   # with each hard-link group a changed or deleted path was in (digests.splice)
    if linked:
        # A new hard link may point at a file rsync left alone, which it then does not name.
        if before.inodes is None:
            return None
        by_inode = {}
        for entry, inode in zip(before.entries, before.inodes):
            if inode:
                by_inode.setdefault(inode, []).append(entry.path)
        for path in changed:
            try:
                info = os.lstat(os.path.join(staging.destination, path))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                again.update(by_inode.get(info.st_ino, ()))
    # A directory rsync named as deleted and that is still a directory (made again, or named by
    # something else in the log) keeps what is under it: it is looked at again instead.
    gone = []
    for path in deleted:
        full = os.path.join(staging.destination, path)
        previous = digests.find(entries, path)
        if os.path.isdir(full) and not os.path.islink(full) and previous is not None and previous.type == digests.DIR:
            again.add(path)
        else:
            gone.append(path)
    spliced, edits = digests.splice(entries, staging.destination, again, gone, deleted)
    return spliced, again, edits


def _inodes(entries, files):
    """Each entry's inode from the walk's (device, inode) by path; None when they are not on one device."""
    devices = {device for device, _ in files.values()}
    if len(devices) > 1:
        return None
    return array.array("Q", (files[entry.path][1] if entry.path in files else 0 for entry in entries))


def _spare(data_dir, project, live):
    """The snapshot the next pull of ``project`` would make into its tree: the one before ``live``,
    when this process committed ``live`` and so knows what changed between the two."""
    described = _committed.get((data_dir, project))
    if described is None or described.name != live or described.step is None:
        return None
    return described.step.base


def _remember(data_dir, project, described):
    with _committed_lock:
        digests.keep_bounded(_committed, (data_dir, project), described, _COMMITTED_ENTRIES,
                             lambda kept: len(kept.entries))


def drop_skipped(staging, log_path):
    """Remove from the staged tree what the previous tree had at a path rsync skipped this time (say, a
    directory upstream replaced by an unsafe symlink): a tree pulled afresh has nothing there. Returns
    the paths that went. Raises OSError."""
    if staging.basis is None:
        return []
    removed = []
    for path in _skipped(log_path):
        full = os.path.join(staging.destination, path)
        if not safe_relative(path) or not real_parents(staging.destination, path) or not os.path.lexists(full):
            continue
        with unchanged_directory(os.path.dirname(full)):
            if remove_tree(full):
                removed.append(path)
    if removed:
        log.info("%s: %d entries upstream replaced by what rsync skipped are gone from the new tree",
                 staging.project, len(removed))
    return removed


def _skipped(log_path):
    """The paths rsync said it skipped (``_SKIPPED``) in the log at ``log_path``."""
    try:
        with open(log_path, encoding="utf-8", errors="surrogateescape") as lines:
            found = [match.group("link") or match.group("other") for match in map(_SKIPPED.search, lines) if match]
    except FileNotFoundError:
        return []
    return [_rsync_name(os.fsencode(name)) for name in found]


def _rsync_name(printed):
    """The tree's path of a name as rsync prints it (bytes): its escapes undone, a directory's "/" off."""
    if b"\\#" in printed:
        printed = _RSYNC_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), printed)
    printed = printed[:-1] if printed.endswith(b"/") else printed
    return os.fsdecode(printed) if printed not in (b"", b".") else "."


def can_list(staging):
    """Whether the pull into ``staging`` may leave deletions to ``delete_unlisted``: the manifest of the
    tree it starts as is at hand, to compare rsync's names with."""
    before = _committed.get((staging.data_dir, staging.project))
    return staging.basis is not None and before is not None and before.name == staging.basis


def delete_unlisted(staging, listed, log_path, files_total):
    """After a pull that named every upstream entry (``listed``: the unchanged ones, as rsync printed
    them; the log: the others), delete from the staged tree what the tree it started as had and rsync
    did not name, children with their directory, each directory's times kept. That is rsync's
    --delete-delay without its second look at every directory of the tree. Returns the paths deleted,
    or None, deleting nothing, when the names cannot vouch for the upstream's whole list: they are
    not as many as rsync counted (``files_total``, its "Number of files"), an unchanged one is not in
    the previous tree, or a changed one is not in the new one. Raises OSError when a path cannot be
    deleted."""
    before = _committed.get((staging.data_dir, staging.project))
    items = itemized(log_path, staging.destination)
    if before is None or before.name != staging.basis or items is None or files_total is None:
        return _cannot_vouch(staging, "its log or its count of entries is missing")
    changed, gone, _ = items
    skipped = set(_skipped(log_path))
    # One set of the unchanged names and one pass over the previous tree's entries, in order: a tree of
    # a million entries costs one set of them.
    unchanged = {_rsync_name(name.encode("utf-8", "surrogateescape")) if "\\#" in name or name.endswith("/")
                 else name for name in listed}
    listed.clear()
    kept, candidates = 0, []
    for entry in before.entries:
        if entry.path in unchanged:
            kept += 1
        elif entry.path not in changed and entry.path not in skipped and entry.path not in gone \
                and entry.path != ".":
            candidates.append(entry.path)
    named = len(unchanged) + len(changed - unchanged) + len(skipped - unchanged - changed)
    root = staging.destination
    if named != files_total:
        return _cannot_vouch(staging, f"it named {named} entries of the {files_total} it counted")
    if kept != len(unchanged):
        return _cannot_vouch(staging, "an entry it left unchanged is not in the previous tree")
    if not all(os.path.lexists(os.path.join(root, path)) for path in changed if path != "."):
        return _cannot_vouch(staging, "an entry it changed is not in the new tree")
    return delete_paths(staging, candidates)


def delete_paths(staging, paths):
    """Delete ``paths`` (sorted, parents first) from the staged tree, each with what is under it,
    never through a symlink, each directory's times kept. Returns the paths that went (not those
    under one that went, nor those already gone). Raises OSError when one cannot be deleted."""
    root = staging.destination
    deleted, under = [], set()
    for path in paths:
        if any(ancestor in under for ancestor in _ancestors(path.rpartition("/")[0])):
            continue   # went with its directory
        full = os.path.join(root, path)
        if not safe_relative(path) or not real_parents(root, path) or not os.path.lexists(full):
            continue
        with unchanged_directory(os.path.dirname(full)):
            remove_tree(full)
        if os.path.lexists(full):
            raise OSError(f"cannot delete {path!r}, which upstream no longer has")
        deleted.append(path)
        under.add(path)
    if deleted:
        log.info("%s: %d entries upstream no longer has deleted from run %s's tree", staging.project,
                 len(deleted), staging.name)
    return deleted


def previous_tree(staging):
    """(path, manifest) of the snapshot the staged tree starts as, or None for a first pull."""
    if staging.basis is None:
        return None
    entries, _ = _manifest_of(staging.data_dir, staging.project, staging.basis)
    return snapshot_path(staging.data_dir, staging.project, staging.basis), entries


def _cannot_vouch(staging, why):
    log.warning("%s: rsync's names in run %s's pull cannot say what upstream deleted (%s); pulling again "
                "with rsync's own deletions", staging.project, staging.name, why)


def _ancestors(path):
    while path:
        yield path
        path = path.rpartition("/")[0]


def _unshare(staging, base_entries, change_list):
    """Give the new tree its own copy of each file whose attributes rsync changed in place, and put
    the previous tree's attributes back on the file it shares with the trees before it. Returns the
    paths of the new tree that got a file of their own."""
    basis_dir = snapshot_path(staging.data_dir, staging.project, staging.basis)
    shared, files = {}, []
    for path in change_list.changed:
        try:
            info = os.lstat(os.path.join(staging.destination, path))
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        files.append((path, (info.st_dev, info.st_ino)))
        old = digests.find(base_entries, path)
        if old is None or old.type != digests.FILE:
            continue
        try:
            old_info = os.lstat(os.path.join(basis_dir, path))
        except FileNotFoundError:
            continue
        if (old_info.st_dev, old_info.st_ino) == (info.st_dev, info.st_ino):
            shared.setdefault((info.st_dev, info.st_ino), (old, []))
    # Every path of the new tree on such a file is in the change list: its attributes moved.
    for path, inode in files:
        if inode in shared:
            shared[inode][1].append(path)
    replaced = []
    for old, paths in shared.values():
        first = os.path.join(staging.destination, paths[0])
        for path in paths:
            target = os.path.join(staging.destination, path)
            with unchanged_directory(os.path.dirname(target)):
                replacement = private_copy(target) if path == paths[0] else new_link(first, target)
                os.replace(replacement, target)
        original = os.path.join(basis_dir, old.path)
        os.chmod(original, old.mode)
        os.utime(original, (old.mtime, old.mtime))
        log.info("%s of %s: rsync changed the attributes of a file shared with snapshot %s; each keeps its own",
                 paths[0], staging.project, staging.basis)
        replaced += paths
    return replaced


def _restore_basis(staging):
    """Give the previous tree's files back the modes and times its manifest says (rsync may have
    changed them in place, on the files the staged tree shares, before the pull failed)."""
    if staging.start != LINKS or not os.path.isdir(staging.destination) or not os.listdir(staging.destination):
        return  # never filled, or a snapshot or copy: nothing shares the previous tree's files
    basis_dir = snapshot_path(staging.data_dir, staging.project, staging.basis)
    _wait_saved(staging.data_dir, staging.project, staging.basis)
    try:
        entries = digests.load(manifest_path(staging.data_dir, staging.project, staging.basis))
    except (OSError, ValueError):
        return
    restored = 0
    for entry in entries:
        if entry.type != digests.FILE:
            continue
        path = os.path.join(basis_dir, entry.path)
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            if stat.S_IMODE(st.st_mode) != entry.mode:
                os.chmod(path, entry.mode)
                restored += 1
            if int(st.st_mtime) != entry.mtime:
                os.utime(path, (entry.mtime, entry.mtime))
                restored += 1
        except OSError as error:
            log.warning("cannot restore %s of snapshot %s of %s: %s", entry.path, staging.basis, staging.project, error)
    if restored:
        log.info("%s: the failed pull had changed %d attributes of snapshot %s in place; restored",
                 staging.project, restored, staging.basis)


def abort(staging):
    """Delete what a failed pull wrote, and undo what it changed in place on the previous tree's files
    (attributes: see ``_unshare``). Never raises."""
    _restore_basis(staging)
    btrfs.delete(staging.destination)
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
    """Delete every finished snapshot of ``project`` but the live one, any newer one, those named
    in ``keep`` and the one the next pull starts from. Returns the names removed. Never raises.

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
    spare = _spare(data_dir, project, live)
    if spare is not None:
        wanted.add(spare)   # the next pull's tree starts from it (``_recycle``)
    newest = int(live) if _RUN_NAME.match(live) else None
    removed = []
    for name in candidates:
        if name in wanted or (newest is not None and _RUN_NAME.match(name) and int(name) > newest):
            continue
        with _tree_locks[(data_dir, project)]:
            if not os.path.isdir(snapshot_path(data_dir, project, name)):
                continue   # a pull took it for its tree
            gone = btrfs.delete(snapshot_path(data_dir, project, name))
        if gone:
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
        if name.endswith(PARTIAL_SUFFIX) and btrfs.delete(os.path.join(snapshots, name)):
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
