"""Sample trees that are hard to mirror, and ways to prove two trees are the same.

``build_tricky_tree`` makes names, links and modes that break naive mirroring;
``mutate_tree`` changes such a tree the way an upstream does between two pulls.
Both only create *safe* symlinks (relative, staying inside the tree), because the
master pulls with ``--safe-links``; ``add_unsafe_symlinks`` adds the other kind.
``assert_trees_equal`` compares what a mirror user would notice;
``assert_same_with_rsync`` asks rsync itself whether anything would still move.
"""

import functools
import os
import random
import shutil
import stat
import subprocess

from common.methods.markers import file_digest

# Fixed times so that two trees can be compared to the second.
BASE_MTIME = 1_600_000_000
MUTATED_MTIME = BASE_MTIME + 86_400
BIG_FILE_SIZE = 1024 * 1024

ODD_NAMES = (
    "with space.txt",
    "tab\there.txt",
    "single'quote.txt",
    'double"quote.txt',
    "-rf",
    "--delete",
    ".hidden",
    "ünïcødé-文件",
    "glob*?[.txt",
    "back\\slash.txt",
)
NEWLINE_NAME = "new\nline.txt"
UNSAFE_SYMLINKS = {
    "unsafe-absolute": "/etc/hostname",
    "unsafe-escape": "../outside-the-tree",
    "a/unsafe-deep-escape": "../../../outside-the-tree",
}
_MAX_DIFF_LINES = 40


def build_tricky_tree(root):
    """Fill ``root`` (created if missing) with the sample tree; safe symlinks only."""
    root = os.fspath(root)
    rng = random.Random(20240601)
    os.makedirs(root, exist_ok=True)
    files = {
        "empty": b"",
        "small.txt": b"hello mirror\n",
        "same-size.txt": b"0123456789abcdef\n",
        "medium.bin": rng.randbytes(64 * 1024 + 7),
        "big.bin": rng.randbytes(BIG_FILE_SIZE),
        "replace-me": b"a file that becomes a directory\n",
        "a/b/c/deep.txt": b"deep\n",
        "a/b/sibling.txt": b"sibling\n",
        "dir with space/inner -file": b"inner\n",
        "dir with space/ünïcødé-文件/leaf": b"leaf\n",
        "hard-1": b"hard linked pair\n",
        "a/hl-x": b"hard linked triple\n",
        "private.txt": b"mode 0600\n",
        "run.sh": b"#!/bin/sh\necho mirror\n",
    }
    for name in ODD_NAMES:
        files[name] = f"odd name {name!r}\n".encode()
    if _filesystem_allows(root, NEWLINE_NAME):
        files[NEWLINE_NAME] = b"a newline in the name\n"
    for index, (relpath, content) in enumerate(sorted(files.items())):
        _write(root, relpath, content, BASE_MTIME + index)
    os.chmod(os.path.join(root, "private.txt"), 0o600)
    os.chmod(os.path.join(root, "run.sh"), 0o755)

    os.makedirs(os.path.join(root, "empty-dir"), exist_ok=True)
    os.makedirs(os.path.join(root, "locked-dir"), exist_ok=True)
    os.chmod(os.path.join(root, "locked-dir"), 0o700)

    os.link(os.path.join(root, "hard-1"), os.path.join(root, "hard-2"))
    os.link(os.path.join(root, "a/hl-x"), os.path.join(root, "a/b/hl-y"))
    os.link(os.path.join(root, "a/hl-x"), os.path.join(root, "hl-z"))

    os.symlink("small.txt", os.path.join(root, "link-to-small"))
    os.symlink("b/c", os.path.join(root, "a/link-to-dir"))
    os.symlink("../../../small.txt", os.path.join(root, "a/b/c/link-up"))
    os.symlink("does-not-exist", os.path.join(root, "dangling"))
    os.symlink("with space.txt", os.path.join(root, "-link with space"))
    _stamp_dirs(root, BASE_MTIME)


def add_unsafe_symlinks(root):
    """Add symlinks that ``--safe-links`` refuses (absolute, or escaping the tree)."""
    root = os.fspath(root)
    for relpath, target in UNSAFE_SYMLINKS.items():
        path = os.path.join(root, relpath)
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        parent_times = os.stat(parent)
        os.symlink(target, path)
        # Keep the tree's directory times as they were, so only the new links differ.
        os.utime(parent, ns=(parent_times.st_atime_ns, parent_times.st_mtime_ns))


def mutate_tree(root):
    """Change a tree from ``build_tricky_tree`` the way an upstream does between two pulls."""
    root = os.fspath(root)
    join = functools.partial(os.path.join, root)

    os.remove(join("medium.bin"))
    os.remove(join("-rf"))
    shutil.rmtree(join("dir with space"))
    shutil.rmtree(join("a/b/c"))

    _write(root, "new-file.txt", b"added upstream\n", MUTATED_MTIME)
    _write(root, "a/new-dir/--new", b"added in a new dir\n", MUTATED_MTIME)
    _write(root, "big.bin", random.Random(7).randbytes(BIG_FILE_SIZE // 2), MUTATED_MTIME)
    # Same size, other content: only the mtime tells rsync's quick check.
    _write(root, "same-size.txt", b"fedcba9876543210\n", MUTATED_MTIME + 1)

    os.remove(join("replace-me"))
    _write(root, "replace-me/now-a-dir.txt", b"was a file\n", MUTATED_MTIME)
    os.rmdir(join("empty-dir"))
    _write(root, "empty-dir", b"was an empty dir\n", MUTATED_MTIME)

    os.remove(join("hard-2"))
    _write(root, "hard-2", b"no longer linked\n", MUTATED_MTIME)

    os.remove(join("link-to-small"))
    os.symlink("single'quote.txt", join("link-to-small"))
    os.chmod(join("private.txt"), 0o640)
    _stamp_dirs(root, MUTATED_MTIME)


def describe_tree(root):
    """Map each relative path to what a mirror must keep: type, content, target, mode, mtime, links.

    Files that share an inode carry the same ``hardlink_group`` (the first of their paths).
    A root that is a symlink (the master's DATA_DIR/<project>, an atomic slave's tree) is
    followed: what is described is the tree a reader of that path gets.
    """
    root = os.path.realpath(os.fspath(root))
    entries = {}
    inodes = {}
    for relpath, st in _walk(root):
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            entries[relpath] = {"type": "symlink", "target": os.readlink(os.path.join(root, relpath))}
            continue
        entry = {"type": _kind(mode), "mode": oct(stat.S_IMODE(mode)), "mtime": int(st.st_mtime)}
        if stat.S_ISREG(mode):
            entry["size"] = st.st_size
            entry["sha256"] = _sha256(os.path.join(root, relpath))
            if st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), []).append(relpath)
        entries[relpath] = entry
    # A file linked only from outside the tree (another snapshot) is alone in it: no group.
    for paths in inodes.values():
        if len(paths) > 1:
            for relpath in paths:
                entries[relpath]["hardlink_group"] = min(paths)
    return entries


def assert_trees_equal(expected, actual, ignore=()):
    """Raise AssertionError listing every difference between the trees at ``expected`` and ``actual``.

    ``ignore`` holds relative paths to leave out of the comparison (e.g. the root's own mtime).
    """
    want = {path: entry for path, entry in describe_tree(expected).items() if path not in ignore}
    got = {path: entry for path, entry in describe_tree(actual).items() if path not in ignore}
    problems = []
    for path in sorted(want.keys() - got.keys()):
        problems.append(f"missing in {actual}: {path!r} ({want[path]['type']})")
    for path in sorted(got.keys() - want.keys()):
        problems.append(f"unexpected in {actual}: {path!r} ({got[path]['type']})")
    for path in sorted(want.keys() & got.keys()):
        for field in sorted(want[path].keys() | got[path].keys()):
            if want[path].get(field) != got[path].get(field):
                problems.append(f"{path!r}: {field} expected {want[path].get(field)!r}, got {got[path].get(field)!r}")
    if problems:
        shown = problems[:_MAX_DIFF_LINES]
        if len(problems) > len(shown):
            shown.append(f"... and {len(problems) - len(shown)} more")
        raise AssertionError(f"trees differ ({expected} -> {actual}):\n  " + "\n  ".join(shown))


def assert_same_with_rsync(expected, actual, safe_links=True, binary="rsync"):
    """Raise AssertionError if an rsync dry run from ``expected`` to ``actual`` would change anything."""
    argv = [binary, "-aHn", "--delete", "--itemize-changes", "--checksum", "--numeric-ids"]
    if safe_links:
        argv.append("--safe-links")
    argv += ["--", os.path.join(os.fspath(expected), ""), os.path.join(os.fspath(actual), "")]
    completed = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    output = completed.stdout.decode("utf-8", "backslashreplace")
    if completed.returncode != 0:
        raise AssertionError(f"rsync dry run failed with exit {completed.returncode}: "
                             f"{completed.stderr.decode('utf-8', 'backslashreplace')}")
    changes = [line for line in output.splitlines() if line.strip()]
    if changes:
        raise AssertionError("rsync would still change:\n  " + "\n  ".join(changes[:_MAX_DIFF_LINES]))


def _walk(root):
    """Yield (relative path, lstat) for everything under root, root itself as '.'; never follows links."""
    yield ".", os.lstat(root)
    pending = [""]
    while pending:
        reldir = pending.pop()
        with os.scandir(os.path.join(root, reldir)) as scan:
            for item in scan:
                relpath = os.path.join(reldir, item.name)
                st = item.stat(follow_symlinks=False)
                yield relpath, st
                if stat.S_ISDIR(st.st_mode):
                    pending.append(relpath)


def _kind(mode):
    for kind, test in (("dir", stat.S_ISDIR), ("file", stat.S_ISREG), ("fifo", stat.S_ISFIFO),
                       ("socket", stat.S_ISSOCK), ("chardev", stat.S_ISCHR), ("blockdev", stat.S_ISBLK)):
        if test(mode):
            return kind
    return "other"


def _sha256(path):
    return file_digest(path)


def write_file(root, relpath, content, mtime):
    """Write ``content`` (str or bytes) at ``root/relpath``, its directories made, with mtime ``mtime``."""
    path = os.path.join(root, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(content.encode() if isinstance(content, str) else content)
    os.utime(path, (mtime, mtime))


_write = write_file


def _stamp_dirs(root, mtime):
    """Give every directory a known mtime, after all entries are in place."""
    for relpath, st in list(_walk(root)):
        if stat.S_ISDIR(st.st_mode):
            os.utime(os.path.join(root, relpath), (mtime, mtime))


def _filesystem_allows(root, name):
    probe = os.path.join(root, name)
    try:
        with open(probe, "wb"):
            pass
    except OSError:
        return False
    os.remove(probe)
    return True
