"""Edits to a published tree behind the slave's back, seen as they happen.

Between two walks of a tree (VERIFY_INTERVAL) a changes-only pull trusts the
manifest the slave kept of it, and checks only its directories' times, which
move when a name is made, removed or renamed. A file rewritten in place, or
its mode or time changed, leaves every directory as it was. So while a tree is
published, an inotify watch on each of its directories notes every write,
change of attributes, new, removed or renamed name in it, and the next pull of
the project that sees one pulls in full, as it does for a directory whose time
moved.

An edited tree left alone for REPAIR_DELAY seconds is ``due``: the slave then
pulls the run it holds again (slave.syncs), without waiting for the next pull.

A watch costs one inotify watch per directory (``fs.inotify.max_user_watches``,
shared by the user's processes). Where the watches cannot be had (no inotify,
the limit reached) or the kernel dropped events (its queue overflowed), the
project is not watched, or counts as changed, and the log says so once: the
pull then relies on the directories' times and the walks, as without a watch.
When the slave starts it watches its published trees again, and what changed
in them while no slave watched is found from the entries' ctimes and ``note``d.
"""

import errno
import logging
import os
import select
import threading
import time

log = logging.getLogger(__name__)

try:
    import inotify_simple
except ImportError:  # not Linux: no watches
    inotify_simple = None

# Paths kept per project: named in the log and the part's warning, and brought again by the next pull.
KEPT_PATHS = 1000
# A tree edited without a pause for this many times REPAIR_DELAY is repaired all the same.
QUIET_CAP = 6


class Seen:
    """What happened to a watched tree since it was published: ``paths`` edited (at most KEPT_PATHS;
    ``complete`` says whether that is all of them)."""

    def __init__(self):
        self.paths = {}            # a dict for its order
        self.count = 0
        self.overflowed = False    # the kernel dropped events: what happened is not known
        self.dropped = False       # more paths were edited than kept
        self.first_at = None       # time.monotonic() of the first edit seen, and of the last
        self.last_at = None
        self.handed = False        # given out by ``due`` once

    def note(self, path):
        self.count += 1
        self.stamp()
        if path in self.paths:
            return
        if len(self.paths) < KEPT_PATHS:
            self.paths[path] = None
        else:
            self.dropped = True

    def stamp(self):
        self.last_at = time.monotonic()
        if self.first_at is None:
            self.first_at = self.last_at

    @property
    def changed(self):
        return self.overflowed or self.count > 0

    @property
    def complete(self):
        return not (self.overflowed or self.dropped)


class TreeWatch:
    """inotify watches on the directories of each published tree, read by one thread."""

    def __init__(self, enabled=True, repair_delay=0.0, on_edit=None):
        """``enabled`` False (WATCH_TREES off): nothing is watched, and nothing said about it.
        ``repair_delay`` (REPAIR_DELAY) only words the log: when an edited tree is pulled again.
        ``on_edit(project, path)``: called (from the reader, briefly) with the first edit of a watch."""
        self.enabled = enabled
        self.repair_delay = repair_delay
        self.on_edit = on_edit
        self._lock = threading.Lock()
        self._inotify = None
        self._thread = None
        self._stopping = threading.Event()
        self._wakeup = None             # (read end, write end) of a pipe: closing wakes the reader at once
        self._unavailable = None       # why there are no watches at all, once known
        self._warned = set()
        self._dirs = {}                # watch descriptor -> (project, directory relative to the tree)
        self._projects = {}            # project -> (its watch descriptors, Seen)

    def take(self, project):
        """End the watch of ``project``'s tree (a pull is about to change it) and return what was seen
        since it was published: a Seen, or None when the tree was not watched."""
        with self._lock:
            if self._inotify is not None:
                self._drain()   # an edit made just before the pull counts too
            watched = self._projects.pop(project, None)
            if watched is None:
                return None
            descriptors, seen = watched
            self._remove(descriptors)
            return seen

    def arm(self, project, tree, directories):
        """Watch ``directories`` (relative paths, "." the root) of ``project``'s published ``tree``."""
        self.take(project)
        inotify = self._start()
        if inotify is None:
            return False
        root = os.path.realpath(tree)
        mask = _mask()
        descriptors = []
        with self._lock:
            for relative in directories:
                path = root if relative == "." else os.path.join(root, relative)
                try:
                    descriptor = inotify.add_watch(path, mask)
                except OSError as error:
                    self._remove(descriptors)
                    self._warn_once(project, f"{project}: its tree is not watched for edits behind this slave's back "
                                             f"({_why(error)}); changes-only pulls rely on the directories' times "
                                             "and the walks every VERIFY_INTERVAL")
                    return False
                descriptors.append(descriptor)
                self._dirs[descriptor] = (project, relative)
            self._projects[project] = (descriptors, Seen())
        return True

    def due(self, quiet, now=None):
        """Projects whose watched tree was edited and has been left alone for ``quiet`` seconds since the
        last edit (or edited for ``QUIET_CAP`` times that long without a pause), each given once per watch:
        the slave pulls those trees again (REPAIR_DELAY) rather than wait for their next pull."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._inotify is not None:
                self._drain()
            due = []
            for project, (_, seen) in self._projects.items():
                if seen.changed and not seen.handed and (
                        now - seen.last_at >= quiet or now - seen.first_at >= QUIET_CAP * quiet):
                    seen.handed = True
                    due.append(project)
            return due

    def note(self, project, paths):
        """Count ``paths`` of ``project``'s watched tree as edited: what a look at the tree found that
        happened while it was not watched (the slave was down). Returns whether the tree is watched."""
        with self._lock:
            watched = self._projects.get(project)
            if watched is None:
                return False
            seen = watched[1]
            for path in paths:
                seen.note(path)
            if not paths:
                seen.overflowed = True   # changed, where is not known
                seen.stamp()
            return True

    def close(self):
        self._stopping.set()
        if self._wakeup is not None:
            os.write(self._wakeup[1], b"x")
        if self._thread is not None:
            self._thread.join(5)
        if self._wakeup is not None:
            for end in self._wakeup:
                os.close(end)
            self._wakeup = None
        with self._lock:
            if self._inotify is not None:
                self._inotify.close()
            self._inotify, self._dirs, self._projects = None, {}, {}

    def _start(self):
        with self._lock:
            if self._inotify is not None or self._unavailable is not None or self._stopping.is_set() \
                    or not self.enabled:
                return self._inotify
            if inotify_simple is None:
                self._unavailable = "inotify is not available on this system"
            else:
                try:
                    self._inotify = inotify_simple.INotify(nonblocking=True)
                except OSError as error:
                    self._unavailable = _why(error)
            if self._unavailable is not None:
                log.warning("published trees are not watched for edits behind this slave's back (%s); "
                            "changes-only pulls rely on the directories' times and the walks every "
                            "VERIFY_INTERVAL", self._unavailable)
                return None
            self._wakeup = os.pipe()
            self._thread = threading.Thread(target=self._read, name="tree-watch", daemon=True)
            self._thread.start()
            return self._inotify

    def _remove(self, descriptors):
        """Under the lock."""
        if self._inotify is None:
            return
        for descriptor in descriptors:
            self._dirs.pop(descriptor, None)
            try:
                self._inotify.rm_watch(descriptor)
            except OSError:
                pass  # its directory is gone, and the watch with it

    def _read(self):
        poller = select.poll()
        poller.register(self._inotify.fileno(), select.POLLIN)
        poller.register(self._wakeup[0], select.POLLIN)
        while not self._stopping.is_set():
            # Only the reads are under the lock, so that ``take`` can read what is pending itself.
            if poller.poll() and not self._stopping.is_set():
                with self._lock:
                    if self._inotify is None:
                        return
                    self._drain()

    def _drain(self):
        """Read the pending events and note them (under the lock)."""
        flags = inotify_simple.flags
        try:
            events = list(self._inotify.read(timeout=0))
        except (OSError, ValueError):  # closed
            return
        for event in events:
            if event.mask & flags.Q_OVERFLOW:
                for project, (_, seen) in self._projects.items():
                    seen.overflowed = True
                    seen.stamp()
                    self._warn_once(("overflow", project), f"{project}: edits to its tree came faster than they "
                                                           "could be read: its next pull checks it whole")
                continue
            if event.mask & flags.IGNORED:
                self._dirs.pop(event.wd, None)
                continue
            owner = self._dirs.get(event.wd)
            if owner is None:
                continue  # a watch of a tree no longer watched
            project, directory = owner
            name = os.fsdecode(event.name) if event.name else ""
            path = os.path.join(directory, name) if directory != "." and name else (name or directory)
            seen = self._projects[project][1]
            if not seen.changed:   # said at once, for the admin
                log.warning("%s: its published tree was edited outside mirror-sync, first at %r; %s", project, path,
                            f"it is pulled again once left alone for {self.repair_delay:g} s, which repairs it"
                            if self.repair_delay > 0 else "the next pull of it pulls in full, which repairs it")
                if self.on_edit is not None:
                    self.on_edit(project, path)
            seen.note(path)

    def _warn_once(self, key, message):
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)


def _mask():
    flags = inotify_simple.flags
    return (flags.MODIFY | flags.ATTRIB | flags.CLOSE_WRITE | flags.CREATE | flags.DELETE | flags.MOVED_FROM
            | flags.MOVED_TO | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR | flags.DONT_FOLLOW)


def _why(error):
    if error.errno == errno.ENOSPC:  # from inotify_add_watch: the user's watches are used up
        return "no inotify watch left: raise fs.inotify.max_user_watches"
    if error.errno == errno.EMFILE:  # from inotify_init: the user's instances are used up
        return "no inotify instance left: raise fs.inotify.max_user_instances"
    return os.strerror(error.errno) if error.errno else str(error)
