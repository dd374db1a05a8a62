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


def between(old, new):
    """The ChangeList that turns the tree of manifest ``old`` into the tree of manifest ``new``.

    A path whose type changed (a directory replaced by a file or a link) is in both
    lists: it is deleted, with whatever was under it, and transferred again.
    """
    before = {entry.path: entry for entry in old}
    after = {entry.path: entry for entry in new}
    changed, created = [], 0
    for entry in new:
        previous = before.get(entry.path)
        if previous is None:
            created += 1
            changed.append(entry.path)
        elif entry != previous:  # the same fields make the same manifest line
            changed.append(entry.path)
    # Files that share an inode travel together: rsync links only files it transfers in one go.
    touched_groups = {after[path].group for path in changed if after[path].group}
    if touched_groups:
        listed = set(changed)
        changed += [entry.path for entry in new if entry.group in touched_groups and entry.path not in listed]
    deleted = [path for path, entry in before.items()
               if path not in after or (after[path].type != entry.type)]
    # Children before their parent, so that each directory is empty when its turn comes.
    digests.sort_paths(deleted, reverse=True)
    # A directory's time moves when an entry is made or removed in it, by rsync's --delay-updates
    # folder too: every parent of a change gets its time set again afterwards. The root's is set,
    # never transferred (a "." in rsync's --files-from would bring the whole top level along).
    parents = {path.rpartition("/")[0] or "." for path in (*changed, *deleted) if path != "."} | {"."}
    touch = tuple(sorted((path, after[path].mtime) for path in parents
                         if path in after and after[path].mtime is not None and after[path].type == "d"))
    return ChangeList(tuple(changed), tuple(deleted), created, touch)
