"""The scheduler process: timers from the database, and the executor that runs syncs.

``python -m master.scheduler`` runs exactly one of these per deployment next
to the API workers; ``python -m master`` runs one inside itself. A lock in
DATA_DIR refuses a second scheduler on the same data.
"""

import datetime
import fcntl
import logging
import os
import signal
import sys
import threading
import time

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from common.errors import ConfigError
from common.states import Trigger
from master.db import db
from master.paths import state_dir
from master.clocksteps import ClockStepWatch
from master.executor import Executor
from master.models import Project
from master.schedules import parse_crontab
from master.wakeups import WakeupListener
from master import rsyncd
from master.services import distribution, runs, slaves, snapshots, throttle

log = logging.getLogger(__name__)


class SchedulerLock:
    """An exclusive lock file; raises ConfigError when another scheduler holds it."""

    def __init__(self, data_dir):
        self.path = os.path.join(state_dir(data_dir), "scheduler.lock")
        self._file = None

    def acquire(self):
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise ConfigError(f"another scheduler (pid {holder}) already runs on DATA_DIR; "
                              "run exactly one per deployment") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self):
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class ScheduleKeeper:
    """Keeps one APScheduler cron job per enabled, scheduled project, in step with the database."""

    def __init__(self, app, on_queued=None, wall=time.time):
        self.app = app
        self.on_queued = on_queued
        self.clock_watch = ClockStepWatch(self.realign, wall=wall)
        self.timezone = "UTC"
        self.scheduler = BackgroundScheduler(timezone=self.timezone)
        self._schedules = {}   # project id -> (crontab, splay) it is scheduled with
        # Timers that fired and wait to be queued; whoever holds _batch_lock queues them all.
        self._due = set()
        self._due_lock = threading.Lock()
        self._batch_lock = threading.Lock()
        self._due_event = threading.Event()
        self._stopping = threading.Event()
        self._flusher = None

    def start(self, paused=False):
        self._flusher = threading.Thread(target=self._flush_loop, name="schedule-flusher", daemon=True)
        self._flusher.start()
        self.scheduler.start(paused=paused)
        self.scheduler.add_job(self.reconcile, "interval", id="reconcile",
                               seconds=self.app.config["RECONCILE_INTERVAL"],
                               max_instances=1, coalesce=True)
        self.reconcile()
        self.clock_watch.start()

    def stop(self):
        self.clock_watch.stop()
        self.scheduler.shutdown(wait=False)
        self._stopping.set()
        self._due_event.set()

    def scheduled(self):
        """Project id -> next fire time of its cron job."""
        return {int(job.id.split("-", 1)[1]): job.next_run_time
                for job in self.scheduler.get_jobs() if job.id.startswith("project-")}

    def realign(self, step):
        """After the wall clock stepped back, every timer is due at its next time from now, not from
        before the step (when it stepped ahead, APScheduler runs what became due, as after a pause)."""
        if step >= 0:
            return
        now = datetime.datetime.fromtimestamp(self.clock_watch.wall(), datetime.timezone.utc)
        for job in self.scheduler.get_jobs():
            if job.next_run_time is None:
                continue  # paused
            if isinstance(job.trigger, IntervalTrigger):
                next_run = now + job.trigger.interval  # its grid was laid out on the old time
            else:
                next_run = job.trigger.get_next_fire_time(None, now)
            if next_run is not None and next_run < job.next_run_time:
                job.modify(next_run_time=next_run)

    def reconcile(self):
        """Add, change and drop cron jobs so they match the projects table."""
        try:
            with self.app.app_context():
                rows = db.session.execute(
                    sa.select(Project.id, Project.schedule, Project.splay).where(
                        Project.enabled.is_(True), Project.schedule.is_not(None))).all()
        except Exception:
            log.exception("scheduler: reading projects failed; keeping the current timers")
            return
        wanted = {row.id: (row.schedule, row.splay) for row in rows}
        for project_id in set(self._schedules) - set(wanted):
            self.scheduler.remove_job(f"project-{project_id}")
            del self._schedules[project_id]
            log.info("scheduler: project %s unscheduled", project_id)
        for project_id, (schedule, splay) in wanted.items():
            if self._schedules.get(project_id) == (schedule, splay):
                continue
            try:
                trigger = parse_crontab(schedule, self.timezone, splay)
            except ValueError as error:  # only possible if the row was written around the API
                log.error("scheduler: project %s has a bad schedule %r: %s", project_id, schedule, error)
                continue
            self.scheduler.add_job(self._timer_fired, trigger, args=[project_id], id=f"project-{project_id}",
                                   replace_existing=True, max_instances=1, coalesce=True,
                                   misfire_grace_time=300)
            self._schedules[project_id] = (schedule, splay)
            log.info("scheduler: project %s scheduled %r (splay %s s)", project_id, schedule, splay)

    def fire(self, project_id):
        """Queue a scheduled run of ``project_id`` now, with any other timer that fired meanwhile."""
        with self._due_lock:
            self._due.add(project_id)
        self.flush()

    def _timer_fired(self, project_id):
        # APScheduler's threads only note the project: the flusher queues a burst in one batch.
        with self._due_lock:
            self._due.add(project_id)
        self._due_event.set()

    def flush(self):
        """Queue every project whose timer fired and is not queued yet, in one transaction."""
        with self._batch_lock:
            with self._due_lock:
                batch, self._due = self._due, set()
            if not batch:
                return 0
            with self.app.app_context():
                created = runs.request_scheduled_syncs(batch, Trigger.SCHEDULE)
        if created and self.on_queued:
            self.on_queued()
        return created

    def _flush_loop(self):
        while not self._stopping.is_set():
            self._due_event.wait()
            self._due_event.clear()
            try:
                self.flush()
            except Exception:
                log.exception("scheduler: queueing scheduled runs failed; they wait for their next time")


def sweep_distribution(app):
    """Time out silent slaves, end complete runs, send catch-up orders, forget old nonces."""
    try:
        with app.app_context():
            distribution.expire_overdue_entries()
            distribution.catch_up_slaves()
            snapshots.prune_all()
            slaves.purge_nonces()
            throttle.purge_expired()
    except Exception:
        log.exception("distribution sweep failed; retrying at the next interval")


def render_rsyncd_config(app):
    try:
        with app.app_context():
            rsyncd.write_config()
    except Exception:
        log.exception("rendering the rsync daemon configuration failed; keeping the old one")


class SchedulerService:
    """Lock, recovery, timers, executor and distribution sweeps together; what both entry points run."""

    def __init__(self, app):
        self.app = app
        self.lock = SchedulerLock(app.config["DATA_DIR"])
        self.executor = Executor(app)
        self.keeper = ScheduleKeeper(app, on_queued=self.executor.wake)
        self.wakeups = WakeupListener(app, self.executor.wake)

    def start(self):
        self.lock.acquire()
        # Runs queued in this process wake the executor directly; other processes nudge it.
        self.app.extensions["mirrorsync"].wakeups.register_local(self.executor.wake)
        self.wakeups.start()
        self.executor.recover()
        render_rsyncd_config(self.app)
        self.keeper.start()
        config = self.app.config
        self.keeper.scheduler.add_job(sweep_distribution, "interval", args=[self.app], id="distribution",
                                      seconds=config["CATCHUP_INTERVAL"], max_instances=1, coalesce=True)
        # rsync re-reads its files on each connection: rewriting them is all a change needs.
        self.keeper.scheduler.add_job(render_rsyncd_config, "interval", args=[self.app], id="rsyncd",
                                      seconds=config["RECONCILE_INTERVAL"], max_instances=1, coalesce=True)
        self.executor.start()
        warm_up = getattr(self.app.extensions["mirrorsync"].slave_client, "warm_up", None)
        if warm_up is not None:  # the first fan-out must not wait for its threads to start
            threading.Thread(target=warm_up, name="dispatch-warm-up", daemon=True).start()
        log.info("scheduler started (max %s concurrent syncs)", self.app.config["MAX_CONCURRENT_SYNCS"])

    def stop(self):
        log.info("scheduler stopping: ending running pulls")
        self.keeper.stop()
        self.wakeups.stop()
        self.app.extensions["mirrorsync"].wakeups.unregister_local(self.executor.wake)
        self.executor.stop()
        self.lock.release()
        log.info("scheduler stopped")


def wait_for_signal():
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(3600):
        pass


def main():
    from master import create_app
    try:
        app = create_app()
        service = SchedulerService(app)
        service.start()
    except ConfigError as error:
        print(f"mirror-sync scheduler: {error}", file=sys.stderr)
        return 2
    wait_for_signal()
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
