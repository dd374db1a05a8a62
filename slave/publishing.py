"""How a pulled tree becomes PUBLIC_DIR/<project>: in place ("delay") or as a snapshot swapped in ("atomic").

In atomic mode each pull builds a whole tree in
PUBLIC_DIR/.mirrorsync-snapshots/<project>/<name>/ (hard links to the live tree
for unchanged files: through rsync's --link-dest for a full pull, as a copy of
the live tree made of hard links for a changes-only one, see ``fill``), and PUBLIC_DIR/<project> is a
symlink with a relative target, ".mirrorsync-snapshots/<project>/<name>", that
one rename points at the new tree: whoever resolves PUBLIC_DIR/<project> gets a
whole old tree or a whole new one. The previous tree stays until the next
publish, so a reader who entered it keeps working. (A client that fetches an
index and then the files it lists in separate requests resolves the path each
time and may still straddle a swap.) The relative target keeps working when
PUBLIC_DIR is moved or served from a chroot.

Switching a project between the modes swaps a real directory and the symlink
with renameat2(RENAME_EXCHANGE) where the file system has it; elsewhere
PUBLIC_DIR/<project> is missing for a moment, and a warning says so.

Project names start with a letter or a digit, so the dot directory never clashes
with a project. The web, FTP and rsync servers must follow symlinks (Apache:
``Options FollowSymLinks``) and should not serve or list dot directories: the
snapshots are reachable through PUBLIC_DIR/<project> only.

Inside a project's snapshot directory, "<name>.partial" is a tree being pulled
and ".swap-*" a symlink or directory being renamed: both are leftovers when no
pull runs, and ``remove_leftovers`` deletes them at start.
"""

import dataclasses
import logging
import os
import secrets
import stat
from dataclasses import dataclass

from common.trees import (PARTIAL_SUFFIX, exchange as _exchange, fresh_name, link_copy, private_copy, real_parents,
                          remove_tree as _remove_quietly, unchanged_directory)
from slave.credentials import _fsync_directory

log = logging.getLogger(__name__)

DELAY, ATOMIC = "delay", "atomic"
SNAPSHOTS_DIR = ".mirrorsync-snapshots"
SWAP_PREFIX = ".swap-"
# A snapshot is not public until the swap, so renaming each file into place at the
# end of the transfer (the runner's default --delay-updates) buys nothing there.
SNAPSHOT_OPTIONS = ("--no-delay-updates",)

# ``prune``'s ``previous`` when a pull published nothing new: every snapshot stays.
KEEP_SNAPSHOTS = "<keep every snapshot>"

# What PUBLIC_DIR/<project> is right now.
MISSING, SNAPSHOT, DIRECTORY, FOREIGN = "missing", "snapshot", "directory", "foreign"


class PublishError(Exception):
    """PUBLIC_DIR/<project> is something this slave must not replace."""


@dataclass(frozen=True)
class Publication:
    """Where one pull writes (``destination``, with rsync ``options``) and how its tree goes public.

    ``staged`` is the snapshot name being built; None means rsync writes in place. ``basis`` is the
    live tree a snapshot shares its unchanged files with.
    """
    project: str
    mode: str
    destination: str
    options: tuple[str, ...] = ()
    staged: str | None = None
    basis: str | None = None


class Publisher:
    """Prepares, publishes, aborts and prunes the trees of PUBLIC_DIR; one pull per project at a time."""

    def __init__(self, public_dir, clock):
        self.public_dir = public_dir
        self.clock = clock

    def tree_path(self, project):
        return os.path.join(self.public_dir, project)

    def snapshots_path(self, project):
        return os.path.join(self.public_dir, SNAPSHOTS_DIR, project)

    def prepare(self, project, run_id, mode):
        """Where the pull of ``run_id`` writes. Raises PublishError, OSError.

        Delay mode over a real directory (or nothing) pulls in place, as always; any
        other case builds a new snapshot beside the live tree.
        """
        kind, live = self._inspect(project)
        if mode == DELAY and kind != SNAPSHOT:
            return Publication(project, mode, self.tree_path(project))
        if kind == FOREIGN:
            raise PublishError(f"{self.tree_path(project)} is not a directory nor a snapshot link of "
                               "mirror-sync; move it away or publish this project in delay mode")
        snapshots = self._ensure_snapshots_dir(project)
        name = fresh_name(snapshots, str(int(run_id)))
        staging = os.path.join(snapshots, name + PARTIAL_SUFFIX)
        os.mkdir(staging, 0o755)
        basis = os.path.join(snapshots, live) if kind == SNAPSHOT else self.tree_path(project)
        options = SNAPSHOT_OPTIONS
        if kind != MISSING and os.path.isdir(basis):
            options += (f"--link-dest={os.path.abspath(basis)}",)
        else:
            basis = None
        return Publication(project, mode, staging, options, name, basis)

    def fill(self, publication, changed):
        """Start a snapshot as hard links of the live tree, for a pull that moves only the paths
        ``changed`` into it in place; returns the Publication to pull into. Raises OSError.

        A full pull links unchanged files through rsync's --link-dest instead, which needs no
        list of paths but resolves the whole basis path again for every file of the tree. In
        place, rsync changes the mode or time of a file whose content is the same on that very
        file, which here is the live tree's too: each changed file gets a copy of its own first
        (which rsync still uses as the basis of a delta), so the live tree stays as it is.
        """
        if publication.staged is None or publication.basis is None:
            return publication
        link_copy(publication.basis, publication.destination)
        root = publication.destination
        for path in changed:
            target = os.path.join(root, path)
            if path == "." or not real_parents(root, path):
                continue
            try:
                if not stat.S_ISREG(os.lstat(target).st_mode):
                    continue
            except FileNotFoundError:
                continue
            with unchanged_directory(os.path.dirname(target)):
                os.replace(private_copy(target), target)
        return dataclasses.replace(publication, options=SNAPSHOT_OPTIONS)

    def commit(self, publication):
        """Make a finished pull's tree public; returns the name of the snapshot kept as the previous tree.

        Raises PublishError or OSError, and then the tree that was public stays public.
        """
        if publication.staged is None:
            return None
        project = publication.project
        snapshots = self.snapshots_path(project)
        staging = os.path.join(snapshots, publication.staged + PARTIAL_SUFFIX)
        kind, live = self._inspect(project)
        if kind == FOREIGN:
            raise PublishError(f"{self.tree_path(project)} was replaced during the pull by something "
                               "mirror-sync does not manage")
        if publication.mode == ATOMIC:
            os.rename(staging, os.path.join(snapshots, publication.staged))
            new = os.path.join(snapshots, SWAP_PREFIX + secrets.token_hex(6))
            os.symlink(f"{SNAPSHOTS_DIR}/{project}/{publication.staged}", new)
        else:
            new = staging  # back to delay mode: the snapshot itself becomes the real directory
        try:
            previous = self._install(project, new, kind, live)
        finally:
            if os.path.islink(new):
                os.unlink(new)
        try:
            _fsync_directory(self.public_dir)
            _fsync_directory(snapshots)
        except OSError as error:
            log.warning("cannot flush the swap of %s to disk: %s", project, error)
        log.info("published %s: %s", project, f"snapshot {publication.staged}" if publication.mode == ATOMIC
                 else "a real directory again (delay mode)")
        return previous

    def abort(self, publication):
        """Delete what a failed pull built; the live tree is untouched. Never raises."""
        if publication.staged is None:
            return
        snapshots = self.snapshots_path(publication.project)
        kind, live = self._inspect_quietly(publication.project)
        doomed = [publication.staged + PARTIAL_SUFFIX]
        if not (kind == SNAPSHOT and live == publication.staged):
            doomed.append(publication.staged)
        for name in doomed:
            _remove_quietly(os.path.join(snapshots, name))

    def prune(self, project, previous=None):
        """Delete every snapshot of ``project`` but the live one and ``previous``; returns whether one went
        (its files' links gone, the files it shared with the live tree have a new ctime). Never raises."""
        if previous == KEEP_SNAPSHOTS:
            return False
        snapshots = self.snapshots_path(project)
        try:
            names = os.listdir(snapshots)
        except FileNotFoundError:
            return False
        except OSError as error:
            log.warning("cannot list the snapshots of %s: %s", project, error)
            return False
        kind, live = self._inspect_quietly(project)
        if kind == FOREIGN:
            return False
        keep = {live if kind == SNAPSHOT else None, previous} - {None}
        doomed = [name for name in names if name not in keep]
        for name in doomed:
            _remove_quietly(os.path.join(snapshots, name))
        if not keep:
            for path in (snapshots, os.path.dirname(snapshots)):
                try:
                    os.rmdir(path)
                except OSError:
                    break
        return bool(doomed)

    def remove_leftovers(self):
        """Delete half-pulled snapshots and half-done swaps that a stopped slave left; returns how many."""
        root = os.path.join(self.public_dir, SNAPSHOTS_DIR)
        try:
            projects = os.listdir(root)
        except FileNotFoundError:
            return 0
        removed = 0
        for project in projects:
            snapshots = os.path.join(root, project)
            if not os.path.isdir(snapshots) or os.path.islink(snapshots):
                continue
            for name in os.listdir(snapshots):
                if name.endswith(PARTIAL_SUFFIX) or name.startswith(SWAP_PREFIX):
                    log.info("removing %s/%s, left by a pull that did not finish", project, name)
                    if _remove_quietly(os.path.join(snapshots, name)):
                        removed += 1
        return removed

    # --- internals ------------------------------------------------------

    def _inspect(self, project):
        """(kind, snapshot name or None) of PUBLIC_DIR/<project>."""
        path = self.tree_path(project)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return MISSING, None
        if stat.S_ISDIR(mode):
            return DIRECTORY, None
        if stat.S_ISLNK(mode):
            prefix = f"{SNAPSHOTS_DIR}/{project}/"
            target = os.readlink(path)
            name = target[len(prefix):] if target.startswith(prefix) else ""
            if name and "/" not in name and name not in (".", "..") and not name.endswith(PARTIAL_SUFFIX):
                return SNAPSHOT, name
        return FOREIGN, None

    def _inspect_quietly(self, project):
        try:
            return self._inspect(project)
        except OSError as error:
            log.warning("cannot look at %s: %s", self.tree_path(project), error)
            return FOREIGN, None

    def _ensure_snapshots_dir(self, project):
        # As open as PUBLIC_DIR itself: the web server walks through it to follow the link.
        mode = stat.S_IMODE(os.stat(self.public_dir).st_mode)
        path = self.public_dir
        for part in (SNAPSHOTS_DIR, project):
            path = os.path.join(path, part)
            try:
                os.mkdir(path)
                os.chmod(path, mode)
            except FileExistsError:
                pass
        return path

    def _install(self, project, new, kind, live):
        """Put ``new`` (a symlink or a directory) at PUBLIC_DIR/<project>; returns the previous tree's name."""
        path = self.tree_path(project)
        snapshots = self.snapshots_path(project)
        if kind == MISSING:
            os.rename(new, path)
            return None
        if kind == SNAPSHOT and os.path.islink(new):
            os.replace(new, path)
            return live
        # A directory on either side: rename() cannot put one over a symlink or a non-empty
        # directory; only an exchange swaps them without a moment where the path is missing.
        if _exchange(new, path):
            displaced = new
        else:
            log.warning("%s goes missing for a moment: this file system cannot exchange two paths", path)
            displaced = os.path.join(snapshots, SWAP_PREFIX + secrets.token_hex(6))
            os.rename(path, displaced)
            try:
                os.rename(new, path)
            except OSError:
                os.rename(displaced, path)
                raise
        # The new tree is public now: what follows only tidies up, and a failure is no reason to say otherwise.
        try:
            if kind == SNAPSHOT:
                os.unlink(displaced)  # the old link; its snapshot stays as the previous tree
                return live
            legacy = fresh_name(snapshots, f"legacy-{self.clock.now():%Y%m%dT%H%M%SZ}")
            os.rename(displaced, os.path.join(snapshots, legacy))
        except OSError as error:
            log.warning("cannot put the old tree of %s aside: %s", project, error)
            return live
        log.info("%s was a real directory; it is kept as snapshot %s until the next publish", path, legacy)
        return legacy
