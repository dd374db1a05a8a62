"""What changed between two trees, from their manifests: the paths to transfer and the paths to delete."""

import dataclasses

from common import digests


@dataclasses.dataclass(frozen=True)
class ChangeList:
    """``changed``: entries that are new or differ, parents first; ``deleted``: gone, children first;
    ``touch``: (directory, mtime) to set again once the deletions changed those directories' times."""
    changed: tuple[str, ...]
    deleted: tuple[str, ...]
    created: int = 0   # how many of ``changed`` did not exist before
    touch: tuple[tuple[str, int], ...] = ()

    @property
    def empty(self):
        return not self.changed and not self.deleted


def between(old, new, edits=None):
    """The ChangeList that turns the tree of manifest ``old`` into the tree of manifest ``new``.

    A path whose type changed (a directory replaced by a file or a link) is in both
    lists: it is deleted, with whatever was under it, and transferred again. With
    ``edits``, how ``new`` was spliced from ``old`` (``digests.splice``), only the
    entries they name are compared: everything else is the same in both.
    """
    if edits is None:
        before = {entry.path: entry for entry in old}
        after = {entry.path: entry for entry in new}
        pairs = [(before, after, new)]
    else:
        pairs = []
        for edit in edits:
            before = {entry.path: entry for entry in old[edit.start:edit.stop]}
            pairs.append((before, {entry.path: entry for entry in edit.entries}, edit.entries))
    changed, created, deleted, groups = [], 0, [], set()
    for before, after, entries in pairs:
        for entry in entries:
            previous = before.get(entry.path)
            if previous is None:
                created += 1
                changed.append(entry.path)
            elif entry != previous:  # the same fields make the same manifest line
                changed.append(entry.path)
            else:
                continue
            if entry.group:
                groups.add(entry.group)
        deleted += [path for path, entry in before.items() if path not in after or (after[path].type != entry.type)]
    # Files that share an inode travel together: rsync links only files it transfers in one go.
    if groups:
        listed = set(changed)
        changed += [entry.path for entry in new if entry.group in groups and entry.path not in listed]
    # Children before their parent, so that each directory is empty when its turn comes.
    digests.sort_paths(deleted, reverse=True)
    # A directory's time moves when an entry is made or removed in it, by rsync's --delay-updates
    # folder too: every parent of a change gets its time set again afterwards. The root's is set,
    # never transferred (a "." in rsync's --files-from would bring the whole top level along).
    parents = {path.rpartition("/")[0] or "." for path in (*changed, *deleted) if path != "."} | {"."}
    directories = (digests.find(new, path) for path in parents)
    touch = tuple(sorted((entry.path, entry.mtime) for entry in directories
                         if entry is not None and entry.mtime is not None and entry.type == "d"))
    return ChangeList(tuple(changed), tuple(deleted), created, touch)
