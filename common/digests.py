"""What a published tree is, as one list and one digest, so master and slave can compare trees.

A manifest is the sorted list of every entry under a root, the root itself as
".": path, type, size (regular files), mtime (seconds, not for symlinks), mode
(permission bits, not for symlinks), link target (symlinks) and hard-link group
(the first path of the files sharing an inode within the tree). It comes from
one walk that never follows a symlink and never reads a file's content. The
digest is SHA-256 over that list (less the root's own mtime), so two trees
with the same digest look the same to every reader: the same names, kinds,
sizes, times, modes, links and hard links.

A manifest is a list (``Manifest``) that keeps each entry's digest line once its
digest is taken: a manifest updated from a change (``splice``) renders and
compares only what changed, and says where (``Edit``), so that what is kept
beside it (the master's inodes, a change list) is updated the same way.
"""

import bisect
import gzip
import hashlib
import json
import operator
import os
import stat
import typing
import zlib

# rsync's --delay-updates folder: never part of a published tree.
SKIPPED_NAMES = frozenset({".~tmp~"})
FILE, DIR, SYMLINK, OTHER = "f", "d", "l", "o"


class Entry(typing.NamedTuple):
    """One entry of a manifest (a tuple: a 100,000-entry manifest is built, read and compared often)."""
    path: str             # relative, "/"-separated; str with surrogate escapes for odd bytes
    type: str
    size: int | None = None
    mtime: int | None = None
    mode: int | None = None
    target: str | None = None
    group: str | None = None


class Manifest(list):
    """A manifest's entries, sorted by the bytes of their paths; ``lines``, once its digest is taken, each
    entry's digest line. A manifest is never changed in place once its digest is taken or its
    ``directories`` asked for."""
    __slots__ = ("lines", "_directories")

    def __init__(self, entries=(), lines=None):
        super().__init__(entries)
        self.lines = lines
        self._directories = None


def directories(entries):
    """{path: entry} of the directories in ``entries``. A Manifest keeps it: one pass over the entries the
    first time, and a manifest spliced from one that has it gets its own for what the change costs."""
    kept = getattr(entries, "_directories", None)
    if kept is None or kept[0] != len(entries):   # (count, dict): a manifest still being built is looked at again
        kept = (len(entries), {entry.path: entry for entry in entries if entry.type == DIR})
        if isinstance(entries, Manifest):
            entries._directories = kept
    return kept[1]


class Edit(typing.NamedTuple):
    """Where a spliced manifest differs from the one it came from: ``entries`` replace ``[start:stop]``."""
    start: int
    stop: int
    entries: list


def _digest_text(entry):
    """An entry's line of the digest. The root's own time moves when rsync removes its --delay-updates
    folder there after setting it: it is compared by change lists, not by digests."""
    path, kind, size, mtime, mode, target, group = entry
    mtime = None if path == "." else mtime
    return (f"{kind}\0{path}\0{'' if size is None else size}\0{'' if mtime is None else mtime}\0"
            f"{'' if mode is None else mode}\0{'' if target is None else target}\0{'' if group is None else group}\n")


def sort_paths(items, path=None, reverse=False):
    """``items`` sorted in place by the bytes of their paths (``path(item)``, or the item itself), the
    order of every manifest. Paths all ASCII (most mirrors) sort the same as text, without encoding."""
    text = path or (lambda item: item)
    if all(text(item).isascii() for item in items):
        items.sort(key=path, reverse=reverse)
    else:
        items.sort(key=lambda item: os.fsencode(text(item)), reverse=reverse)
    return items


def _kind(mode):
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return SYMLINK
    return OTHER


_KINDS = {stat.S_IFREG: FILE, stat.S_IFDIR: DIR, stat.S_IFLNK: SYMLINK}
_new_entry = tuple.__new__   # an Entry without the generated __new__: a third faster per entry


def manifest(root, files=None):
    """The sorted entries of the tree at ``root`` (followed if it is a symlink). Raises OSError.

    A dict given as ``files`` gets each regular file's (device, inode) by its path.
    """
    root = os.path.realpath(os.fspath(root))
    top = os.lstat(root)
    raw = Manifest([_new_entry(Entry, (".", DIR, None, int(top.st_mtime), stat.S_IMODE(top.st_mode), None, None))])
    inodes, shared = {}, {}   # inode -> index of its first path; inode -> indexes, for those seen twice
    pending = [""]
    while pending:
        reldir = pending.pop()
        prefix = f"{reldir}/" if reldir else ""
        with os.scandir(os.path.join(root, reldir) if reldir else root) as scan:
            for item in scan:
                if item.name in SKIPPED_NAMES:
                    continue
                relpath = prefix + item.name
                st = item.stat(follow_symlinks=False)
                kind = _KINDS.get(stat.S_IFMT(st.st_mode), OTHER)
                if kind is FILE:
                    entry = _new_entry(Entry, (relpath, FILE, st.st_size, int(st.st_mtime), stat.S_IMODE(st.st_mode),
                                               None, None))
                    inode = (st.st_dev, st.st_ino)
                    if files is not None:
                        files[relpath] = inode
                    # In a snapshot every file has another link, in the tree before: a group is
                    # only made for an inode seen twice within this tree.
                    if st.st_nlink > 1 and inodes.setdefault(inode, len(raw)) != len(raw):
                        shared.setdefault(inode, [inodes[inode]]).append(len(raw))
                elif kind is SYMLINK:
                    entry = _new_entry(Entry, (relpath, SYMLINK, None, None, None, os.readlink(item.path), None))
                else:
                    entry = _new_entry(Entry, (relpath, kind, None, int(st.st_mtime), stat.S_IMODE(st.st_mode),
                                               None, None))
                    if kind is DIR:
                        pending.append(relpath)
                raw.append(entry)
    for members in shared.values():
        first = sort_paths([raw[index].path for index in members])[0]
        for index in members:
            raw[index] = raw[index]._replace(group=first)
    return sort_paths(raw, operator.itemgetter(0))


def _entry(root, path):
    """(Entry without its hard-link group, (device, inode, links)) of ``path`` under ``root``, or None if it
    is gone. Raises OSError."""
    try:
        st = os.lstat(os.path.join(root, path) if path != "." else root)
    except (FileNotFoundError, NotADirectoryError):   # NotADirectory: a directory above became a file
        return None
    kind = _kind(st.st_mode)
    if kind == SYMLINK:
        return Entry(path, kind, target=os.readlink(os.path.join(root, path))), None
    entry = Entry(path, kind, st.st_size if kind == FILE else None, int(st.st_mtime), stat.S_IMODE(st.st_mode))
    return entry, ((st.st_dev, st.st_ino, st.st_nlink) if kind == FILE else None)


def updated(entries, root, changed, deleted, touched=()):
    """The manifest of ``root`` from its earlier manifest ``entries`` and what changed since: each path in
    ``changed`` and ``touched`` (and each parent of a change) looked at again, each path in ``deleted``
    gone with whatever was under it. No walk: this costs what the change costs. Raises OSError.

    A hard-link group is found among the changed paths only (a change list names every member of a
    group it touches); a changed file linked to a path outside them gives a manifest that differs from
    a walk's, so a caller that compares digests falls back to a walk. A ``root`` that is a symlink is
    followed, as by ``manifest``.
    """
    return splice(entries, root, changed, deleted, touched)[0]


def _path_key(entry):
    return os.fsencode(entry.path)


def position(entries, path, start=0):
    """The index of ``path`` in the sorted ``entries``, or where it would go."""
    return bisect.bisect_left(entries, os.fsencode(path), start, key=_path_key)


def index_of(entries, path):
    """The index of ``path``'s entry in the sorted ``entries``, or None: a lookup without a dict of them."""
    index = position(entries, path)
    return index if index < len(entries) and entries[index].path == path else None


def find(entries, path):
    """The entry of ``path`` in the sorted ``entries``, or None."""
    index = index_of(entries, path)
    return None if index is None else entries[index]


def splice(entries, root, changed, deleted, touched=()):
    """(manifest, edits): ``updated``'s manifest, made from ``entries`` by the ``Edit`` list returned, in
    order; it costs what the change costs (plus copying the list), and when ``entries`` is a Manifest
    with its lines, the new one gets its lines the same way. Raises OSError."""
    root = os.path.realpath(os.fspath(root))
    count = len(entries)
    removed = []   # (start, stop) ranges of ``entries`` that go
    groups = set()   # hard-link groups a changed or deleted path was in
    for path in changed:
        index = index_of(entries, path)
        if index is not None and entries[index].group:
            groups.add(entries[index].group)
    for path in deleted:
        index = index_of(entries, path)
        if index is not None:
            key = os.fsencode(path)
            below = bisect.bisect_left(entries, key + b"/", index, key=_path_key)
            end = bisect.bisect_left(entries, key + b"0", below, key=_path_key)
            removed += [(index, index + 1), (below, end)]
            groups.update(entry.group for entry in (entries[index], *entries[below:end]) if entry.group)
    again = set(changed) | set(touched) | {"."}
    if groups:
        # Such a group is smaller now, maybe of one file, or named by another member: each of its members
        # is looked at again, though rsync names none of them (upstream, the one left is no hard link).
        again.update(entry.path for entry in entries if entry.group in groups)
    again |= {path.rpartition("/")[0] or "." for path in (*changed, *deleted) if path != "."}
    found, inodes = {}, {}
    for path in again:
        index = position(entries, path)
        if index < count and entries[index].path == path:
            removed.append((index, index + 1))
        looked = _entry(root, path)
        if looked is None:
            continue
        entry, inode = looked
        found[path] = (index, entry)
        if inode is not None and inode[2] > 1:
            inodes.setdefault(inode[:2], []).append(path)
    for members in inodes.values():
        if len(members) > 1:
            first = sort_paths(list(members))[0]
            for member in members:
                index, entry = found[member]
                found[member] = (index, entry._replace(group=first))
    edits = _edits(removed, sorted(found.values(), key=lambda item: (item[0], os.fsencode(item[1].path))))
    result = Manifest(apply_edits(entries, edits, lambda edit: edit.entries, []))
    old_lines = getattr(entries, "lines", None)
    if old_lines is not None and len(old_lines) == count:
        result.lines = apply_edits(old_lines, edits, lambda edit: [_digest_text(entry) for entry in edit.entries], [])
    old_directories = getattr(entries, "_directories", None)
    if old_directories is not None and old_directories[0] == count:
        kept = dict(old_directories[1])
        for edit in edits:
            for entry in entries[edit.start:edit.stop]:
                if entry.type == DIR:
                    kept.pop(entry.path, None)
        for edit in edits:
            kept.update((entry.path, entry) for entry in edit.entries if entry.type == DIR)
        result._directories = (len(result), kept)
    return result, edits


def _edits(removed, inserted):
    """Edits from the ranges that go and the (index, entry) that come, both in order of index: each new
    entry joins the range it falls in (at its start or end too), or stands alone where it goes."""
    spans = []
    for start, stop in sorted(removed):
        if start >= stop:
            continue
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], stop)
        else:
            spans.append([start, stop])
    edits, at = [], 0
    for index, entry in inserted:
        while at < len(spans) and spans[at][1] < index:
            at += 1
        span = spans[at] if at < len(spans) and spans[at][0] <= index else [index, index]
        if not edits or edits[-1] is not span:
            span.append([])
            edits.append(span)
        span[2].append(entry)
    ends = {id(span) for span in edits}
    for span in spans:
        if id(span) not in ends:
            span.append([])
            edits.append(span)
    return [Edit(start, stop, entries) for start, stop, entries in sorted(edits, key=lambda span: (span[0], span[1]))]


def apply_edits(old, edits, replacement, new):
    """``new`` (an empty list or array) extended with ``old`` as ``edits`` change it: what is kept beside a
    manifest (one item per entry) changes as the manifest does; ``replacement(edit)`` gives the items of
    an edit's entries."""
    at = 0
    for edit in edits:
        new.extend(old[at:edit.start])
        new.extend(replacement(edit))
        at = edit.stop
    new.extend(old[at:])
    return new


def digest(entries):
    """``sha256:<hex>`` of a manifest: SHA-256 over each entry's line, in order. A Manifest keeps its lines."""
    lines = _lines(entries)
    hasher = hashlib.sha256()
    for start in range(0, len(lines), _DIGEST_CHUNK):
        hasher.update(os.fsencode("".join(lines[start:start + _DIGEST_CHUNK])))
    return f"sha256:{hasher.hexdigest()}"


# Entries whose lines are joined and hashed in one go: one call per line costs more than the hashing.
_DIGEST_CHUNK = 10000


def tree_digest(root):
    """(digest, manifest) of the tree at ``root``. Raises OSError."""
    entries = manifest(root)
    return digest(entries), entries


def first_differences(expected, actual, limit=5):
    """Paths where two manifests differ, sorted, at most ``limit`` of them."""
    want = {entry.path: entry for entry in expected}
    got = {entry.path: entry for entry in actual}
    differing = [path for path in want.keys() | got.keys()
                 if not (path in want and path in got and _digest_text(want[path]) == _digest_text(got[path]))]
    return sort_paths(differing)[:limit]


def keep_bounded(held, key, value, limit, size):
    """Put ``value`` in the dict ``held`` (manifests kept in memory) as its most recent item, then drop
    the oldest others while the ``size`` of all of them is past ``limit`` (the one just put stays).
    The caller holds its lock: pulls of several projects end at once."""
    held.pop(key, None)
    held[key] = value
    total = sum(map(size, held.values()))
    for other in list(held):
        if total <= limit or other == key:
            break
        total -= size(held.pop(other))


# First line of a saved manifest: the format and the root's mtime (which its digest line leaves out).
_SAVED_FORMAT = "mirror-sync manifest 2"


def save(entries, path):
    """Write a manifest atomically: gzip'd, a first line, then its digest lines, which are all it is but
    for the root's mtime (on that first line). It costs what joining the lines costs, once they are kept."""
    root = find(entries, ".")
    header = f"{_SAVED_FORMAT} {'' if root is None or root.mtime is None else root.mtime}\n"
    data = header + "".join(_lines(entries))
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as out:
        out.write(gzip.compress(data.encode("utf-8", "surrogateescape"), compresslevel=1))
    os.replace(tmp, path)


def _lines(entries):
    lines = getattr(entries, "lines", None)
    if lines is None or len(lines) != len(entries):
        lines = list(map(_digest_text, entries))
        if isinstance(entries, Manifest):
            entries.lines = lines
    return lines


def _number(text):
    return int(text) if text else None


def _from_lines(header, body):
    """The Manifest of the digest lines ``body`` (the root's mtime from ``header``). Raises ValueError."""
    if not body:
        return Manifest()
    # Fields are split by NUL, which no name holds; a line ends with a newline, which a name may
    # hold: the field across two lines is "<group>\n<kind>", and a kind is one character.
    fields = body.split("\0")
    if len(fields) % 6 != 1 or not fields[-1].endswith("\n"):
        raise ValueError("its lines are cut short")
    joints = fields[6::6]
    kinds = [fields[0], *(joint[-1] for joint in joints[:-1])]
    groups = [*(joint[:-2] for joint in joints[:-1]), joints[-1][:-1]]
    entries = Manifest(_new_entry(Entry, (path, kind, _number(size), _number(mtime), _number(mode), target or None,
                                          group or None))
                       for kind, path, size, mtime, mode, target, group in
                       zip(kinds, fields[1::6], fields[2::6], fields[3::6], fields[4::6], fields[5::6], groups))
    root_mtime, index = header[len(_SAVED_FORMAT) + 1:], index_of(entries, ".")
    if root_mtime and index is not None:
        entries[index] = entries[index]._replace(mtime=int(root_mtime))
    return entries


def load(path):
    """A manifest written by ``save`` (or, from earlier releases, as JSON lines); raises OSError, ValueError."""
    with open(path, "rb") as stream:
        try:
            text = gzip.decompress(stream.read()).decode("utf-8", "surrogateescape")
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise ValueError(f"not a manifest: {error}") from None
    if text.startswith(_SAVED_FORMAT):
        header, _, body = text.partition("\n")
        try:
            return _from_lines(header, body)
        except (ValueError, IndexError) as error:
            raise ValueError(f"not a manifest: {error}") from None
    # Earlier releases: one JSON array of rows on one line, or before that a row per line.
    lines = [line for line in text.splitlines() if line]
    rows = json.loads(lines[0]) if len(lines) == 1 else [json.loads(line) for line in lines]
    if rows and not isinstance(rows[0], list):
        rows = [rows]  # one row per line, and only one row
    try:
        return Manifest(Entry(*row) for row in rows)
    except TypeError as error:
        raise ValueError(f"not a manifest: {error}") from None
