"""Start one child process and supervise it: its own process group, a deadline, a cancel event, a log.

The one place that starts the children a run needs (rsync, sync scripts, hooks).
Commands are argument lists, never a shell; the caller decides the child's
environment, so secrets reach it there and nowhere else.
"""

import collections
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

_POLL_INTERVAL = 0.05
# Output kept in memory for the error sentence and the stats; the log has all of it.
_TAIL_LINES = 200
# How long to wait for the output pipe to drain once the process group is gone.
_DRAIN_TIMEOUT = 2.0
# Written to a log when the child's output was still being copied _DRAIN_TIMEOUT after it ended
# (a grandchild holding the pipe): what comes after it there is not in the log.
OUTPUT_CUT_SHORT = "# the output of the child was not all copied: what followed its end is missing"


@dataclass
class Outcome:
    """How a supervised child ended. ``exit_code`` is Popen's: minus the signal that killed it."""

    exit_code: int | None
    timed_out: bool = False
    cancelled: bool = False
    not_started: str | None = None   # why the child could not start, or None
    output: str = ""                 # the error lines seen, then the last lines of output


class RunLog:
    """The per-run log file: header, the children's output as it comes, footer; UTF-8 whatever they print."""

    def __init__(self, path):
        directory = os.path.dirname(os.fspath(path))
        if directory:
            os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._stream = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")
        self._lock = threading.Lock()
        self._copying = True
        self.write_error = None   # why the log stopped taking lines (a full disk), or None

    def write(self, line, from_output=False):
        with self._lock:
            if (from_output and not self._copying) or self.write_error is not None:
                return
            try:
                self._stream.write(line.rstrip("\r\n") + "\n")
                self._stream.flush()
            except OSError as error:
                # A full disk must not stop the child (its output pipe would fill) nor hide how it ended.
                self.write_error = error

    def start_copying(self):
        with self._lock:
            self._copying = True

    def stop_copying(self):
        """From now on, late output from a straggler no longer goes into the log."""
        with self._lock:
            self._copying = False

    def close(self):
        with self._lock:
            try:
                self._stream.close()
            except OSError as error:
                self.write_error = self.write_error or error


class OutputTail:
    """The last lines of output, plus the last error line of each kind however long ago it came."""

    def __init__(self, error_marker=lambda line: None):
        self._lines = collections.deque(maxlen=_TAIL_LINES)
        self._errors = {}
        self._error_marker = error_marker

    def add(self, line):
        self._lines.append(line)
        marker = self._error_marker(line)
        if marker is not None:
            self._errors[marker] = line

    def text(self):
        return "\n".join([*self._errors.values(), *self._lines])


def output_lines(stream):
    """A child's output split on newlines and on the carriage returns progress lines end with."""
    pending = b""
    for chunk in iter(lambda: stream.read1(65536), b""):
        parts = re.split(rb"[\r\n]", pending + chunk)
        pending = parts.pop()
        yield from parts
    if pending:
        yield pending


def copy_output(stream, log, tail, consume=None):
    """Copy each line into ``tail`` and ``log``, unless ``consume(line)`` takes it (returns True), or
    takes the start of it (returns the rest, which is copied)."""
    with stream:
        for raw in output_lines(stream):
            line = raw.decode("utf-8", "backslashreplace")
            if consume is not None:
                taken = consume(line)
                if taken is True:
                    continue
                if isinstance(taken, str):
                    line = taken
            if not line:
                continue
            tail.add(line)
            log.write(line, from_output=True)


class Supervisor:
    """Runs one child at a time per call; safe to share between threads."""

    def __init__(self, kill_grace=5.0):
        self.kill_grace = kill_grace

    def run(self, argv, log, *, env, timeout=None, cancel: threading.Event | None = None,
            on_spawn: Callable[[int], None] | None = None, consume=None, tail=None, cwd=None):
        """Run ``argv`` with its output (stdout and stderr) copied into ``log``; returns an Outcome.

        ``on_spawn(pid)`` is called once the child runs (its pid is its process group).
        ``timeout`` seconds or setting ``cancel`` end the whole group: SIGTERM, then
        SIGKILL after ``kill_grace``. ``consume(line)`` may keep a line out of the log.
        """
        tail = tail or OutputTail()
        if cancel is not None and cancel.is_set():
            return Outcome(None, cancelled=True)
        try:
            process = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        except FileNotFoundError:
            return Outcome(None, not_started=f"{argv[0]!r} not found")
        except OSError as exc:
            return Outcome(None, not_started=f"{argv[0]!r} could not be started: {exc.strerror}")
        log.start_copying()
        reader = threading.Thread(target=copy_output, args=(process.stdout, log, tail, consume),
                                  name=f"output-{process.pid}", daemon=True)
        reader.start()
        stop_reason = None
        try:
            if on_spawn is not None:
                on_spawn(process.pid)
            stop_reason = self._wait(process, timeout, cancel)
        except BaseException:
            self._stop_group(process)
            raise
        finally:
            if stop_reason is not None:
                self._stop_group(process)
            process.wait()
            reader.join(_DRAIN_TIMEOUT)
            if reader.is_alive():
                log.write(OUTPUT_CUT_SHORT)
            log.stop_copying()
        return Outcome(process.returncode, timed_out=stop_reason == "timed_out",
                       cancelled=stop_reason == "cancelled", output=tail.text())

    @staticmethod
    def _wait(process, timeout, cancel):
        """Wait for the child to end; returns None, or why it has to be stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                process.wait(timeout=_POLL_INTERVAL)
                return None
            except subprocess.TimeoutExpired:
                pass
            if cancel is not None and cancel.is_set():
                return "cancelled"
            if deadline is not None and time.monotonic() >= deadline:
                return "timed_out"

    def _stop_group(self, process):
        """SIGTERM the child's process group, SIGKILL whatever is left after kill_grace."""
        group = process.pid
        signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace
        try:
            process.wait(timeout=self.kill_grace)
        except subprocess.TimeoutExpired:
            pass
        # The leader may exit before the rest of its group (rsync 3.5's generator can leave
        # its receiver waiting on the socket for a minute), so the group is watched, not the leader.
        while group_alive(group) and time.monotonic() < deadline:
            time.sleep(_POLL_INTERVAL)
        signal_group(group, signal.SIGKILL)
        process.wait()


def signal_group(group, signum):
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass


def group_alive(group):
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def child_environment(extra=None, drop=()):
    """This process's environment without ``drop``, plus ``extra``: what a child gets."""
    env = {name: value for name, value in os.environ.items() if name not in drop}
    env.update(extra or {})
    return env


class ProgramRunner:
    """Runs one program (a sync script, a hook) under supervision, its output appended to a run log."""

    def __init__(self, kill_grace=5.0):
        self.kill_grace = kill_grace

    def run(self, argv, log_path, *, env, timeout=None, cancel=None, on_spawn=None, cwd=None):
        """Run ``argv``; returns an Outcome. Raises OSError only when ``log_path`` cannot be written."""
        log = RunLog(log_path)
        try:
            log.write(f"$ {shlex.join(argv)}")
            outcome = Supervisor(self.kill_grace).run(argv, log, env=env, timeout=timeout, cancel=cancel,
                                                      on_spawn=on_spawn, cwd=cwd)
            log.write(f"# {describe(outcome, timeout)}")
            return outcome
        finally:
            log.close()


def describe(outcome, timeout=None):
    """One line saying how a program ended: "exit code 0", "timed out after 5 seconds"..."""
    if outcome.not_started is not None:
        return f"not started: {outcome.not_started}"
    if outcome.cancelled:
        return "cancelled"
    if outcome.timed_out:
        return f"timed out after {timeout:g} seconds"
    if outcome.exit_code is not None and outcome.exit_code < 0:
        return f"killed by signal {signal_name(-outcome.exit_code)}"
    return f"exit code {outcome.exit_code}"


# This process's own settings and secrets are no business of a script's.
_PRIVATE_PREFIXES = ("MIRRORSYNC_",)
_PRIVATE_NAMES = ("RSYNC_PASSWORD", "PGPASSWORD")


def script_environment(extra):
    """The environment of a sync script or hook: ours without settings or secrets, plus ``extra``."""
    private = [name for name in os.environ if name.startswith(_PRIVATE_PREFIXES) or name in _PRIVATE_NAMES]
    return child_environment(extra, drop=private)


def run_briefly(argv, timeout=None):
    """Run a short command (``btrfs subvolume ...``, ``cp``) for what it does, with no settings or
    secrets in its environment; raises OSError naming it with the last line it printed when it fails."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              env=script_environment({}), check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise OSError(f"{shlex.join(argv)}: {error}") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise OSError(f"{shlex.join(argv)}: {said[-1] if said else f'exit code {done.returncode}'}")
