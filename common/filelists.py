"""``upstream_filelist``: an upstream's own list of its tree, so a pull transfers what changed, not a rescan.

Fedora, EPEL and Rocky publish ``fullfiletimelist-<module>`` at the top of
their rsync modules (quick-fedora-mirror reads it), rewritten after every
change of the tree::

    [Version]
    3

    [Files]
    1700000000	d	4096	releases
    1700000000	f	282	releases/README
    1700000000	l	9	latest

    [Checksums SHA1]
    ...
    [End]

One line per entry of the ``[Files]`` section: seconds (the larger of the
entry's mtime and ctime), a type (``f`` file, ``d`` directory, ``l`` symlink),
a size and the path, tab-separated. The other sections are not read.

With the list of the previous good pull (in the tree it left) and the new one,
``plan`` names the entries to transfer (rsync ``--files-from``) and the ones to
delete: an upstream of a million files costs the master one file and the
change, where a plain rsync stats every file on both ends.
"""

import dataclasses
import os
import threading

from common import digests
from common.trees import safe_relative

FILES_SECTION = "[Files]"
HELD_LINES = 2_000_000   # lines of lists kept in memory (``held``), about 250 MB
_TYPES = {"f": digests.FILE, "d": digests.DIR, "l": digests.SYMLINK}


class FilelistError(ValueError):
    """The list cannot be read as a file list; the message says where."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """``transfer``: paths for rsync's --files-from (without the root, which ``root`` stands for);
    ``delete``: paths of the tree the pull starts from that upstream no longer has, parents first."""
    transfer: tuple[str, ...]
    delete: tuple[str, ...]
    root: bool = False   # the root's own times: a top-level entry came or went
    listed: int = 0      # entries in the new list
    every_entry: bool = False   # compared entry by entry, not from the lines that differ
    # How many listed entries the tree will lack (excluded, say): ``absent`` plus those of ``unsure``
    # that are not there once the pull is done (``absent_after``).
    absent: int = 0
    unsure: tuple[str, ...] = ()

    def absent_after(self, root):
        """How many entries of the new list the tree at ``root`` lacks, after the pull."""
        return self.absent + sum(1 for path in self.unsure if not os.path.lexists(os.path.join(root, path)))

    @property
    def empty(self):
        return not self.transfer and not self.delete and not self.root


class Listing:
    """One list as read: the raw lines of its ``[Files]`` section, each parsed only when needed."""

    def __init__(self, lines, text=None):
        self.lines = lines   # frozenset of the section's lines (bytes)
        self.text = b"\n" + b"\n".join(lines) + b"\n" if text is None else text   # the section, "\n" around
        self._named = {}
        self.count = len(lines) - self.names(".")   # entries listed, the root left out
        self.absent = 0   # of them, how many the tree pulled by this list lacks (``Plan.absent_after``)

    def names(self, path):
        """Whether a line lists ``path``, found in the text (the lines are not all parsed), or once
        ``compact``, in the lines one by one."""
        if path not in self._named:
            encoded = os.fsencode(path)
            forms = (encoded, b"./" + encoded, encoded + b"/", b"./" + encoded + b"/")
            if self.text is not None:
                self._named[path] = any(b"\t" + form + b"\n" in self.text for form in forms)
            else:
                self._named[path] = any(line.endswith(b"\t" + form) for line in self.lines for form in forms)
        return self._named[path]

    def compact(self, paths=()):
        """Drop the text (as much memory again as the lines), having looked up ``paths`` in it first."""
        for path in paths:
            self.names(path)
        self.text = None

    def __len__(self):
        return self.count

    def entries(self, lines=None):
        """{path: (seconds, type, size)} of ``lines`` (by default, every line). Raises FilelistError."""
        return dict(map(_entry, self.lines if lines is None else lines))


def _entry(line):
    fields = line.split(b"\t", 3)
    if len(fields) != 4:
        raise FilelistError(f"{_shown(line)} is not 'seconds<TAB>type<TAB>size<TAB>path'")
    try:
        seconds, size = int(fields[0]), int(fields[2])
    except ValueError:
        raise FilelistError(f"{_shown(line)}: the seconds and the size must be numbers") from None
    name = os.fsdecode(fields[3])
    name = name[2:] if name.startswith("./") else name
    name = name.rstrip("/") or "."
    if name != "." and not safe_relative(name):
        raise FilelistError(f"{_shown(line)} names a path outside the tree")
    return name, (seconds, fields[1].decode("ascii", "replace"), size)


def _shown(line):
    return "the line " + repr(line[:120].decode("utf-8", "replace"))


def load(path):
    """The Listing of the list in the file at ``path``. Raises OSError, FilelistError."""
    with open(path, "rb") as stream:
        data = stream.read()
    if b"\r\n" in data:
        data = data.replace(b"\r\n", b"\n")
    start = data.find(b"\n" + FILES_SECTION.encode() + b"\n")
    if start < 0 and not data.startswith(FILES_SECTION.encode() + b"\n"):
        raise FilelistError(f"no {FILES_SECTION} section")
    body = data[start + len(FILES_SECTION) + 2 if start >= 0 else len(FILES_SECTION) + 1:]
    end = body.find(b"\n[")
    body = body if end < 0 else body[:end]
    lines = frozenset(body.split(b"\n"))
    lines -= {b""}
    return Listing(lines, b"\n" + body + b"\n")


# key -> (the file's identity, its Listing), the most recently kept last.
_held = {}
_held_lock = threading.Lock()


def _identity(path):
    info = os.stat(path)
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def held(key, path):
    """``load(path)``, from memory when the file is the one ``hold(key, ...)`` was told of: the list a
    pull put in its tree is the next pull's old list, read once. Raises OSError, FilelistError."""
    identity = _identity(path)
    kept = _held.get(key)
    if kept is not None and kept[0] == identity:
        return kept[1]
    return load(path)


def hold(key, path, listing, paths=(), absent=0):
    """Keep ``listing``, the list now in the file at ``path``, for ``held(key, path)``, with whether it
    names ``paths`` (what ``plan`` will ask of it: the ones it keeps) looked up already, and how many
    of its entries the tree lacks. Raises OSError."""
    listing.compact(paths)
    listing.absent = absent
    with _held_lock:
        digests.keep_bounded(_held, key, (_identity(path), listing), HELD_LINES, lambda kept: len(kept[1].lines))


def parse(path):
    """{path: (seconds, type, size)} of the list in the file at ``path``. Raises OSError, FilelistError."""
    return load(path).entries()


def plan(old, new, held, keep=()):
    """The Plan that turns the tree of manifest ``held``, pulled when upstream listed ``old`` (a
    Listing), into the tree upstream lists as ``new``; ``keep``: paths never deleted (the list
    itself, our trace files).

    When the tree holds as many entries as ``old`` lists, but for the ones a pull by that list left
    out (``old.absent``: excluded), only the lines that differ between the two lists are read: what
    they add is transferred, what they drop deleted, and a path whose type changed both. Otherwise
    (a tree pulled in full, which may be ahead of its list) every entry is compared: one is transferred when its line
    changed or the tree does not hold it as listed (missing, another type, a file of another size),
    and an entry of the tree that ``new`` does not list, or lists as another type, is deleted.
    """
    keep = set(keep)
    added = new.entries(new.lines - old.lines)
    added.pop(".", None)
    # The root, and what we keep in the tree that the list does not name (the list itself, say).
    held_count = len(held) - (digests.find(held, ".") is not None) - sum(
        1 for path in keep if digests.find(held, path) is not None and not old.names(path))
    if held_count + old.absent == len(old) and held_count:
        dropped = old.entries(old.lines - new.lines)
        transfer = set(added)
        delete = []
        for path in dropped:
            if path == "." or path in keep:
                continue
            line = added.get(path)
            if line is None or line[1] != dropped[path][1]:
                delete.append(path)
        for path, line in added.items():
            have = digests.find(held, path)
            if have is not None and _TYPES.get(line[1]) not in (None, have.type) and path not in delete:
                delete.append(path)
        listed = len(new)
        # Of what was absent, what upstream dropped no longer counts; what it added is looked at after.
        absent = old.absent - sum(1 for path in dropped if digests.find(held, path) is None)
        unsure, every_entry = tuple(added), False
    else:
        transfer, delete, listed, unsure = _compare_all(new, added, held, keep)
        absent, every_entry = 0, True
    # rsync brings the parents of what it transfers along (--relative's implied directories), with
    # their times; the master's deletions keep their directory's. The root is not: it is listed
    # when a top-level entry comes or goes.
    root = any("/" not in path for path in (*transfer, *delete))
    return Plan(tuple(digests.sort_paths(list(transfer))), tuple(digests.sort_paths(delete)), root, listed,
                every_entry, absent, unsure)


def _compare_all(new, added, held, keep):
    """(transfer, delete, entries listed, paths that may be absent after) from one pass over the tree."""
    listed = new.entries()
    listed.pop(".", None)
    transfer, delete, held_paths = set(added), [], set()
    for entry in held:
        held_paths.add(entry.path)
        line = listed.get(entry.path)
        kind = None if line is None else _TYPES.get(line[1])
        if line is None or kind not in (None, entry.type):
            if entry.path != "." and entry.path not in keep:
                delete.append(entry.path)
            if line is None:
                continue
        if (kind is not None and entry.type != kind) or (kind == digests.FILE and entry.size != line[2]):
            transfer.add(entry.path)
    transfer.update(path for path in listed if path not in held_paths)
    # Whatever else is listed, the tree holds, and keeps.
    return transfer, delete, len(listed), tuple(transfer)


def write(root, out_path, seconds=None):
    """Write the list of the tree at ``root`` to ``out_path`` (write, then rename), as an upstream does
    after each change; ``seconds(lstat)`` gives each entry's time (by default, the larger of mtime and
    ctime, as Fedora's create-filelist has it). The list leaves itself out."""
    seconds = seconds or (lambda info: int(max(info.st_mtime, info.st_ctime)))
    target = os.path.relpath(os.path.abspath(out_path), os.path.abspath(root))
    lines = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            full = os.path.join(directory, name)
            path = os.path.relpath(full, root)
            if path == target or path.endswith(".mirrorsync-new"):
                continue
            info = os.lstat(full)
            kind = "l" if os.path.islink(full) else "d" if os.path.isdir(full) else "f"
            lines.append(f"{seconds(info)}\t{kind}\t{info.st_size}\t{path}\n")
    staging = f"{out_path}.mirrorsync-new"
    with open(staging, "w", encoding="utf-8", errors="surrogateescape") as out:
        out.write("[Version]\n3\n\n[Files]\n")
        out.writelines(lines)
        out.write("\n[End]\n")
    os.replace(staging, out_path)
