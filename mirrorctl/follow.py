"""Following a run while it goes: its log as it grows, and its state and slaves as they change."""

import codecs
import time

from mirrorctl.errors import ApiError
from mirrorctl.tables import describe_progress
from mirrorctl.units import human_duration, human_size

FINAL_STATES = frozenset({"success", "partial", "failed", "interrupted", "cancelled"})
# States in which the master's own rsync may still be writing the log.
PULL_STATES = frozenset({"queued", "syncing"})
POLL_INTERVAL = 0.5
PROGRESS_STEP = 10  # percent
LOG_GONE = 410


def is_final(run):
    return run.get("state") in FINAL_STATES


class LogTail:
    """Reads one run's log from where the last read stopped (X-Next-Offset), as text."""

    def __init__(self, client, run_id):
        self.client = client
        self.run_id = run_id
        self.offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def read(self, run_final):
        """All text added since the last read; raises ApiError (410 only once the run is final)."""
        chunks = []
        while True:
            try:
                data, next_offset = self.client.read_log(self.run_id, self.offset)
            except ApiError as error:
                # A run that has just started has no log file yet; the master says 410 until it has.
                if error.status == LOG_GONE and not run_final:
                    break
                raise
            if not data or next_offset <= self.offset:
                break
            self.offset = next_offset
            chunks.append(self._decoder.decode(data))
        if run_final:
            chunks.append(self._decoder.decode(b"", final=True))
        return "".join(chunks)


def follow_log(client, run_id, write, interval=POLL_INTERVAL, sleep=time.sleep):
    """Write the run's log as it grows until the run is final; returns the final run."""
    tail = LogTail(client, run_id)
    while True:
        run = client.get_run(run_id)
        write(tail.read(is_final(run)))
        if is_final(run):
            return run
        sleep(interval)


class RunFollower:
    """Polls a run until it is final and tells ``echo`` each state change, slave change and log line."""

    def __init__(self, client, echo, interval=POLL_INTERVAL, sleep=time.sleep, monotonic=time.monotonic):
        self.client = client
        self.echo = echo
        self.interval = interval
        self.sleep = sleep
        self.monotonic = monotonic

    def follow(self, run):
        """Return the run once it is final."""
        self._started = self.monotonic()
        self._state = run.get("state")
        self._slave_states = {}
        self._progress_step = None
        self._partial_line = ""
        tail = LogTail(self.client, run["id"])
        while True:
            # Entering a pull is told before its log lines; anything later comes after them.
            early = run.get("state") in PULL_STATES
            if early:
                self._tell_changes(run)
            if run.get("state") != "queued":
                self._tell_log(tail, is_final(run))
            if not early:
                self._tell_changes(run)
            if is_final(run):
                return run
            self.sleep(self.interval)
            run = self.client.get_run(run["id"])

    def _stamp(self):
        return f"[{self.monotonic() - self._started:6.1f}s]"

    def _tell_changes(self, run):
        # A run ends because its slaves did, so their last states come before its final one.
        if is_final(run):
            self._tell_slaves(run)
            self._tell_state(run)
        else:
            self._tell_state(run)
            self._tell_progress(run)
            self._tell_slaves(run)

    def _tell_state(self, run):
        if run.get("state") != self._state:
            self._state = run.get("state")
            self.echo(f"{self._stamp()} {self._state}")

    def _tell_progress(self, run):
        # One line per ten percent: enough to see a long pull move without flooding the terminal.
        progress = run.get("progress") if run.get("state") == "syncing" else None
        if not progress or not isinstance(progress.get("percent"), int):
            return
        step = progress["percent"] // PROGRESS_STEP
        if step != self._progress_step:
            self._progress_step = step
            self.echo(f"{self._stamp()} {describe_progress(progress)}")

    def _tell_slaves(self, run):
        for entry in run.get("slaves") or []:
            name, state = entry.get("slave"), entry.get("state")
            if self._slave_states.get(name) != state:
                self._slave_states[name] = state
                error = f": {entry['error']}" if entry.get("error") else ""
                self.echo(f"{self._stamp()} slave {name}: {state}{error}")

    def _tell_log(self, tail, run_final):
        try:
            text = tail.read(run_final)
        except ApiError as error:
            if error.status != LOG_GONE:
                raise
            text = ""  # the run ended without a log (or it was pruned): nothing more to show
        buffered = self._partial_line + text
        if run_final:
            lines, self._partial_line = buffered.splitlines(), ""
        else:
            *lines, self._partial_line = buffered.split("\n")
        for line in lines:
            self.echo(f"  | {line}")


def outcome(run):
    """One line on how a final run went: 'run 7 success in 4.1s; 12 files transferred, 1.2 MiB received;
    slaves 2/2 ok'. Its error is for the caller to report."""
    stats = run.get("stats") or {}
    parts = [f"run {run.get('id')} {run.get('state')}"]
    if run.get("duration") is not None:
        parts[0] += f" in {human_duration(run['duration'])}"
    if stats.get("files_transferred") is not None:
        parts.append(f"{stats['files_transferred']} files transferred, "
                     f"{human_size(stats.get('bytes_received'))} received")
    entries = run.get("slaves") or []
    if entries:
        failed = [entry.get("slave") for entry in entries if entry.get("state") != "success"]
        parts.append(f"slaves {len(entries) - len(failed)}/{len(entries)} ok"
                     + (f" (not: {', '.join(failed)})" if failed else ""))
    return "; ".join(parts)
