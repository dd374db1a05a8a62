"""Changes-only pulls and verifying what was published, against the master's snapshot of the run.

The master keeps, in each project's rsync module, the manifest of every
snapshot (``.manifest-<run>/manifest.gz``) and the change list from the
previous snapshot (``.changes-<run>/changes.gz``: base snapshot, its digest,
paths changed, paths deleted). A slave that published exactly that base tree
(STATE_DIR/published/<project>.json says which, and its digest) transfers just
the changed paths (rsync --files-from) and deletes the deleted ones after the
transfer, instead of rescanning the master's whole tree: in place, or into a
snapshot that starts as hard links of the live tree (``Publisher.fill``); a short change list
comes in the order itself. Anything else (no record, another base, a digest
that differs) is a full pull. After either, the published tree's digest must be
the run's; when it is not, the part fails with the first paths that differ, the
record is forgotten, and the next order (the master's catch-up) is a full pull
that repairs the tree. The slave keeps the manifest of what it published
(``<project>.manifest.gz`` beside the record, and ``<project>.manifest.edits``,
what each changes-only pull changed in it since it was saved whole): after a
changes-only pull the digest comes from it and the paths moved, without a walk,
until the last walk is VERIFY_INTERVAL old.
"""

import dataclasses
import gzip
import json
import logging
import math
import os
import stat
import tempfile
import threading
import time

from common import digests
from common.rsync import RsyncJob
from common.trees import real_parents, remove_tree, safe_relative
from slave.credentials import ensure_private_dir, read_json, write_json_atomically

log = logging.getLogger(__name__)

CHANGES_PREFIX = ".changes-"
HELD_ENTRIES = 1_000_000   # manifest entries kept in memory, about 350 MB with their digest lines
MANIFEST_PREFIX = ".manifest-"
# Edits appended to a saved manifest hold at most this share of its entries; past it, it is saved whole.
JOURNAL_SHARE = 0.1
# The most rsync's delta algorithm could save a changes-only pull, in bytes: the files this slave holds at
# the changed paths, which are all it can reuse. Below it the pull sends whole files (``whole_files``).
WHOLE_FILE_BELOW = 1 << 20


@dataclasses.dataclass(frozen=True)
class Plan:
    """A changes-only pull: the --files-from list to transfer, then the paths to delete."""
    list_path: str
    changed: tuple[str, ...]
    deleted: tuple[str, ...]
    base_digest: str
    touch: tuple[tuple[str, int], ...] = ()
    # --whole-file: what the slave holds at the changed paths is too little for the delta algorithm.
    whole_file: bool = False

    @property
    def empty(self):
        return not self.changed and not self.deleted


class PublishedTrees:
    """What this slave last published and verified, per project: the snapshot and its digest."""

    def __init__(self, state_dir):
        self.directory = os.path.join(state_dir, "published")
        ensure_private_dir(self.directory)
        # project -> (the saved manifest file's identity, its entries), the most recent last: the
        # process that wrote a manifest reads it back from memory, as long as the file is the one it
        # wrote, up to HELD_ENTRIES entries in all.
        self._held = {}
        self._held_lock = threading.Lock()

    def _path(self, project):
        return os.path.join(self.directory, f"{project}.json")

    def get(self, project):
        try:
            return read_json(self._path(project))
        except (OSError, ValueError):
            return None

    def _manifest_path(self, project):
        return os.path.join(self.directory, f"{project}.manifest.gz")

    def _journal_path(self, project):
        return os.path.join(self.directory, f"{project}.manifest.edits")

    def _saved(self, project):
        """What tells the saved manifest (its file and the edits appended to it) from another. Raises OSError."""
        try:
            journal = _identity(self._journal_path(project))
        except FileNotFoundError:
            journal = None
        return _identity(self._manifest_path(project)), journal

    def remember(self, project, snapshot, digest, entries=None, walked_at=None, base=None, edits=None,
                 order=None):
        """Note the verified tree; with ``entries`` its manifest too, ``walked_at`` (epoch seconds) when a
        whole walk last confirmed it. With ``edits`` (``digests.splice``'s) from ``base``, the manifest
        saved before, only those edits are written, appended to it, until they hold a tenth of its entries
        (JOURNAL_SHARE): a pull's bookkeeping costs what it changed, not a write of the whole manifest.
        ``order``: the order the tree was pulled by, to pull it again when it is edited behind the
        slave's back (its change list left out)."""
        held = self.get(project) or {}
        if entries is not None:
            if not (edits is not None and self._append(project, base, entries, edits)):
                digests.save(entries, self._manifest_path(project))
                _unlink_quietly(self._journal_path(project))
                self._hold(project, self._saved(project), entries, 0)
        else:
            self._drop_manifest(project)
        write_json_atomically(self._path(project), {
            "snapshot": snapshot, "digest": digest,
            "walked_at": walked_at if walked_at is not None else (held.get("walked_at") if entries else None),
            "order": order, "settled_at_ns": time.time_ns(),
        }, mode=0o600)

    def settle(self, project):
        """Note that the slave is done with the published tree for now (``settled_at_ns``): an entry whose
        ctime is later was changed by someone else (``changed_since``). After the pull's old snapshots
        went: a file they shared with the tree had its link count, and so its ctime, moved."""
        held = self.get(project)
        if held is not None:
            write_json_atomically(self._path(project), dict(held, settled_at_ns=time.time_ns()), mode=0o600)

    def projects(self):
        """The projects with a published tree noted."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(name[:-len(".json")] for name in names if name.endswith(".json"))

    def _append(self, project, base, entries, edits):
        """Append ``edits`` to the saved manifest when it is ``base``, as saved; returns whether it did."""
        kept = self._held.get(project)
        try:
            if kept is None or kept[1] is not base or kept[0] != self._saved(project):
                return False
        except OSError:
            return False
        moved = kept[2] + sum(edit.stop - edit.start + len(edit.entries) for edit in edits)
        if moved > len(entries) * JOURNAL_SHARE:
            return False
        if edits:
            # One line a pull; whether the lines add up to the tree is for the digest on record (``_load``).
            record = [[edit.start, edit.stop, [list(entry) for entry in edit.entries]] for edit in edits]
            try:
                with open(self._journal_path(project), "a", encoding="ascii") as journal:
                    journal.write(json.dumps(record, separators=(",", ":")) + "\n")
            except OSError:
                return False
        self._hold(project, self._saved(project), entries, moved)
        return True

    def manifest(self, project):
        """The manifest saved with the tree, or None."""
        try:
            identity = self._saved(project)
            kept = self._held.get(project)
            if kept is not None and kept[0] == identity:
                return kept[1]
            entries, moved = self._load(project)
        except (OSError, ValueError):
            return None
        if entries is None:
            return None
        self._hold(project, identity, entries, moved)
        return entries

    def _load(self, project):
        """(manifest, entries its edits moved) from the saved file and the edits appended to it: (None, 0)
        when the result is not the tree the record names. Raises OSError, ValueError."""
        entries = digests.load(self._manifest_path(project))
        try:
            with open(self._journal_path(project), "rb") as journal:
                lines = journal.read().splitlines()
        except FileNotFoundError:
            return entries, 0
        moved = 0
        for line in lines:
            try:
                edits = [digests.Edit(start, stop, [digests.Entry(*row) for row in rows])
                         for start, stop, rows in json.loads(line)]
            except (ValueError, TypeError):
                # Cut short by a crash while it was written (the digest below tells whether it
                # mattered): the next pull saves the manifest whole rather than append after it.
                moved = math.inf
                break
            entries = digests.Manifest(digests.apply_edits(entries, edits, lambda edit: edit.entries, []))
            moved += sum(edit.stop - edit.start + len(edit.entries) for edit in edits)
        if digests.digest(entries) != (self.get(project) or {}).get("digest"):
            return None, 0
        return entries, moved

    def _hold(self, project, identity, entries, moved):
        with self._held_lock:
            digests.keep_bounded(self._held, project, (identity, entries, moved), HELD_ENTRIES,
                                 lambda kept: len(kept[1]))

    def forget(self, project):
        """The tree is no longer vouched for: the next pull is a full one. The newest run published
        (``newest``) stays noted: a failed pull does not make an older run's tree the one to serve."""
        _unlink_quietly(self._path(project))
        self._drop_manifest(project)

    def _newest_path(self, project):
        # A directory of its own: "<project>.newest.json" would be the published file of a project
        # named "<project>.newest".
        return os.path.join(self.directory, "newest", f"{project}.json")

    def newest(self, project, enrollment):
        """The newest run of ``project`` this slave published under ``enrollment`` (its identity of the
        moment), as {"run_id", "ok", "digest"}: ``ok`` whether every pull since succeeded, ``digest``
        what the last one published. None when there is none."""
        try:
            mark = read_json(self._newest_path(project))
        except (OSError, ValueError):
            return None
        if not isinstance(mark, dict) or mark.get("enrollment") != enrollment \
                or not isinstance(mark.get("run_id"), int) or not isinstance(mark.get("ok"), bool):
            return None
        return mark

    def note_pull(self, project, enrollment, run_id, ok, digest=None):
        """Note how a pull of ``run_id`` ended: a success makes it the newest run published, if it is."""
        mark = self.newest(project, enrollment)
        if ok:
            newest = max(run_id, mark["run_id"]) if mark else run_id
            mark = {"run_id": newest, "enrollment": enrollment, "ok": True, "digest": digest}
        elif mark is not None and mark["ok"]:
            mark = dict(mark, ok=False, digest=None)
        else:
            return
        ensure_private_dir(os.path.dirname(self._newest_path(project)))
        write_json_atomically(self._newest_path(project), mark, mode=0o600)

    def _drop_manifest(self, project):
        with self._held_lock:
            self._held.pop(project, None)
        _unlink_quietly(self._manifest_path(project))
        _unlink_quietly(self._journal_path(project))


def _identity(path):
    """What tells one saved file from another written at its path since. Raises OSError."""
    info = os.stat(path)
    return info.st_ino, info.st_size, info.st_mtime_ns


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fetch(runner, source, work_dir, name, password, log_path):
    """rsync one small directory of the master's module into ``work_dir/name``; returns its path or None."""
    destination = os.path.join(work_dir, name)
    job = RsyncJob(source=source, destination=destination, password=password, timeout=300)
    result = runner.run(job, log_path)
    return destination if result.ok else None


def _fetch_changes(runner, order, source_of, password, work_dir, log_path):
    """The run's change list from the master's module, or None."""
    fetched = _fetch(runner, source_of(f"{CHANGES_PREFIX}{order['snapshot']}"), work_dir,
                     f"changes-{order['run_id']}", password, log_path)
    if fetched is None:
        return None
    try:
        with gzip.open(os.path.join(fetched, "changes.gz"), "rt", encoding="utf-8") as stream:
            body = json.load(stream)
    except (OSError, ValueError) as error:
        log.warning("the change list of run %s is unreadable (%s): pulling in full", order["run_id"], error)
        return None
    return body if isinstance(body, dict) else None


def plan_changes(runner, order, source_of, password, published, work_dir, log_path):
    """A Plan when this slave holds exactly the base of the run's change list, else None (a full pull)."""
    held = published.get(order["project"])
    if not order.get("changes") or held is None or not order.get("snapshot"):
        return None
    body = order.get("change_list")  # a short one comes in the order: no rsync connection to fetch it
    if body is None:
        body = _fetch_changes(runner, order, source_of, password, work_dir, log_path)
    if body is None:
        return None
    if body.get("base") != held.get("snapshot") or body.get("base_digest") != held.get("digest"):
        return None  # this slave missed a run, or its tree is not the one the list starts from
    changed, deleted = tuple(body.get("changed") or ()), tuple(body.get("deleted") or ())
    try:
        touch = tuple((str(path), int(mtime)) for path, mtime in body.get("touch") or ())
    except (TypeError, ValueError):
        return None
    if not all(safe_relative(path) for path in changed + deleted + tuple(path for path, _ in touch)):
        log.warning("the change list of run %s names a path outside the tree: pulling in full", order["run_id"])
        return None
    list_path = os.path.join(work_dir, f"files-from-{order['run_id']}")
    with open(list_path, "wb") as out:
        for path in changed:
            if path != ".":  # the root's time is in ``touch``: listed, rsync would bring the top level along
                out.write(os.fsencode(path) + b"\0")
    return Plan(list_path, changed, deleted, body["base_digest"], touch)


def plan_options(plan):
    # Exactly the listed entries move: --no-recursive undoes the --recursive of every pull, with which
    # rsync would walk each listed directory whole (a directory is listed when a name in it came or
    # went), both on the master and here. The list names every entry a run made, down to the last.
    # --force lets a file or link replace a directory that is not empty.
    return (f"--files-from={plan.list_path}", "--from0", "--no-recursive", "--force",
            *(("--whole-file",) if plan.whole_file else ()))


def whole_files(held_entries, changed):
    """Whether a changes-only pull of ``changed`` should send whole files: the regular files this slave
    holds at those paths (``held_entries``, its manifest) come to less than WHOLE_FILE_BELOW bytes.

    rsync's delta algorithm can only reuse what the receiver already has at a path, and it costs, for
    each file, reading it and exchanging its checksums before any data moves: at 100 files of 256
    bytes, 114 ms for a pull from the master's daemon against 84 ms with --whole-file (median of 8
    alternated pulls). rsync itself sends whole files between local paths. A change that rewrites
    larger files (a Packages index, an image) keeps the delta transfer, and its savings on a slow link."""
    if held_entries is None:
        return False
    held = 0
    for path in changed:
        entry = digests.find(held_entries, path)
        if entry is not None and entry.type == digests.FILE:
            held += entry.size or 0
            if held >= WHOLE_FILE_BELOW:
                return False
    return True


def apply_deletions(root, plan):
    """Delete what the run deleted, children first, never through a symlink, then give the directories
    the deletions touched their times back. Returns how many paths went."""
    still_there = set(plan.changed)
    removed = 0
    for path in plan.deleted:
        if path in still_there:
            continue  # replaced by another kind of entry: rsync put the new one there already
        full = os.path.join(root, path)
        if real_parents(root, path) and os.path.lexists(full) and remove_tree(full):
            removed += 1
    for path, mtime in plan.touch:
        full = os.path.join(root, path)
        if real_parents(root, path) and os.path.isdir(full) and not os.path.islink(full):
            os.utime(full, (mtime, mtime), follow_symlinks=False)
    return removed


def verify(tree, order, fetch_manifest):
    """(digest, error, manifest) of the published ``tree`` from a walk of it: error names the first paths
    that differ from the run's snapshot, or is None when the digests agree (or the order carries none)."""
    expected = order.get("digest")
    try:
        ours = digests.manifest(tree)
    except OSError as error:
        return None, (None if expected is None else f"the published tree cannot be read: {error}"), None
    digest = digests.digest(ours)
    if expected is None or digest == expected:
        return digest, None, ours
    theirs = fetch_manifest()
    if theirs is None:
        return digest, f"the published tree's digest differs from run {order['run_id']}'s", None
    paths = digests.first_differences(theirs, ours)
    shown = ", ".join(repr(path) for path in paths) or "none found"
    return digest, f"the published tree differs from run {order['run_id']}'s, first at: {shown}", None


def verify_changes(tree, order, plan, held_entries):
    """(manifest, edits from ``held_entries``) of the published tree after a changes-only pull, from the
    manifest it had and the paths the plan moved, without a walk; None when that cannot vouch for the
    tree (then walk it).

    Only the moved paths (and their directories) are looked at again: what was changed behind the
    slave's back elsewhere is for ``touched_since`` before the pull (a name made, removed or renamed)
    and for the next walk (a file changed in place, VERIFY_INTERVAL).
    """
    if held_entries is None or order.get("digest") is None:
        return None
    try:
        entries, edits = digests.splice(held_entries, tree, plan.changed, plan.deleted,
                                        tuple(path for path, _ in plan.touch))
    except OSError:
        return None
    if digests.digest(entries) != order["digest"]:
        return None
    return entries, edits


def touched_since(tree, held_entries):
    """Whether a directory of the published ``tree`` is not as this slave left it (a name made, removed or
    renamed in it moves its time): the tree was changed behind the slave's back. Looks at directories
    only, a hundredth of a mirror's entries, kept with the manifest (``digests.directories``). A ``tree``
    that is a symlink (atomic publishing) is followed."""
    return bool(touched_directories(tree, held_entries, limit=1))


def touched_directories(tree, held_entries, limit=5):
    """The first directories of the published ``tree`` (up to ``limit``) not as this slave left them."""
    tree = os.path.realpath(tree)
    touched = []
    for path, entry in digests.directories(held_entries).items():
        try:
            st = os.lstat(os.path.join(tree, path) if path != "." else tree)
        except OSError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode) or int(st.st_mtime) != entry.mtime \
                or stat.S_IMODE(st.st_mode) != entry.mode:
            touched.append(path)
            if len(touched) >= limit:
                break
    return touched


def changed_since(tree, since_ns, limit):
    """The first paths (up to ``limit``, "." the root) of the published ``tree`` whose inode changed after
    ``since_ns`` (its ctime, which no one can set back: a file rewritten, even with its size and time put
    back, its mode or owner changed, a name made or removed in a directory). One lstat of every entry."""
    root = os.path.realpath(tree)
    changed = []
    pending = [""]
    while pending and len(changed) < limit:
        relative = pending.pop()
        path = os.path.join(root, relative) if relative else root
        try:
            if os.lstat(path).st_ctime_ns > since_ns:
                changed.append(relative or ".")
            with os.scandir(path) as entries:
                for entry in entries:
                    name = os.path.join(relative, entry.name) if relative else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(name)
                    elif entry.stat(follow_symlinks=False).st_ctime_ns > since_ns and len(changed) < limit:
                        changed.append(name)
        except FileNotFoundError:
            changed.append(relative or ".")
        except OSError:
            continue   # what cannot be read is the walk's to find
    return changed


def distrust(tree, paths):
    """Move the time of each regular file at ``paths`` in the published ``tree`` to the epoch, so that a
    full pull's quick check (size and time) brings it again whatever was done to it; returns how many.
    A path below a symlink is left alone: it is not in the tree."""
    root = os.path.realpath(tree)
    moved = 0
    for path in paths:
        full = os.path.join(root, path)
        try:
            if not safe_relative(path) or not real_parents(root, path) or not stat.S_ISREG(os.lstat(full).st_mode):
                continue
            os.utime(full, ns=(0, 0), follow_symlinks=False)
        except OSError:
            continue   # gone, or a parent that became a file: the pull sees to it
        moved += 1
    return moved


def changed_behind_our_back(tree, held_entries, limit=5):
    """The first paths where the published ``tree`` differs from what this slave published, from a walk."""
    try:
        return digests.first_differences(held_entries, digests.manifest(tree), limit)
    except OSError:
        return []


def manifest_fetcher(runner, order, source_of, password, log_path):
    """A function that fetches the run's manifest from the master's module (None if it cannot)."""
    def fetch():
        with tempfile.TemporaryDirectory(prefix="mirrorsync-manifest-") as work_dir:
            fetched = _fetch(runner, source_of(f"{MANIFEST_PREFIX}{order['snapshot']}"), work_dir, "m",
                             password, log_path)
            if fetched is None:
                return None
            try:
                return digests.load(os.path.join(fetched, "manifest.gz"))
            except (OSError, ValueError):
                return None
    return fetch
