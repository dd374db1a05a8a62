"""Whole-tree file operations both roles need for snapshots: removing a tree, swapping two paths."""

import contextlib
import ctypes
import errno
import functools
import logging
import os
import secrets
import shutil
import stat
import sys

log = logging.getLogger(__name__)


def remove_tree(path):
    """Delete a file, symlink or whole tree; returns whether it went. Logs instead of raising."""
    try:
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        elif sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=_make_writable_and_retry)
        else:
            shutil.rmtree(path, onerror=_make_writable_and_retry)
        return True
    except FileNotFoundError:
        return False
    except OSError as error:
        log.error("cannot remove %s: %s", path, error)
        return False


# A snapshot being written is "<name>.partial" next to the finished ones (master and slave alike).
PARTIAL_SUFFIX = ".partial"


def fresh_name(snapshots, base):
    """``base``, or ``base-2``, ``base-3``... : the first name free both finished and partial."""
    number = 1
    while True:
        name = base if number == 1 else f"{base}-{number}"
        if not any(os.path.lexists(os.path.join(snapshots, candidate))
                   for candidate in (name, name + PARTIAL_SUFFIX)):
            return name
        number += 1


def safe_relative(path):
    """Whether ``path`` names something under a root: relative, without "..", without NUL."""
    return bool(path) and not path.startswith("/") and ".." not in path.split("/") and "\0" not in path


def real_parents(root, path):
    """Whether every directory on the way from ``root`` to ``path`` is a real directory (no symlink)."""
    parent = root
    for part in path.split("/")[:-1]:
        parent = os.path.join(parent, part)
        try:
            if not stat.S_ISDIR(os.lstat(parent).st_mode):
                return False
        except FileNotFoundError:
            return False
    return True


def link_copy(source, destination):
    """Fill the empty directory ``destination`` with ``source``'s tree: hard links for files, copies
    of symlinks and directories (with their modes and times), and ``destination`` given ``source``'s
    times. Raises OSError.

    One scandir pass; only directories and symlinks are stat'ed (for their modes and times;
    a directory's are set once everything under it exists, so a read-only one can still be filled).
    The top keeps its own mode: the pull that follows writes in it.
    """
    directories = []
    pending = [(os.fspath(source), os.fspath(destination))]
    while pending:
        source_dir, target_dir = pending.pop()
        with os.scandir(source_dir) as scan:
            for item in scan:
                target = os.path.join(target_dir, item.name)
                if item.is_symlink():
                    os.symlink(os.readlink(item.path), target)
                    # rsync --times keeps a symlink's own time: so does the copy.
                    info = item.stat(follow_symlinks=False)
                    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
                elif item.is_dir(follow_symlinks=False):
                    os.mkdir(target, 0o700)
                    directories.append((target, item.stat(follow_symlinks=False)))
                    pending.append((item.path, target))
                elif item.is_file(follow_symlinks=False):
                    os.link(item.path, target, follow_symlinks=False)
    for target, info in directories:
        os.chmod(target, stat.S_IMODE(info.st_mode))
        os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    top = os.lstat(source)
    os.utime(destination, ns=(top.st_atime_ns, top.st_mtime_ns))


@contextlib.contextmanager
def unchanged_directory(path):
    """Write in the directory ``path`` (even a read-only one) and leave its mode and times as they were."""
    info = os.lstat(path)
    mode = stat.S_IMODE(info.st_mode)
    if not mode & stat.S_IWUSR:
        os.chmod(path, mode | stat.S_IWUSR)
    try:
        yield
    finally:
        os.chmod(path, mode)
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


def new_link(existing, beside):
    link = f"{beside}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
    os.link(existing, link)
    return link


def private_copy(path):
    """A new file beside ``path`` with its content, mode and times; returns its path."""
    info = os.lstat(path)
    copy = f"{path}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
    shutil.copyfile(path, copy, follow_symlinks=False)
    os.chmod(copy, stat.S_IMODE(info.st_mode))
    os.utime(copy, ns=(info.st_atime_ns, info.st_mtime_ns))
    return copy


def _make_writable_and_retry(function, path, _error):
    # Mirrored directories may be read-only (mode 0555), and then their entries cannot
    # go: open the parent and the entry up to their owner, and try once more.
    for directory in (os.path.dirname(path), path):
        if os.path.isdir(directory) and not os.path.islink(directory):
            os.chmod(directory, stat.S_IMODE(os.lstat(directory).st_mode) | stat.S_IRWXU)
    if function in (os.unlink, os.remove, os.rmdir):
        function(path)
    else:
        shutil.rmtree(path)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})


def exchange(first, second):
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot.

    Raises OSError for any other failure.
    """
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), first, None, second)


@functools.cache
def _renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None  # not glibc >= 2.28 or a libc that has it
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function
