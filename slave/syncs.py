"""The sync worker: pulls the master ordered, at most one per project at a time, through a bounded pool.

Any process of the slave (say, several gunicorn workers) may accept an order,
but pulls run in exactly one of them: the one holding STATE_DIR/worker.lock.
Another process writes the order's record and leaves a marker in
STATE_DIR/orders/ for it. Records in STATE_DIR/syncs/<run_id>-<project>.json say what
became of each order and survive restarts; an order is known by its project and
run together, so a run id the master hands out again for another project is a
new order. How a pulled tree goes public
(in place, or as a snapshot swapped in) is slave/publishing.py's job.
"""

import collections
import contextlib
import dataclasses
import datetime
import fcntl
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field

from common import digests, traces
from common.errors import Conflict, NotFound
from common.methods import RSYNC, MethodSpec, Runners, method_for
from common.processes import ProgramRunner, RunLog
from common.rsync import RsyncJob, RsyncResult, RsyncStats, end_orphaned_rsync, remove_partial_updates
from common.runlogs import log_path, prune_logs
from common.wire import edit_schema, progress_schema
from slave.credentials import create_json_exclusively, ensure_private_dir, read_json, write_json_atomically
from slave import transfers
from slave.progress import ProgressReporter
from slave.publishing import DELAY, KEEP_SNAPSHOTS, Publisher, PublishError
from slave import watch as watch_module
from slave.watch import TreeWatch

log = logging.getLogger(__name__)

ACCEPTED, SYNCING, SUCCESS, FAILED = "accepted", "syncing", "success", "failed"
FINAL_STATES = frozenset({SUCCESS, FAILED})
INTERRUPTED = "interrupted: the slave was stopped"
CANCELLED_BY_MASTER = "cancelled by the master"
KEEP_RECORDS = 1000
# Seconds a pull's start waits before it is reported (well under any SLAVE_START_TIMEOUT).
START_REPORT_DELAY = 0.5
# How long a finished pull lets its report go first: the bookkeeping after it (the manifest noted,
# old snapshots pruned) would otherwise take the interpreter from the report, which then reached the
# master 40-64 ms after the pull at 100,000 files (11-29 ms going first). A master that does not
# answer costs the next pull of the project this much at most; the report stays queued either way.
REPORT_FIRST_WAIT = 1.0
PROGRESS_INTERVAL = 10.0  # seconds between two progress reports of one pull (the PROGRESS_INTERVAL setting)
# What GET /api/v1/syncs/<run_id> shows of a record; the rest is for this slave alone.
PUBLIC_FIELDS = ("run_id", "project", "state", "catchup", "accepted_at", "started_at", "finished_at",
                 "exit_code", "error", "warning", "stats", "digest")
REPORT_FIELDS = ("run_id", "project", "state", "started_at", "finished_at", "exit_code", "error",
                 "warning", "stats", "digest")
_ORDER_MARKER = re.compile(r"^(\d+)-([a-z0-9][a-z0-9._-]*)$")
_RECORD_NAME = re.compile(r"^(\d+)-([a-z0-9][a-z0-9._-]*)\.json$")
# The master refuses longer texts in a report.
_MAX_TEXT = 4000


def rsync_source(user, host, port, project, snapshot=None):
    """The master's snapshot ``snapshot`` of ``project`` (or the module root), as this slave's rsync user."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    path = f"{project}/{snapshot}/" if snapshot else f"{project}/"
    return f"rsync://{user}@{host}:{port}/{path}"


# Order fields a master before sync methods and trace files did not send, with their meaning then.
_ORDER_DEFAULTS = {"publish": DELAY, "method": RSYNC, "stage1_profile": None, "trace": traces.NONE,
                   "snapshot": None, "digest": None, "changes": False, "change_list": None,
                   "upstream_name": None}


def _order_fields(order):
    """What a record keeps of its order, to pull it again after a restart."""
    return {"rsyncd_host": order["rsyncd_host"], "rsyncd_port": order["rsyncd_port"],
            "timeout": order["timeout"],
            **{name: order.get(name, default) for name, default in _ORDER_DEFAULTS.items()}}


def public_record(record):
    return {name: record.get(name) for name in PUBLIC_FIELDS}


def report_of(record):
    """The ReportSchema body that tells the master where ``record`` stands."""
    return {name: record.get(name) for name in REPORT_FIELDS}


def _iso(moment):
    return moment.astimezone(datetime.timezone.utc).isoformat()


def _failure(error):
    return RsyncResult(None, False, None, error, False, False, RsyncStats())


def _note_in_log(path, text):
    """Add a line of the slave's own (``# text``) to a run's log, before the rsync output that follows."""
    try:
        run_log = RunLog(path)
    except OSError as error:   # the rsync that follows says why, in the result
        log.warning("cannot write to the log %s: %s", path, error)
        return
    run_log.write(f"# {text}")
    run_log.close()


def _clip(text):
    return text if text is None or len(text) <= _MAX_TEXT else text[:_MAX_TEXT - 1] + "…"


class SyncRecords:
    """One JSON file per (run, project) this slave was ordered to pull."""

    def __init__(self, directory):
        self.directory = directory
        ensure_private_dir(directory)
        self._adopt_unkeyed_records()

    def create(self, order, accepted_at, enrollment=None):
        """Record a new order, taken under ``enrollment`` (Credentials.enrollment); returns (record, created).
        The same run of the same project comes back as it is."""
        record = {
            "run_id": order["run_id"], "project": order["project"], "state": ACCEPTED, "enrollment": enrollment,
            "catchup": order.get("catchup", False), "accepted_at": _iso(accepted_at),
            "started_at": None, "finished_at": None, "exit_code": None, "error": None,
            "warning": None, "stats": None,
            # Kept so that a pull run after a restart publishes the way the master asked.
            "order": _order_fields(order),
        }
        if create_json_exclusively(self._path(order["run_id"], order["project"]), record, mode=0o600):
            return record, True
        return self.get(order["run_id"], order["project"]), False

    def get(self, run_id, project=None):
        """The record of ``run_id`` of ``project``, or None; without ``project``, the newest of that run id."""
        if project is None:
            found = [r for r in (self._read(key) for key in self._keys() if key[0] == int(run_id)) if r]
            return max(found, key=lambda r: r.get("accepted_at") or "") if found else None
        return self._read((int(run_id), project))

    def save(self, record):
        write_json_atomically(self._path(record["run_id"], record["project"]), record, mode=0o600)

    def unfinished(self):
        """Records not yet success or failed, in the order they were accepted."""
        records = [r for r in (self._read(key) for key in self._keys())
                   if r is not None and r.get("state") not in FINAL_STATES]
        return sorted(records, key=lambda r: (r.get("accepted_at") or "", r["run_id"]))

    def newest_first(self):
        """Every readable record, newest run first."""
        return [record for record in (self._read(key) for key in reversed(self._keys()))
                if record is not None]

    def prune(self, keep=KEEP_RECORDS):
        """Delete finished records beyond the ``keep`` newest orders; returns how many went."""
        doomed = self._keys()[:-keep]
        removed = 0
        for key in doomed:
            record = self._read(key)
            if record is None or record.get("state") in FINAL_STATES:
                try:
                    os.unlink(self._path(*key))
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def _read(self, key):
        try:
            return read_json(self._path(*key))
        except (OSError, ValueError) as error:
            log.error("record of run %s (%s) is unreadable: %s", key[0], key[1], error)
            return None

    def _keys(self):
        """(run id, project) of every record, by run id."""
        keys = []
        for name in os.listdir(self.directory):
            match = _RECORD_NAME.match(name)
            if match:
                keys.append((int(match.group(1)), match.group(2)))
        return sorted(keys)

    def _adopt_unkeyed_records(self):
        # Earlier releases named a record by its run id alone.
        for name in os.listdir(self.directory):
            if not (name.endswith(".json") and name[:-5].isdigit()):
                continue
            path = os.path.join(self.directory, name)
            try:
                record = read_json(path)
                os.replace(path, self._path(record["run_id"], record["project"]))
            except (OSError, ValueError, TypeError, KeyError) as error:
                log.error("record %s is unreadable and stays as it is: %s", path, error)

    def _path(self, run_id, project):
        return os.path.join(self.directory, f"{int(run_id)}-{project}.json")


@dataclass(eq=False)
class _Pull:
    """One rsync of a project, answering every run id it absorbed; or, of ``kind`` REPAIR or WATCH, work
    of the slave's own on a published tree that answers no run (``run_ids`` empty)."""
    order: dict
    run_ids: list = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    cancelled_by_master: bool = False
    orders: dict = field(default_factory=dict)   # run id -> its own order, for ``drop``
    kind: str = "order"
    recheck: bool = False   # an order that took a watch's place: it looks at the tree first

    def __post_init__(self):
        self.orders.setdefault(self.order["run_id"], self.order)

    @property
    def project(self):
        return self.order["project"]

    def absorb(self, order):
        """Another order joins this pull, and every run id it holds gets the same result. The newest
        run's order is the one pulled, whatever came last: orders can cross on the way (a catch-up
        sent just before a new run's dispatch), and pulling the older one would take the tree back.
        A repair or a watch not started yet becomes that order's pull, which repairs the tree too; the
        watch's look for what changed while no slave ran (``recheck``) comes first in it."""
        if self.kind != ORDER:
            self.recheck = self.kind == WATCH
            self.kind, self.order, self.orders, self.run_ids = ORDER, order, {order["run_id"]: order}, [order["run_id"]]
            return
        if order["run_id"] > self.order["run_id"]:
            self.order = order
        self.orders[order["run_id"]] = order
        self.run_ids = sorted(self.run_ids + [order["run_id"]])

    def drop(self, run_id):
        """``run_id`` leaves the pull (the master cancelled it); when it was the newest, the newest of
        the others is pulled, by its own order (its snapshot and digest, not the cancelled run's)."""
        self.run_ids.remove(run_id)
        self.orders.pop(run_id, None)
        if self.run_ids and self.order["run_id"] == run_id:
            self.order = self.orders.get(self.run_ids[-1]) or dict(self.order, run_id=self.run_ids[-1])


# What a _Pull is: an order's pull; a pull of the published run again, to repair edits behind the
# slave's back; the watch of a published tree set up again after a start.
ORDER, REPAIR, WATCH = "order", "repair", "watch"


class _ReadyPulls:
    """The pulls waiting for a thread. An order's pull or a repair goes before every watch: after a start
    each published tree is looked at in full (``_watch_again``), minutes at 1,000 large trees, and an
    order must not wait behind them. Which kind a pull is counts when a thread takes it, as a watch that
    absorbed an order is that order's pull from then on. None (a thread's stop) comes last, so
    that every pull queued at a stop is still taken and let go."""

    def __init__(self):
        self._waiting = collections.deque()
        self._changed = threading.Condition()

    def put(self, pull):
        with self._changed:
            self._waiting.append(pull)
            self._changed.notify()

    def get(self):
        with self._changed:
            self._changed.wait_for(lambda: self._waiting)
            rank = [2 if pull is None else 1 if pull.kind == WATCH else 0 for pull in self._waiting]
            index = rank.index(min(rank))
            pull = self._waiting[index]
            del self._waiting[index]
            return pull


@dataclass(eq=False)
class _Slot:
    current: _Pull
    pending: _Pull | None = None


class SyncWorker:
    """Accepts orders, runs their pulls and keeps their records and reports."""

    def __init__(self, *, state_dir, public_dir, runner, records, outbox, credentials, clock,
                 max_concurrent, log_retention, site=None, program_runner=None,
                 progress_interval=PROGRESS_INTERVAL, verify_interval=3600.0, watch=None, repair_delay=0.0):
        self.public_dir = public_dir
        self.site = site   # a traces.Site: who this slave is in trace files
        self.runners = Runners(runner, program_runner or ProgramRunner())
        self.publisher = Publisher(public_dir, clock)
        self.runner = runner
        self.records = records
        self.outbox = outbox
        self.credentials = credentials   # () -> Credentials | None
        self.clock = clock
        self.max_concurrent = max_concurrent
        self.log_retention = log_retention
        self.progress_interval = progress_interval
        self.logs_root = os.path.join(state_dir, "logs")
        self.published = transfers.PublishedTrees(state_dir)
        # Seconds between two walks of a whole published tree; between them a changes-only pull
        # checks the paths it moved, every directory, and what the watch saw.
        self.verify_interval = verify_interval
        # Edits to a published tree between two walks that leave its directories' times alone. A tree
        # is watched from just after its pull's report until the next pull of the project starts.
        self.watch = watch if watch is not None else TreeWatch()
        self.watch.on_edit = self.saw_edit
        self._edit_lock = threading.Lock()
        # EditSchema's fields of the last edit seen, for the heartbeat; kept over a restart, as the
        # master shows it until a newer one comes.
        self._last_edit_path = os.path.join(state_dir, "last_edit.json")
        self._last_edit = self._read_last_edit()
        # Seconds an edited tree is left alone before it is pulled again (the run it holds), 0: it
        # waits for the project's next pull.
        self.repair_delay = repair_delay
        self.work_root = os.path.join(state_dir, "transfers")
        ensure_private_dir(self.work_root)
        self.orders_dir = os.path.join(state_dir, "orders")
        self.cancels_dir = os.path.join(state_dir, "cancels")
        self.repairs_dir = os.path.join(state_dir, "repairs")   # <project>.json: a running repair's rsync
        self._leader_lock_path = os.path.join(state_dir, "worker.lock")
        ensure_private_dir(self.orders_dir)
        ensure_private_dir(self.cancels_dir)
        ensure_private_dir(self.repairs_dir)
        self._leader_fd = None
        self._leader_pid = None
        self._lock = threading.Condition()
        self._slots = {}
        self._reporters = {}   # project -> the ProgressReporter of its running pull
        self._started_at = {}  # project -> when its running pull began, noted with rsync's pid
        self._in_flight = set()
        self._ready = _ReadyPulls()
        self._threads = []
        self._stopping = False

    # --- leadership -----------------------------------------------------

    @property
    def is_leader(self):
        """Whether pulls run in this process (a forked child does not inherit the role)."""
        return self._leader_pid == os.getpid()

    def claim(self):
        """Become the process that runs pulls, if none is; returns whether this one is it.

        On taking over, pulls cut short by a previous process end as failed and
        accepted orders are run.
        """
        if self.is_leader:
            return True
        if self._stopping:
            return False
        fd = os.open(self._leader_lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._leader_fd, self._leader_pid = fd, os.getpid()
        self._recover()
        return True

    def _recover(self):
        try:
            self.publisher.remove_leftovers()
        except OSError as error:
            log.error("cannot look for snapshots left by an unfinished pull: %s", error)
        for record in self.records.unfinished():
            if record["state"] == SYNCING:
                log.warning("run %s (%s) was cut short by a stop; reporting it as failed",
                            record["run_id"], record["project"])
                if record.get("pid"):
                    end_orphaned_rsync(record["pid"])  # a killed slave's rsync outlives it
                remove_partial_updates(os.path.join(self.public_dir, record["project"]))
                self._finish_records(record["project"], [record["run_id"]], FAILED,
                                     finished_at=_iso(self.clock.now()),
                                     error=INTERRUPTED, pid=None)
            else:
                self._submit(record)
        self._end_cut_short_repairs()
        self.take_queued()
        for project in self.published.projects():
            self._submit_own(project, WATCH, {"project": project, "run_id": 0})

    def saw_edit(self, project, path):
        """Note an edit of ``project``'s published tree behind this slave's back (the first of a watch, or
        what a pull or a start found) as the last one, unless it is the one noted and not yet repaired."""
        with self._edit_lock:
            known = self._last_edit
            if known is None or known["project"] != project or known["repaired_at"] is not None:
                self._keep_last_edit({"project": project, "path": path, "seen_at": _iso(self.clock.now()),
                                      "repaired_at": None})

    def _saw_repaired(self, project):
        with self._edit_lock:
            if self._last_edit is not None and self._last_edit["project"] == project \
                    and self._last_edit["repaired_at"] is None:
                self._keep_last_edit(dict(self._last_edit, repaired_at=_iso(self.clock.now())))

    def _keep_last_edit(self, edit):
        # Called with the edit lock held; edits are rare, and a write is a few hundred bytes.
        self._last_edit = edit
        try:
            write_json_atomically(self._last_edit_path, edit)
        except OSError as error:   # the heartbeat still says it until a restart
            log.error("cannot note the last edit of %s's tree: %s", edit["project"], error)

    def _read_last_edit(self):
        try:
            edit = read_json(self._last_edit_path)
        except (OSError, ValueError) as error:
            log.error("the last edit noted in %s is unreadable, and is not reported: %s", self._last_edit_path, error)
            return None
        problems = edit_schema.validate(edit) if isinstance(edit, dict) else edit is not None and "not an object"
        if problems:
            log.error("the last edit noted in %s is not one (%s), and is not reported", self._last_edit_path, problems)
            return None
        return edit

    def last_edit(self):
        """The last edit seen behind this slave's back (EditSchema's fields), or None: for the heartbeat."""
        with self._edit_lock:
            return dict(self._last_edit) if self._last_edit is not None else None

    def _end_cut_short_repairs(self):
        """A repair's rsync that a killed slave left behind is ended, and what it half did cleaned up; the
        look at the tree after the start finds what it changed, and the tree is repaired again."""
        for name in os.listdir(self.repairs_dir):
            if name.startswith(".") or not name.endswith(".json"):
                continue   # a marker half written
            marker = os.path.join(self.repairs_dir, name)
            try:
                pid = read_json(marker).get("pid")
            except (OSError, ValueError, AttributeError):
                pid = None
            project = name[:-len(".json")]
            log.warning("the repair of %s was cut short by a stop", project)
            if isinstance(pid, int):
                end_orphaned_rsync(pid)
            remove_partial_updates(os.path.join(self.public_dir, project))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(marker)

    def repair_edited(self):
        """Pull again each published tree that was edited behind this slave's back and then left alone
        for ``repair_delay`` seconds, from the run's snapshot it holds. Returns the projects sent."""
        if not self.is_leader or self.repair_delay <= 0:
            return []
        sent = []
        for project in self.watch.due(self.repair_delay):
            order = self._held_order(project)
            if order is None:
                log.warning("%s: its edited tree cannot be pulled again now (no order of the run it holds "
                            "is noted); the next pull of it pulls in full", project)
            elif self._submit_own(project, REPAIR, order):
                log.info("%s: pulling run %s again to repair its tree, edited outside mirror-sync",
                         project, order["run_id"])
                sent.append(project)
        return sent

    def _held_order(self, project):
        """The order of the run whose tree ``project`` publishes, as this slave verified it, or None."""
        enrollment = self._enrollment()
        held = self.published.get(project)
        mark = self.published.newest(project, enrollment) if enrollment is not None else None
        if not held or mark is None or not mark["ok"] or mark["digest"] != held.get("digest"):
            return None
        order = held.get("order")
        if not isinstance(order, dict):   # noted by a release before repairs: the run's record has it
            record = self.records.get(mark["run_id"], project)
            order = record.get("order") if record is not None and record.get("state") == SUCCESS else None
            if not isinstance(order, dict):
                return None
        return dict(order, project=project, run_id=mark["run_id"], catchup=False, changes=False, change_list=None)

    def _submit_own(self, project, kind, order):
        """Queue work of the slave's own (REPAIR, WATCH) on ``project``'s tree, unless a pull of it is
        running or waiting (which does it anyway) or the slave stops; returns whether it was queued."""
        with self._lock:
            if self._stopping or project in self._slots:
                return False
            pull = _Pull(order, [], kind=kind)
            self._slots[project] = _Slot(pull)
            self._ready.put(pull)
            self._start_threads()
            return True

    # --- orders ---------------------------------------------------------

    def accept(self, order):
        """Take an order (an OrderSchema dict); returns its record. The same run of the same project twice
        is pulled once; the same run id of another project is another order.

        Raises Conflict when the order was taken before but its record is unreadable.
        """
        enrollment = self._enrollment()
        record, created = self.records.create(order, self.clock.now(), enrollment)
        if record is None:
            raise Conflict(f"Run {order['run_id']} of {order['project']!r} was ordered before but its record "
                           "is unreadable.")
        # A record of another enrollment is of a master before this one's database (a rebuilt master
        # hands run ids out again): its result says nothing of this order. Records of releases before
        # enrollments were noted count as this one's.
        earlier = record.get("enrollment") not in (None, enrollment) and record["state"] in FINAL_STATES
        if not created and not earlier:
            if record["state"] == SUCCESS:
                # The master asks again, so it has not counted the result: say it once more.
                self.outbox.put(report_of(record))
                return record
            if record["state"] != FAILED:
                return record  # accepted or pulling: that pull answers this order too
        if not created:
            # A catch-up of a run whose pull failed or was cut short, or a new master's order: pull it (again).
            record = self._update(order["project"], order["run_id"], state=ACCEPTED, enrollment=enrollment,
                                  catchup=order.get("catchup", False), accepted_at=_iso(self.clock.now()),
                                  started_at=None, finished_at=None, exit_code=None, error=None, warning=None,
                                  stats=None, pid=None, digest=None,
                                  order=_order_fields(order))
            if record is None:
                raise Conflict(f"Run {order['run_id']} was ordered before but its record is unreadable.")
            log.info("accepted run %s of %s again: %s", order["run_id"], order["project"],
                     "the run id was ordered by this slave's earlier enrollment" if earlier else "its last pull failed")
        else:
            log.info("accepted run %s of %s", order["run_id"], order["project"])
        if self.is_leader:
            self._submit(record)
        else:
            # The process holding worker.lock picks it up from here.
            open(os.path.join(self.orders_dir, f"{int(order['run_id'])}-{order['project']}"), "a").close()
        return record

    def cancel(self, project, run_id):
        """Stop pulling ``run_id`` of ``project``: an order still waiting is dropped, a running pull that
        answers no other run is ended; the record ends failed ("cancelled by the master").

        Returns the record; raises NotFound when this slave never had the order.
        """
        record = self.records.get(run_id, project)
        if record is None:
            raise NotFound(f"This slave has no record of run {run_id} of {project!r}.")
        if record["state"] in FINAL_STATES:
            return record
        if not self.is_leader:
            # The process holding worker.lock stops it from here.
            open(os.path.join(self.cancels_dir, f"{int(run_id)}-{project}"), "a").close()
            return record
        self._cancel_here(project, run_id)
        return self.records.get(run_id, project) or record

    def _cancel_here(self, project, run_id):
        finish_now = True
        with self._lock:
            slot = self._slots.get(project)
            for pull in (slot.current, slot.pending) if slot is not None else ():
                if pull is None or run_id not in pull.run_ids:
                    continue
                if pull is slot.current and pull.started and pull.run_ids == [run_id]:
                    pull.cancelled_by_master = True
                    pull.cancel.set()
                    finish_now = False  # the pull records its end
                    continue
                pull.drop(run_id)
                self._in_flight.discard((project, run_id))
                if not pull.run_ids and pull is slot.pending:
                    slot.pending = None
        record = self.records.get(run_id, project)
        if finish_now and record is not None and record["state"] not in FINAL_STATES:
            self._finish_records(project, [run_id], FAILED, finished_at=_iso(self.clock.now()),
                                 error=CANCELLED_BY_MASTER, pid=None)
        log.info("run %s of %s cancelled by the master", run_id, project)

    def take_queued(self):
        """Run the orders and cancels other processes accepted (a no-op unless this process runs pulls)."""
        if not self.is_leader:
            return
        self._take_cancels()
        try:
            names = [n for n in os.listdir(self.orders_dir) if _ORDER_MARKER.match(n)]
        except FileNotFoundError:
            return
        for name in sorted(names, key=lambda n: int(_ORDER_MARKER.match(n).group(1))):
            run_id, project = _ORDER_MARKER.match(name).groups()
            record = self.records.get(int(run_id), project)
            if record is not None and record.get("state") == ACCEPTED:
                self._submit(record)
            try:
                os.unlink(os.path.join(self.orders_dir, name))
            except FileNotFoundError:
                pass

    def _take_cancels(self):
        try:
            names = [n for n in os.listdir(self.cancels_dir) if _ORDER_MARKER.match(n)]
        except FileNotFoundError:
            return
        for name in names:
            run_id, project = _ORDER_MARKER.match(name).groups()
            self._cancel_here(project, int(run_id))
            try:
                os.unlink(os.path.join(self.cancels_dir, name))
            except FileNotFoundError:
                pass

    def _submit(self, record):
        order = {"run_id": record["run_id"], "project": record["project"],
                 "catchup": record.get("catchup", False), **record["order"]}
        with self._lock:
            key = (order["project"], order["run_id"])
            if self._stopping or key in self._in_flight:
                return
            self._in_flight.add(key)
            slot = self._slots.get(order["project"])
            if slot is None:
                pull = _Pull(order, [order["run_id"]])
                self._slots[order["project"]] = _Slot(pull)
                self._ready.put(pull)
                self._start_threads()
            elif not slot.current.started:
                slot.current.absorb(order)
            elif slot.pending is None:
                slot.pending = _Pull(order, [order["run_id"]])
            else:
                slot.pending.absorb(order)

    def syncing_projects(self):
        """Projects being pulled right now."""
        with self._lock:
            return sorted(name for name, slot in self._slots.items() if slot.current.started)

    def wait_idle(self, timeout):
        """Wait until no pull is running or waiting; returns whether that happened in time."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._slots, timeout)

    def stop(self, timeout=15.0):
        """Cancel running pulls (they end as failed, "interrupted"), wait for them, give up the role.

        Orders not started yet stay accepted on disk and run after the next start.
        """
        with self._lock:
            self._stopping = True
            for slot in self._slots.values():
                if slot.current.started:
                    slot.current.cancel.set()
            threads, self._threads = self._threads, []
        for _ in threads:
            self._ready.put(None)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.watch.close()
        if self._leader_fd is not None and self.is_leader:
            os.close(self._leader_fd)
        self._leader_fd = self._leader_pid = None

    # --- pulls ----------------------------------------------------------

    def _start_threads(self):
        # Called with the lock held; the pool grows to its size on the first order.
        while len(self._threads) < self.max_concurrent:
            thread = threading.Thread(target=self._work, name=f"sync-{len(self._threads) + 1}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _work(self):
        while True:
            pull = self._ready.get()
            if pull is None:
                return
            try:
                self._run(pull)
            except Exception:
                log.exception("the pull of %s stopped on an unexpected error", pull.project)
            finally:
                self._done(pull)

    def _run(self, pull):
        with self._lock:
            if self._stopping or not (pull.run_ids or pull.kind != ORDER):
                return  # stopping, or every run it was for was cancelled
            pull.started = True
            run_ids, order, kind = list(pull.run_ids), pull.order, pull.kind
        project = order["project"]
        if kind == WATCH or pull.recheck:
            self._watch_again(project)   # what it finds, an order's pull repairs
        if kind == WATCH:
            return
        if kind == REPAIR:
            return self._repair(pull, order)
        enrollment = self._enrollment()
        superseded = self._superseded(order, enrollment)
        if superseded is not None:
            self._finish_records(project, run_ids, **superseded)
            return
        started_at = _iso(self.clock.now())
        log.info("pulling %s for run %s", project, ", ".join(map(str, run_ids)))
        with self._lock:
            self._started_at[project] = started_at
        for run_id in run_ids:
            record = self.records.get(run_id, project)
            if record is None:
                log.error("record of run %s of %s is gone; its report is skipped", run_id, project)
                continue
            # The record moves to syncing with rsync's pid (``_note_pid``), in one write to the disk
            # instead of two; a slave that dies before rsync starts pulls the order again when it
            # comes back. A pull done within the delay is reported once, as done: the master (and
            # the slaves its fan-out still orders) are spared a report per slave at the busiest moment.
            self.outbox.put(report_of(dict(record, state=SYNCING, started_at=started_at)), delay=START_REPORT_DELAY)
        reporter = ProgressReporter(lambda progress: self._report_progress(pull, progress),
                                    self.progress_interval, self.clock.monotonic)
        with self._lock:
            self._reporters[project] = reporter
        try:
            result, previous, digest, remember = self._pull(order, pull.cancel, run_ids)
        finally:
            with self._lock:
                self._reporters.pop(project, None)
                self._started_at.pop(project, None)
            reporter.close()  # before the final report: no progress report comes after it
        error = result.error
        if result.cancelled:
            error = CANCELLED_BY_MASTER if pull.cancelled_by_master and not self._stopping else INTERRUPTED
        with self._lock:
            run_ids = list(pull.run_ids)  # less any run cancelled meanwhile
        state = SUCCESS if result.ok else FAILED
        self._finish_records(project, run_ids, state, started_at=started_at, finished_at=_iso(self.clock.now()),
                             exit_code=result.exit_code,
                             error=_clip(error), warning=_clip(result.warning), stats=result.stats.to_dict(),
                             pid=None, digest=digest)
        self.outbox.flush(REPORT_FIRST_WAIT)
        self._note_published(project, enrollment, order, result, digest, remember)
        if result.ok:
            log.info("pulled %s for run %s", project, order["run_id"])
        else:
            log.warning("pull of %s for run %s failed: %s", project, order["run_id"], error)
        if result.ok:
            # After the report: deleting a whole old tree can take a while.
            self._prune(project, previous)
        self.records.prune(KEEP_RECORDS)

    def _watch_again(self, project):
        """After a start, watch ``project``'s published tree again. What changed while no slave watched it
        counts as an edit: each entry whose ctime is later than the slave left the tree, or, for a tree
        noted by a release before that was kept, each directory not as it was left."""
        entries = self.published.manifest(project)
        held = self.published.get(project) or {}
        if entries is None:
            return
        tree = self.publisher.tree_path(project)
        if not self.watch.arm(project, tree, digests.directories(entries)):
            return
        since = held.get("settled_at_ns")
        touched = transfers.changed_since(tree, since, watch_module.KEPT_PATHS + 1) if isinstance(since, int) \
            else transfers.touched_directories(tree, entries)
        if touched:
            log.warning("%s: its published tree was changed while this slave was not running, first at: %s",
                        project, ", ".join(map(repr, touched[:5])))
            self.watch.note(project, touched)
            self.saw_edit(project, touched[0])

    def _repair_marker(self, project):
        return os.path.join(self.repairs_dir, f"{project}.json")

    def _repair(self, pull, order):
        project = order["project"]
        enrollment = self._enrollment()
        _note_in_log(log_path(self.logs_root, project, order["run_id"]),
                     f"{_iso(self.clock.now())}: repairing the published tree, edited outside mirror-sync: "
                     f"pulling run {order['run_id']} again")
        try:
            result, previous, digest, remember = self._pull(order, pull.cancel)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._repair_marker(project))
        self._note_published(project, enrollment, order, result, digest, remember)
        if not result.ok:
            log.warning("%s: its tree could not be repaired from run %s: %s; the next pull of it pulls in full",
                        project, order["run_id"], result.error)
            return
        log.warning("%s: repaired: its tree is run %s's again", project, order["run_id"])
        self._prune(project, previous)

    def _note_published(self, project, enrollment, order, result, digest, remember):
        """After a pull's report: how it ended, and (``remember``) the tree it published, its watch armed."""
        if enrollment is not None:
            try:
                self.published.note_pull(project, enrollment, order["run_id"], result.ok, digest)
            except OSError as error:   # an order of an older run that comes late is pulled after all
                log.error("cannot note that %s pulled run %s: %s", project, order["run_id"], error)
        if remember is not None:
            try:
                remember()
            except OSError as error:   # the next pull is a full one: nothing is lost
                log.error("what %s published for run %s cannot be noted: %s", project, order["run_id"], error)
                self.published.forget(project)

    def _prune(self, project, previous):
        if self.publisher.prune(project, previous):
            try:
                self.published.settle(project)
            except OSError as error:   # a file the old snapshot shared may count as edited after a restart
                log.error("cannot note that %s's tree is settled: %s", project, error)

    def _enrollment(self):
        """This slave's present enrollment (Credentials.enrollment), or None before it enrolled."""
        credentials = self.credentials()
        return credentials.enrollment if credentials is not None else None

    def _superseded(self, order, enrollment):
        """How the runs ``order`` answers end unpulled when this slave published a newer run of the
        project already, else None. Orders cross on the way: a catch-up of run 4 sent as run 5's pull
        ended can come after run 5's order, and pulling it would take the tree back. The master counts
        a success with a newer run's digest; its catch-up brings the newest tree where a pull since failed."""
        mark = self.published.newest(order["project"], enrollment) if enrollment is not None else None
        if mark is None or mark["run_id"] <= order["run_id"]:
            return None
        stamp = _iso(self.clock.now())
        newer = f"not pulled: this slave already published run {mark['run_id']}, which is newer"
        log.info("run %s of %s %s", order["run_id"], order["project"], newer)
        if mark["ok"]:
            return dict(state=SUCCESS, started_at=stamp, finished_at=stamp, exit_code=None, error=None,
                        warning=f"{newer}; it keeps that tree", stats=None, pid=None, digest=mark["digest"])
        return dict(state=FAILED, started_at=stamp, finished_at=stamp, exit_code=None, stats=None, pid=None,
                    digest=None, warning=None,
                    error=f"{newer}, and a pull since failed; the master's catch-up sends the newest tree")

    def _pull(self, order, cancel, run_ids=()):
        """Pull ``order``'s tree, publish and verify it; returns (RsyncResult, the snapshot kept as
        previous tree, the published tree's digest, a function that notes the tree as this slave's
        published one, or None). That is written after the report: saving a manifest whole costs a few
        hundredths of a second at 100,000 entries (a changes-only pull appends its edits instead), and
        the next pull of the project waits for it anyway."""
        credentials = self.credentials()
        if credentials is None:
            return _failure("this slave is not enrolled"), None, None, None
        project = order["project"]
        seen = self.watch.take(project)   # the pull changes the tree: what happened to it before counts
        try:
            publication = self.publisher.prepare(project, order["run_id"], order.get("publish", DELAY))
        except (PublishError, OSError) as error:
            return _failure(f"the tree cannot be published: {error}"), None, None, None
        logs = log_path(self.logs_root, project, order["run_id"])
        trace = order.get("trace") == traces.DEBIAN and self.site is not None

        def source_of(path):
            return rsync_source(credentials.rsync_user, order["rsyncd_host"], order["rsyncd_port"], project, path)
        work_dir = tempfile.mkdtemp(prefix=f"{project}-", dir=self.work_root)
        started = self.clock.now()
        tree = self.publisher.tree_path(project)
        held_entries, tampered = None, None
        try:
            plan = None
            # A change list needs the published tree as its base (in place, or the live tree a
            # snapshot starts from), and a plain rsync: two stages order what they bring, which
            # one list of paths cannot.
            if (order.get("method") or RSYNC) == RSYNC and not trace and (
                    publication.staged is None or publication.basis is not None):
                plan = transfers.plan_changes(self.runner, order, source_of, credentials.rsync_password,
                                              self.published, work_dir, logs)
            edited = seen is not None and seen.changed
            if plan is not None:
                held_entries = self.published.manifest(project)
                if held_entries is not None and (edited or transfers.touched_since(tree, held_entries)):
                    tampered = transfers.changed_behind_our_back(tree, held_entries) or \
                        (list(seen.paths)[:5] if edited else ["none found"])
                    plan, held_entries = None, None
                elif transfers.whole_files(held_entries, plan.changed):
                    plan = dataclasses.replace(plan, whole_file=True)
            elif edited:
                tampered = list(seen.paths)[:5] or ["none found"]
            if tampered:
                self.saw_edit(project, "." if tampered == ["none found"] else tampered[0])
                tampered = (f"the published tree was changed outside mirror-sync, first at: "
                            f"{', '.join(map(repr, tampered))}; pulled in full")
                log.warning("%s: %s", project, tampered)
                _note_in_log(logs, tampered)
            if plan is None and edited:
                publication = self._bring_edited_again(project, tree, publication, seen)
            result, kept = None, False
            if plan is not None and publication.staged is not None:
                if plan.empty:
                    # Nothing changed: the live snapshot stays public, and no copy of it is made.
                    self.publisher.abort(publication)
                    publication, kept = dataclasses.replace(publication, staged=None, destination=tree), True
                else:
                    try:
                        publication = self.publisher.fill(publication, plan.changed)
                    except OSError as error:
                        result = _failure(f"the tree cannot be published: {error}")
            if result is None and plan is not None:
                result = self._transfer(order, publication, plan, source_of, credentials, cancel, run_ids, logs)
            elif result is None:
                result = self._pull_with_method(order, publication, source_of, credentials, cancel, run_ids, logs)
            if result.ok and trace:
                result = self._write_trace(order, publication.destination, started, result)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
            prune_logs(self.logs_root, project, self.log_retention)
        if not result.ok:
            self.publisher.abort(publication)
            self.published.forget(project)
            return result, None, None, None
        try:
            previous = KEEP_SNAPSHOTS if kept else self.publisher.commit(publication)
        except (PublishError, OSError) as error:
            log.error("the tree of %s for run %s could not be published: %s", project, order["run_id"], error)
            self.publisher.abort(publication)
            self.published.forget(project)
            return dataclasses.replace(result, ok=False, warning=None,
                                       error=f"the tree could not be published: {error}"), None, None, None
        if trace:
            # This slave's own trace files make its tree differ from the master's on purpose:
            # the digest is not compared (the master takes a report without one).
            self.published.forget(project)
            return result, previous, None, None
        if tampered:
            result = dataclasses.replace(result, warning="; ".join(filter(None, (result.warning, tampered))))
        now = self.clock.now().timestamp()
        walked_at = (self.published.get(project) or {}).get("walked_at")
        walk_due = walked_at is None or now - walked_at >= self.verify_interval
        entries, walked, edits = None, None, None
        if plan is not None and plan.empty and plan.base_digest == order.get("digest"):
            # Nothing changed: nothing to walk, nor to save.
            digest, mismatch, entries, edits = plan.base_digest, None, held_entries, []
        else:
            spliced = transfers.verify_changes(tree, order, plan, held_entries) \
                if plan is not None and not walk_due else None
            if spliced is not None:
                (entries, edits), digest, mismatch = spliced, order["digest"], None
                log.info("run %s of %s: verified by the paths it moved, no walk", order["run_id"], project)
            else:
                digest, mismatch, entries = transfers.verify(
                    tree, order,
                    transfers.manifest_fetcher(self.runner, order, source_of, credentials.rsync_password, logs))
                walked = now
        if mismatch:
            self.published.forget(project)  # the next order pulls in full, which repairs the tree
            return dataclasses.replace(result, ok=False, warning=None, error=mismatch), previous, digest, None
        self._saw_repaired(project)   # the tree is the run's: an edit still open (a repair failed since) is gone

        def remember():
            if entries is not None:   # 10 ms for the 1,000 directories of 100,000 files: after the report
                self.watch.arm(project, tree, digests.directories(entries))
            self.published.remember(project, order.get("snapshot"), digest, entries, walked_at=walked,
                                    base=held_entries, edits=edits,
                                    order=dict(_order_fields(order), changes=False, change_list=None))
        return result, previous, digest, remember

    def _bring_edited_again(self, project, tree, publication, seen):
        """A full pull after edits behind this slave's back would keep a file rewritten with its size and
        time put back (rsync's quick check). So the edited files' times are moved, and the pull brings
        them again; when the edits are not all known, every file's content is compared (--checksum,
        which reads the whole tree on both ends)."""
        if seen.complete:
            transfers.distrust(tree, seen.paths)
            return publication
        log.warning("%s: more of its tree was edited than could be noted: this pull compares every file's "
                    "content (--checksum)", project)
        return dataclasses.replace(publication, options=publication.options + ("--checksum",))

    def _pull_with_method(self, order, publication, source_of, credentials, cancel, run_ids, logs):
        """A full pull of the run's snapshot with the project's method (rsync or two stages)."""
        project = order["project"]
        trace = order.get("trace") == traces.DEBIAN and self.site is not None
        spec = MethodSpec(
            method=order.get("method") or RSYNC, stage1_profile=order.get("stage1_profile"),
            source=source_of(order.get("snapshot")), options=publication.options,
            password=credentials.rsync_password, timeout=order["timeout"],
            protect=traces.protected_paths(self.site.name) if trace else (),
        )
        try:
            return method_for(spec, self.runners).run(
                publication.destination, logs, cancel=cancel, on_spawn=lambda pid: self._note_pid(project, run_ids, pid),
                on_progress=lambda progress: self._note_progress(project, progress))
        except Exception as error:
            log.exception("rsync for run %s could not run", order["run_id"])
            return _failure(f"the pull could not run: {error}")

    def _transfer(self, order, publication, plan, source_of, credentials, cancel, run_ids, logs):
        """The rsync of the run's tree: the change list's paths only with a plan, else everything."""
        project = order["project"]
        if plan is not None and plan.empty:
            return RsyncResult(0, True, None, None, False, False, RsyncStats(files_transferred=0))
        options = publication.options + (transfers.plan_options(plan) if plan is not None else ())
        # A change list's deletions are applied after the transfer (``apply_deletions``): rsync deletes
        # nothing itself (and, not recursing, would have nothing to compare).
        job = RsyncJob(source=source_of(order.get("snapshot")), destination=publication.destination,
                       options=options, password=credentials.rsync_password, timeout=order["timeout"],
                       delete=plan is None)
        try:
            result = self.runner.run(job, logs, cancel=cancel, on_spawn=lambda pid: self._note_pid(project, run_ids, pid),
                                     on_progress=lambda progress: self._note_progress(project, progress))
        except Exception as error:
            log.exception("rsync for run %s could not run", order["run_id"])
            return _failure(f"the pull could not run: {error}")
        if result.ok and plan is not None:
            deleted = transfers.apply_deletions(publication.destination, plan)
            result.stats.files_deleted = deleted
            log.info("run %s of %s: %d paths changed, %d deleted (change list)", order["run_id"], project,
                     len(plan.changed), deleted)
        return result

    def _write_trace(self, order, tree, started, result):
        """This slave's trace, written into the tree about to go public; a failure is a warning."""
        pull = traces.Pull(started=started, finished=self.clock.now(),
                           upstream=order.get("upstream_name") or order["rsyncd_host"], trigger="master",
                           bytes_received=result.stats.bytes_received, stages=result.stages)
        try:
            traces.write_traces(tree, self.site, pull)
        except OSError as error:
            log.error("the trace files of %s could not be written: %s", order["project"], error)
            note = f"trace files not written: {error.strerror or error}"
            return result.replace(warning="; ".join(w for w in (result.warning, note) if w))
        return result

    def _note_pid(self, project, run_ids, pid):
        """Remember rsync's process group, so a restart after a crash can end it; the first one
        moves the records to syncing."""
        if not run_ids:   # a repair's: no record holds it
            write_json_atomically(self._repair_marker(project), {"pid": pid}, mode=0o600)
            return
        with self._lock:
            started_at = self._started_at.get(project)
        for run_id in run_ids:
            record = self.records.get(run_id, project)
            if record is None:
                continue
            record["pid"] = pid
            if record["state"] == ACCEPTED:
                record.update(state=SYNCING, started_at=started_at)
            self.records.save(record)

    def _note_progress(self, project, progress):
        """rsync's progress, from the runner's output thread: the reporter passes some of it on."""
        with self._lock:
            reporter = self._reporters.get(project)
        if reporter is not None:
            reporter(progress)

    def _report_progress(self, pull, progress):
        """Tell the master how far ``pull`` has come, for every run it answers that is still pulling."""
        progress = {name: value for name, value in progress.items() if name in progress_schema.fields}
        with self._lock:
            run_ids = list(pull.run_ids)  # less any run cancelled meanwhile
        for run_id in run_ids:
            record = self.records.get(run_id, pull.project)
            if record is not None and record["state"] == SYNCING:
                try:
                    self.outbox.put_progress(dict(report_of(record), progress=progress))
                except OSError as error:  # a nicety: the pull goes on, the next one may land
                    log.warning("the progress of run %s of %s could not be queued: %s", run_id, pull.project, error)

    def _finish_records(self, project, run_ids, state, **outcome):
        for run_id in run_ids:
            record = self._update(project, run_id, state=state, **outcome)
            if record is not None:
                self.outbox.put(report_of(record))

    def _update(self, project, run_id, **changes):
        record = self.records.get(run_id, project)
        if record is None:
            log.error("record of run %s of %s is gone; its report is skipped", run_id, project)
            return None
        record.update(changes)
        if record["state"] in (SUCCESS, FAILED) and (record.get("order") or {}).get("change_list"):
            record["order"]["change_list"] = None  # only a pull uses it; the record stays small
        self.records.save(record)
        return record

    def _done(self, pull):
        with self._lock:
            self._in_flight.difference_update((pull.project, r) for r in pull.run_ids)
            slot = self._slots[pull.project]
            if slot.pending is not None and not self._stopping:
                slot.current, slot.pending = slot.pending, None
                self._ready.put(slot.current)
            else:
                if slot.pending is not None:
                    self._in_flight.difference_update((pull.project, r) for r in slot.pending.run_ids)
                del self._slots[pull.project]
            self._lock.notify_all()
