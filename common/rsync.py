"""Build rsync command lines, run one rsync under supervision, and read its ``--stats``.

The only module in the project that builds an rsync command; common/processes.py starts it. The password reaches the child
through ``RSYNC_PASSWORD`` in its environment only: never argv, never a log line.
"""

import dataclasses
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from common.errors import ConfigError
from common.processes import (OutputTail, RunLog, Supervisor, child_environment, copy_output, output_lines,
                              signal_name)

# What a mirror needs, as Debian's ftpsync has it (-rlptH, not --archive): files,
# symlinks, modes and times, with hard links (--hard-links); switched over at the end
# so readers never see half a tree (--delay-updates; --delete-delay removes files only
# once the transfer completed, so a pull that dies midway, from a full disk or a kill,
# leaves every old file in place), no symlink that points out of the tree
# (--safe-links), and a --stats block with plain digits that parse_stats can read
# (--no-human-readable). Owners and groups are not kept: files belong to the user that
# pulls them, never to upstream's numeric ids.
DEFAULT_OPTIONS = (
    "--recursive",
    "--links",
    "--perms",
    "--times",
    "--hard-links",
    "--delete-delay",
    "--delay-updates",
    "--safe-links",
    "--stats",
    "--no-human-readable",
)
# To an rsync daemon: no small write waits for the peer's delayed ACK (Nagle's algorithm). The
# protocol's start and end are a few small messages each way, and without this every pull
# through a daemon spent about 0.1 s in three such 40 ms waits, whatever it moved; the master's
# daemon sets it on its side too (master/rsyncd.py).
DAEMON_OPTIONS = ("--sockopts=TCP_NODELAY",)
_DAEMON_SOURCE = re.compile(r"^(?:rsync://|[^/]*::)")
# What RsyncJob.listed adds (after the job's own options: rsync takes the last --info).
LISTING_OPTIONS = ("--info=name2", "--out-format=%i %n", "--force")

# Last on every command line, after the project's own options (rsync takes the last
# word, and --chmod rules apply in order), so nothing a project sets can bring them back:
# no device node or special file (fifo, socket) ever lands, no owner or group is copied,
# and no file or directory keeps a set-user-id or set-group-id bit or becomes writable
# by group or others.
ENFORCED_OPTIONS = (
    "--no-devices",
    "--no-specials",
    "--no-owner",
    "--no-group",
    "--chmod=ug-s,go-w",
)

# rsync(1), EXIT VALUES. 6 is gone from the 3.5 page but still in errcode.h.
EXIT_MEANINGS = {
    1: "syntax or usage error",
    2: "protocol incompatibility",
    3: "errors selecting input/output files, directories",
    4: "requested action not supported (an option the client supports and the server does not, "
       "or 64-bit files on a platform that cannot handle them)",
    5: "error starting client-server protocol",
    6: "daemon unable to append to log-file",
    10: "error in socket I/O",
    11: "error in file I/O",
    12: "error in rsync protocol data stream",
    13: "errors with program diagnostics",
    14: "error in IPC code",
    15: "sibling process crashed",
    16: "sibling process was killed by a signal",
    19: "received SIGUSR1",
    20: "received SIGINT, SIGTERM, or SIGHUP",
    21: "some error returned by waitpid()",
    22: "error allocating core memory buffers",
    23: "partial transfer due to error",
    24: "partial transfer due to vanished source files",
    25: "the --max-delete limit stopped deletions",
    30: "timeout in data send/receive",
    35: "timeout waiting for daemon connection",
}
OK_EXIT_CODES = frozenset({0, 24})
# Worth another try later: the network or the upstream daemon, not our tree or options.
TRANSIENT_EXIT_CODES = frozenset({5, 10, 12, 30, 35})
VANISHED_WARNING = "some files vanished on the source during the transfer (rsync exit 24)"



@dataclass(frozen=True)
class RsyncJob:
    """One transfer: ``source`` into the local directory ``destination``."""

    source: str
    destination: str
    options: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    password: str | None = dataclasses.field(default=None, repr=False)
    timeout: float | None = None
    # False leaves files the source no longer has (stage 1 of a two-stage pull).
    delete: bool = True
    # A list: rsync names every entry it finds (--info=name2, with the "%i %n" out-format), and the
    # names of those it left as they were go into this list instead of the log (``_Unchanged``). With
    # it rsync deletes nothing: the caller deletes what was not named.
    listed: list | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclass
class RsyncStats:
    files_total: int | None = None
    files_created: int | None = None
    files_deleted: int | None = None
    files_transferred: int | None = None
    total_size: int | None = None
    bytes_sent: int | None = None
    bytes_received: int | None = None

    def to_dict(self):
        return dataclasses.asdict(self)


@dataclass
class RsyncResult:
    exit_code: int | None
    ok: bool
    warning: str | None
    error: str | None
    timed_out: bool
    cancelled: bool
    stats: RsyncStats


def build_command(job, binary="rsync", progress=False):
    """The argv list for ``job``: defaults, job options, enforced options, excludes, ``--``, the paths.

    With ``progress``, rsync also prints whole-transfer progress (``--info=progress2``).
    """
    deletes = job.delete and job.listed is None
    defaults = DEFAULT_OPTIONS if deletes else tuple(o for o in DEFAULT_OPTIONS if o != "--delete-delay")
    return [
        binary,
        *defaults,
        *(("--info=progress2",) if progress else ()),
        *(DAEMON_OPTIONS if _DAEMON_SOURCE.match(job.source) else ()),
        *job.options,
        # Every entry named, and a directory in the way of a file removed even without --delete.
        *(LISTING_OPTIONS if job.listed is not None else ()),
        *ENFORCED_OPTIONS,
        *(f"--exclude={pattern}" for pattern in job.excludes),
        # rsync 3.x stops option parsing at "--", so a path can never be read as a flag.
        "--",
        _with_trailing_slash(job.source),
        _with_trailing_slash(job.destination),
    ]


# "Number of files: 1,234 (reg: ...)" -> field. rsync 3.0 said "Number of files transferred".
_STATS_LINES = {
    "files_total": r"Number of files",
    "files_created": r"Number of created files",
    "files_deleted": r"Number of deleted files",
    "files_transferred": r"Number of (?:regular )?files transferred",
    "total_size": r"Total file size",
    "bytes_sent": r"Total bytes sent",
    "bytes_received": r"Total bytes received",
}
_STATS_PATTERNS = {
    field: re.compile(rf"^\s*{label}:\s*(\d[\d,.']*)([A-Za-z]?)", re.MULTILINE)
    for field, label in _STATS_LINES.items()
}


def parse_stats(output):
    """Read the ``--stats`` block out of rsync's output; a line that is missing or unreadable gives None."""
    values = {}
    for field, pattern in _STATS_PATTERNS.items():
        matches = pattern.findall(output)
        values[field] = _stats_number(*matches[-1]) if matches else None
    return RsyncStats(**values)


def _stats_number(digits, suffix):
    # "123.46K" comes from --human-readable and is rounded: better no number than a wrong one.
    # Without a suffix, "," or "." (depending on the locale) only groups thousands.
    if suffix:
        return None
    return int(re.sub(r"[,.']", "", digits))


def result_from_exit(exit_code, output, timed_out=False, cancelled=False, timeout=None):
    """Turn how rsync ended (Popen-style exit code, output text) into an RsyncResult."""
    stats = parse_stats(output)
    if cancelled:
        return RsyncResult(exit_code, False, None, "cancelled", timed_out, True, stats)
    if timed_out:
        return RsyncResult(exit_code, False, None, f"timed out after {timeout:g} seconds", True, False, stats)
    if exit_code in OK_EXIT_CODES:
        warning = VANISHED_WARNING if exit_code == 24 else None
        return RsyncResult(exit_code, True, warning, None, False, False, stats)
    if exit_code is None:
        return RsyncResult(None, False, None, "rsync did not run", False, False, stats)
    if exit_code < 0:
        error = f"rsync was killed by signal {signal_name(-exit_code)}"
    else:
        meaning = EXIT_MEANINGS.get(exit_code, "unknown error")
        error = f"{meaning[0].upper()}{meaning[1:]} (rsync exit {exit_code})"
    detail = last_error_line(output)
    if detail:
        error = f"{error}: {detail}"
    return RsyncResult(exit_code, False, None, error, False, False, stats)


_ERROR_SOURCE_LOCATION = re.compile(r"\s+at \S+\(\d+\)\s*(\[[^\]]*\])?\s*$")
# Most telling first: the daemon's "@ERROR" (e.g. "auth failed on module x"), then rsync's
# own "rsync: ..." complaints, then the generic "rsync error: ..." summary.
_ERROR_MARKERS = ("@ERROR", "rsync:", "rsync error")


def last_error_line(output):
    """The most telling error line in rsync's output, cleaned up for a sentence; None if there is none."""
    lines = output.splitlines()
    for marker in _ERROR_MARKERS:
        for line in reversed(lines):
            if _error_marker(line) == marker:
                text = line[line.index(marker):].strip()
                if marker == "@ERROR":
                    text = text.removeprefix("@ERROR").lstrip(":").strip()
                return _ERROR_SOURCE_LOCATION.sub("", text) or None
    return None


def _error_marker(line):
    # "@ERROR" may follow a prompt on the same line ("Password: @ERROR: auth failed ...").
    if "@ERROR" in line:
        return "@ERROR"
    for marker in _ERROR_MARKERS[1:]:
        if line.startswith(marker):
            return marker
    return None


class RsyncRunner:
    """Runs one RsyncJob at a time per call; safe to share between threads."""

    def __init__(self, binary="rsync", kill_grace=5.0):
        self.binary = binary
        self.kill_grace = kill_grace

    def run(self, job, log_path, on_spawn: Callable[[int], None] | None = None,
            cancel: threading.Event | None = None, on_progress: Callable[[dict], None] | None = None):
        """Run ``job``, appending its output to ``log_path``; rsync failures come back in the result.

        ``on_spawn(pid)`` is called as soon as rsync started (its pid is also its process
        group). Setting ``cancel`` or passing ``job.timeout`` ends rsync's whole process group.
        Raises OSError only when ``log_path`` cannot be written.
        """
        argv = build_command(job, self.binary, progress=on_progress is not None)
        log = RunLog(log_path)
        try:
            log.write(f"$ {shlex.join(argv)}")
            if cancel is not None and cancel.is_set():
                return _finish(log, result_from_exit(None, "", cancelled=True))
            try:
                os.makedirs(job.destination, exist_ok=True)
            except OSError as exc:
                return _finish(log, _not_started(f"cannot create destination {job.destination!r}: {exc.strerror}"))
            progress = _ProgressLines(on_progress) if on_progress is not None else None
            consume = progress
            if job.listed is not None:
                consume = _Unchanged(job.listed, progress)
            outcome = Supervisor(self.kill_grace).run(
                argv, log, env=_child_environment(job.password), timeout=job.timeout, cancel=cancel,
                on_spawn=on_spawn, consume=consume, tail=OutputTail(_error_marker))
            if progress is not None:
                progress.flush()
            if outcome.not_started is not None:
                return _finish(log, _not_started(f"rsync binary {self.binary!r} "
                                                 f"{outcome.not_started.split(' ', 1)[1]}"))
            result = result_from_exit(outcome.exit_code, outcome.output, timed_out=outcome.timed_out,
                                      cancelled=outcome.cancelled, timeout=job.timeout)
            if not result.ok:
                removed = remove_partial_updates(job.destination)
                if removed:
                    log.write(f"# removed {removed} unfinished --delay-updates folder(s) ({DELAY_DIR})")
            return _finish(log, result)
        finally:
            log.close()


def _finish(log, result):
    if result.ok:
        outcome = "ok" if result.warning is None else f"ok, warning: {result.warning}"
    else:
        outcome = f"failed: {result.error}"
    log.write(f"# exit code {result.exit_code}, {outcome}")
    return result


# "  1234567  45%  12.34MB/s  0:00:05 (xfr#3, to-chk=10/20)", one per \r, from --info=progress2.
_PROGRESS = re.compile(r"^\s*([\d,]+)\s+(\d+)%\s+(\S+/s)\s+(\d+:\d\d:\d\d)"
                       r"(?:\s+\(xfr#(\d+), (?:ir|to)-chk=(\d+)/(\d+)\))?\s*$")
_PROGRESS_START = re.compile(r"^\s*[\d,]+\s+\d+%\s+\S+/s\s+\d+:\d\d:\d\d(?:\s+\(xfr#\d+, (?:ir|to)-chk=\d+/\d+\))?")
PROGRESS_EVERY = 1.0  # seconds between two progress callbacks


def parse_progress(line):
    """A progress2 line as a dict (bytes, percent, rate, eta, files_transferred), or None."""
    match = _PROGRESS.match(line)
    if match is None:
        return None
    done, percent, rate, eta, transferred, to_check, total = match.groups()
    progress = {"bytes": int(done.replace(",", "")), "percent": int(percent), "rate": rate, "eta": eta}
    if transferred is not None:
        progress.update(files_transferred=int(transferred), files_to_check=int(to_check),
                        files_total=int(total))
    return progress


class _ProgressLines:
    """Takes progress lines out of the output for ``on_progress``, at most one call per PROGRESS_EVERY."""

    def __init__(self, on_progress):
        self.on_progress = on_progress
        self.last_report = 0.0
        self.latest = None

    def __call__(self, line):
        progress = parse_progress(line)
        if progress is None:
            # rsync ends a progress line with the next one's \r, or not at all when a name follows.
            match = _PROGRESS_START.match(line)
            if match is None or parse_progress(match.group(0)) is None:
                return False
            self._take(parse_progress(match.group(0)))
            return line[match.end():].lstrip() or True
        self._take(progress)
        return True

    def _take(self, progress):
        # Progress goes to the run, not the log: a long pull prints thousands of these.
        self.latest = progress
        if time.monotonic() - self.last_report >= PROGRESS_EVERY:
            self.last_report = time.monotonic()
            _report_progress(self.on_progress, progress)

    def flush(self):
        if self.latest is not None:
            _report_progress(self.on_progress, self.latest)
            self.latest = None


class _Unchanged:
    """Takes the lines of entries rsync left as they were (``.f``, ``.d``, ``.L``, ``hf``... and no change
    flag, under --info=name2 and the "%i %n" out-format) out of the output, their names into ``names``
    (as rsync prints them: escaped, a directory with its "/"): a tree's every unchanged entry would
    otherwise be a line of the log. Progress lines go to ``progress`` first."""

    _BLANK = " " * 10   # nine unchanged attribute columns, then the space before the name

    def __init__(self, names, progress=None):
        self.names = names
        self.progress = progress

    def __call__(self, line):
        if self._take(line):   # first: most lines are these, and none of them is a progress line
            return True
        taken = self.progress(line) if self.progress is not None else False
        if isinstance(taken, str) and self._take(taken):
            return True
        return taken

    def _take(self, line):
        if line[:1] in ".h" and line[2:12] == self._BLANK and len(line) > 12:
            self.names.append(line[12:])
            return True
        return False


def _copy_output(stream, log, tail, on_progress=None):
    progress = _ProgressLines(on_progress) if on_progress is not None else None
    copy_output(stream, log, tail, progress)
    if progress is not None:
        progress.flush()


_output_lines = output_lines


def _report_progress(on_progress, progress):
    # Progress is a nicety: a failing callback must never stop the log and the stats.
    try:
        on_progress(progress)
    except Exception:
        logging.getLogger(__name__).exception("progress callback failed")


def _child_environment(password):
    return child_environment({} if password is None else {"RSYNC_PASSWORD": password}, drop=("RSYNC_PASSWORD",))


def _not_started(error):
    return RsyncResult(None, False, None, error, False, False, RsyncStats())




def _with_trailing_slash(path):
    return path if path.endswith("/") else f"{path}/"


# Where --delay-updates keeps new files until the end of a transfer, in each directory.
DELAY_DIR = ".~tmp~"


def remove_partial_updates(destination):
    """Delete the DELAY_DIR folders a failed or killed pull left in ``destination``; returns how many.

    They hold half-transferred files, which would be served to visitors and,
    after a full disk, keep the disk full so that the next pull fails too.
    Symlinks are never followed.
    """
    removed = 0
    stack = [os.fspath(destination)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name == DELAY_DIR:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
            else:
                stack.append(entry.path)
    return removed


def end_orphaned_rsync(pgid, grace=1.0):
    """End the process group of an rsync a dead parent (executor or slave) left behind.

    Only a process that is still rsync is touched: a pid reused by anything else is left alone.
    The grace before SIGKILL is short: an orphan's work is thrown away anyway, and an rsync
    receiver can sit out a SIGTERM for a long while.
    """
    try:
        with open(f"/proc/{int(pgid)}/cmdline", "rb") as cmdline:
            argv0 = cmdline.read().split(b"\0", 1)[0]
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return False
    if not os.path.basename(argv0).startswith(b"rsync"):
        return False  # the pid was reused by something else: leave it alone
    try:
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            os.killpg(pgid, 0)
            time.sleep(0.05)
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    logging.getLogger(__name__).warning("ended orphaned rsync process group %s", pgid)
    return True


def daemon_command(config_path, port, address=None, binary="rsync"):
    """The argv of an rsync daemon in the foreground, for a service manager or a parent to supervise."""
    argv = [binary, "--daemon", "--no-detach", f"--config={config_path}", f"--port={int(port)}"]
    if address:
        argv.append(f"--address={address}")
    return argv


def start_daemon(config_path, port, address=None, binary="rsync", log_file=None):
    """Start ``rsync --daemon --no-detach`` in its own process group; returns the Popen.

    Raises OSError when the binary cannot be started.
    """
    return subprocess.Popen(daemon_command(config_path, port, address, binary), start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=log_file or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)


# --safe-links behaves as documented along a chain of links, --delete-delay and
# --info=progress2 exist, and "--" ends options, from rsync 3.1 on.
MINIMUM_VERSION = (3, 1)
_VERSION_LINE = re.compile(r"rsync\s+version\s+v?(\d+)\.(\d+)(?:\.(\d+))?")


def rsync_version(binary="rsync"):
    """(major, minor, patch) of ``binary``, or None when it cannot be run or read."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_LINE.search(done.stdout.decode("utf-8", errors="replace"))
    return tuple(int(part or 0) for part in match.groups()) if match else None


def check_rsync_version(binary="rsync"):
    """Raises ConfigError when ``binary`` is an rsync older than MINIMUM_VERSION.

    A binary that cannot be run at all is left to the first sync, which says so in its run.
    """
    version = rsync_version(binary)
    if version is not None and version[:2] < MINIMUM_VERSION:
        raise ConfigError(f"RSYNC_BINARY: {binary} is rsync {'.'.join(map(str, version))}; mirror-sync needs "
                          f"rsync {'.'.join(map(str, MINIMUM_VERSION))} or later")
