"""What a published tree is, as one list and one digest, so master and slave can compare trees.

A manifest is the sorted list of every entry under a root, the root itself as
".": path, type, size (regular files), mtime (seconds, not for symlinks), mode
(permission bits, not for symlinks), link target (symlinks) and hard-link group
(the first path of the files sharing an inode within the tree). It comes from
one walk that never follows a symlink and never reads a file's content. The
digest is SHA-256 over that list (less the root's own mtime), so two trees
with the same digest look the same to every reader: the same names, kinds,
sizes, times, modes, links and hard links.
"""

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
    raw = [_new_entry(Entry, (".", DIR, None, int(top.st_mtime), stat.S_IMODE(top.st_mode), None, None))]
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
    except FileNotFoundError:
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
    root = os.path.realpath(os.fspath(root))
    by_path = {entry.path: entry for entry in entries}
    gone = [path for path in deleted if path in by_path]
    if gone:
        prefixes = tuple(f"{path}/" for path in gone)
        dropped = set(gone)
        by_path = {path: entry for path, entry in by_path.items()
                   if path not in dropped and not path.startswith(prefixes)}
    again = set(changed) | set(touched) | {"."}
    again |= {path.rpartition("/")[0] or "." for path in (*changed, *deleted) if path != "."}
    inodes = {}
    for path in again:
        found = _entry(root, path)
        if found is None:
            by_path.pop(path, None)
            continue
        entry, inode = found
        by_path[path] = entry
        if inode is not None and inode[2] > 1:
            inodes.setdefault(inode[:2], []).append(path)
    for members in inodes.values():
        if len(members) > 1:
            first = sort_paths(list(members))[0]
            for member in members:
                by_path[member] = by_path[member]._replace(group=first)
    return sort_paths(list(by_path.values()), operator.attrgetter("path"))


def digest(entries):
    """``sha256:<hex>`` of a manifest: SHA-256 over each entry's line, in order."""
    hasher = hashlib.sha256()
    entries = list(entries)
    for start in range(0, len(entries), _DIGEST_CHUNK):
        hasher.update(os.fsencode("".join(map(_digest_text, entries[start:start + _DIGEST_CHUNK]))))
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


def save(entries, path):
    """Write a manifest (one gzip'd JSON array of rows) atomically."""
    data = json.dumps(list(entries), separators=(",", ":"), ensure_ascii=False)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as out:
        out.write(gzip.compress(data.encode("utf-8", "surrogateescape"), compresslevel=1))
    os.replace(tmp, path)


def load(path):
    """A manifest written by ``save`` (or, from earlier releases, as JSON lines); raises OSError, ValueError."""
    with open(path, "rb") as stream:
        try:
            text = gzip.decompress(stream.read()).decode("utf-8", "surrogateescape")
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise ValueError(f"not a manifest: {error}") from None
    # Ours is one array of rows on one line; earlier releases wrote a row per line.
    lines = [line for line in text.splitlines() if line]
    rows = json.loads(lines[0]) if len(lines) == 1 else [json.loads(line) for line in lines]
    if rows and not isinstance(rows[0], list):
        rows = [rows]  # one row per line, and only one row
    try:
        return [Entry(*row) for row in rows]
    except TypeError as error:
        raise ValueError(f"not a manifest: {error}") from None
