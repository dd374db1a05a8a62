"""Runs: creation with coalescing, the one state-moving function, claiming and reading."""

import datetime
import logging
import random

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from common import runlogs
from common.errors import Conflict, Gone, NotFound
from common.states import ACTIVE_RUN_STATES, RUN_TRANSITIONS, RunState, Trigger
from master.db import db
from master.models import Project, Run
from master.paths import logs_root
from master.seams import current_seams, now
from master.services import readmodel, transactions

log = logging.getLogger(__name__)

ACTIVE_VALUES = tuple(state.value for state in ACTIVE_RUN_STATES)
# Runs whose tree reached the master, and at least some slaves: they count as a success.
GOOD_RUN_STATES = frozenset({RunState.SUCCESS, RunState.PARTIAL})
QUEUED = RunState.QUEUED.value


class StaleRun(Exception):
    """Another actor moved the run first; the caller's view of it is out of date."""


def has_active_run(project_id, except_run_id=None):
    query = sa.select(Run.id).where(Run.project_id == project_id, Run.state.in_(ACTIVE_VALUES))
    if except_run_id is not None:
        query = query.where(Run.id != except_run_id)
    return db.session.execute(query.limit(1)).first() is not None


def _has_newer_active_run(project_id, run_id):
    query = sa.select(Run.id).where(Run.project_id == project_id, Run.state.in_(ACTIVE_VALUES), Run.id > run_id)
    return db.session.execute(query.limit(1)).first() is not None


def _has_queued_run(project_id):
    query = sa.select(Run.id).where(Run.project_id == project_id, Run.state == QUEUED)
    return db.session.execute(query.limit(1)).first() is not None


def move_run(run, state, **fields):
    """Move ``run`` to ``state``, stamp its times, update its project's read-only fields, commit.

    The move is a compare-and-set on the current state: raises StaleRun when
    another actor moved the run first, ValueError for a move the state
    machine does not allow.
    """
    state = RunState(state)
    current = RunState(run.state)
    if state not in RUN_TRANSITIONS.get(current, ()):
        raise ValueError(f"run {run.id} cannot move from {current.value} to {state.value}")
    stamp = now()
    values = dict(fields, state=state.value)
    project_values = {}
    if state is RunState.SYNCING:
        values["started_at"] = stamp
        project_values["last_started"] = stamp
    if state.is_final:
        values["finished_at"] = stamp
        if run.started_at is not None or state is RunState.SUCCESS:
            project_values["last_ended"] = stamp
    # The master's tree is new once the upstream pull succeeded, whether or not slaves follow;
    # a pull that fails only ever wrote a snapshot that was thrown away (master/snapshots.py),
    # and a skipped run (upstream unchanged) pulled nothing: the tree is still the one before.
    if current is RunState.SYNCING and state in (RunState.DISTRIBUTING, RunState.SUCCESS) \
            and not fields.get("skipped"):
        project_values["tree_run_id"] = run.id
        project_values["tree_at"] = stamp
        project_values["tree_dirty"] = False
        total_size = (fields.get("stats") or {}).get("total_size")
        if total_size is not None:
            project_values["size"] = total_size
    if state in GOOD_RUN_STATES:
        project_values["last_success"] = stamp
    if state is RunState.SUCCESS:
        project_values["last_full_success"] = stamp
    if state.is_final and run.started_at is not None:
        project_values["last_duration"] = (stamp - run.started_at).total_seconds()
        project_values["last_bytes"] = ((fields.get("stats") or run.stats or {}).get("bytes_received"))
    # The status is the active run's state while there is one, else the newest run's: a
    # cancelled follow-up must not hide a run still going on, and a run that ends with a
    # follow-up queued behind it hands the status to that one.
    if current is RunState.QUEUED and state.is_final and has_active_run(run.project_id, run.id):
        pass
    elif state.is_final and _has_newer_active_run(run.project_id, run.id):
        pass  # a run that ends while the next one already pulls leaves the status to that one
    elif current.is_active and state.is_final and _has_queued_run(run.project_id):
        project_values["last_state"] = QUEUED
    else:
        project_values["last_state"] = state.value

    result = db.session.execute(
        sa.update(Run).where(Run.id == run.id, Run.state == current.value).values(**values))
    if result.rowcount != 1:
        db.session.rollback()
        raise StaleRun(f"run {run.id} is no longer {current.value}")
    if state.is_final:
        # Row-locked on PostgreSQL; SQLite serializes writers anyway.
        totals = dict(db.session.execute(sa.select(Project.run_totals).where(
            Project.id == run.project_id).with_for_update()).scalar() or {})
        totals[state.value] = totals.get(state.value, 0) + 1
        project_values["run_totals"] = totals
    if project_values:
        db.session.execute(sa.update(Project).where(Project.id == run.project_id).values(**project_values))
    readmodel.note_changed([run.project_id])
    db.session.commit()
    db.session.expire_all()
    log.info("run %s of %s: %s -> %s", run.id, run.project.name, current.value, state.value)
    return run


def settle_late_success(run, note):
    """A run that ended partial or failed for its slaves, every part of which has since succeeded,
    becomes success: ``finished_at`` stays, ``note`` goes into ``warning``. Raises StaleRun."""
    current = RunState(run.state)
    warning = "; ".join(text for text in (run.warning, note) if text)
    result = db.session.execute(
        sa.update(Run).where(Run.id == run.id, Run.state == current.value)
        .values(state=RunState.SUCCESS.value, error=None, warning=warning))
    if result.rowcount != 1:
        db.session.rollback()
        raise StaleRun(f"run {run.id} is no longer {current.value}")
    project = db.session.execute(sa.select(Project).where(Project.id == run.project_id)
                                 .with_for_update(key_share=True)).scalar_one()
    totals = dict(project.run_totals or {})
    totals[current.value] = max(0, totals.get(current.value, 0) - 1)
    totals[RunState.SUCCESS.value] = totals.get(RunState.SUCCESS.value, 0) + 1
    values = {"run_totals": totals}
    newer = db.session.execute(sa.select(Run.id).where(Run.project_id == run.project_id, Run.id > run.id)
                               .limit(1)).first()
    if newer is None and project.last_state == current.value:
        values["last_state"] = RunState.SUCCESS.value
    if project.last_success is None or project.last_success < run.finished_at:
        values["last_success"] = run.finished_at
    # Every slave has the tree now: a full success, as tunasync's last_update counts it.
    if project.last_full_success is None or project.last_full_success < run.finished_at:
        values["last_full_success"] = run.finished_at
    db.session.execute(sa.update(Project).where(Project.id == run.project_id).values(**values))
    readmodel.note_changed([run.project_id])
    db.session.commit()
    db.session.expire_all()
    log.info("run %s of %s: %s -> success (%s)", run.id, run.project.name, current.value, note)
    return run


@transactions.retried_on_race
def request_sync(project, trigger, force=False):
    """Queue a run of ``project``, or fold the trigger into the one already queued.

    A forced trigger makes the queued run start past MAX_CONCURRENT_SYNCS.
    Returns (run, created). Raises Conflict when the project is disabled.
    """
    if not project.enabled:
        raise Conflict(f"Project {project.name!r} is disabled; enable it before syncing.",
                       {"enabled": ["Project is disabled."]})
    for _ in range(5):
        queued = db.session.execute(
            sa.select(Run).where(Run.project_id == project.id, Run.state == QUEUED)).scalar_one_or_none()
        if queued is not None:
            # A trigger does not wait for a retry's backoff: the queued run is due now.
            was_waiting = queued.not_before is not None
            changes = {"coalesced": Run.coalesced + 1, "not_before": None}
            if force:
                changes["force"] = True
            bumped = db.session.execute(
                sa.update(Run).where(Run.id == queued.id, Run.state == QUEUED).values(**changes))
            _commit_queued(wake=was_waiting or force)
            if bumped.rowcount == 1:
                db.session.refresh(queued)
                return queued, False
            continue  # claimed in between: queue a fresh one
        run = Run(project_id=project.id, trigger=str(getattr(trigger, "value", trigger)),
                  state=QUEUED, created_at=now(), force=bool(force))
        db.session.add(run)
        try:
            db.session.flush()
        except IntegrityError:
            db.session.rollback()  # another process queued one first: coalesce into it
            continue
        if not has_active_run(project.id):
            project.last_state = QUEUED
        readmodel.note_changed([project.id])
        _commit_queued()
        log.info("run %s of %s queued (%s)", run.id, project.name, run.trigger)
        return run, True
    raise Conflict(f"Project {project.name!r} is being triggered too often; try again.")


def _commit_queued(wake=True):
    """Commit a queued (or newly due) run and wake the executor at once, whatever process it is in."""
    wakeups = current_seams().wakeups if wake else None
    if wakeups is not None:
        wakeups.before_commit(db.session)
    db.session.commit()
    if wakeups is not None:
        wakeups.after_commit(db.session)


def wake_executor():
    """Nudge the executor now, whatever process it is in (say, to end a cancelled pull at once)."""
    _commit_queued()


def request_scheduled_syncs(project_ids, trigger=Trigger.SCHEDULE):
    """Queue a run of each enabled project in ``project_ids`` at once, in a few statements.

    What a burst of timers needs: projects with a queued run get the trigger folded into it,
    the others one new run each, all in one transaction. Returns how many runs were created.
    """
    ids = set(project_ids)
    if not ids:
        return 0
    trigger = str(getattr(trigger, "value", trigger))
    enabled = set(db.session.execute(sa.select(Project.id).where(
        Project.id.in_(ids), Project.enabled.is_(True))).scalars())
    queued = set(db.session.execute(sa.select(Run.project_id).where(
        Run.project_id.in_(enabled), Run.state == QUEUED)).scalars())
    fresh = sorted(enabled - queued)
    stamp = now()
    try:
        if queued:
            db.session.execute(sa.update(Run).where(Run.project_id.in_(queued), Run.state == QUEUED)
                               .values(coalesced=Run.coalesced + 1, not_before=None))
        if fresh:
            db.session.execute(sa.insert(Run), [
                {"project_id": project_id, "trigger": trigger, "state": QUEUED, "created_at": stamp,
                 "coalesced": 0, "attempt": 1} for project_id in fresh])
            busy = sa.select(Run.project_id).where(Run.state.in_(ACTIVE_VALUES))
            db.session.execute(sa.update(Project).where(Project.id.in_(fresh), Project.id.not_in(busy))
                               .values(last_state=QUEUED))
            readmodel.note_changed(fresh)
        db.session.commit()
    except IntegrityError:
        # Another process queued one of them in between: take them one by one.
        db.session.rollback()
        created = 0
        for project_id in sorted(enabled):
            project = db.session.get(Project, project_id)
            if project is not None and project.enabled:
                created += request_sync(project, trigger)[1]
        return created
    if fresh:
        log.info("%d runs queued (%s), %d triggers folded into queued runs", len(fresh), trigger, len(queued))
    return len(fresh)


def retry_delay(attempt, base, cap, rng=random):
    """Seconds before try number ``attempt + 1``: exponential, jittered to 50-100%, capped."""
    return min(cap, base * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)


def queue_retry(run, delay):
    """Queue the next try of a failed run after ``delay`` seconds; returns it, or None when a
    run is already queued for the project (that one will pull anyway)."""
    retry = Run(project_id=run.project_id, trigger=Trigger.RETRY.value, state=QUEUED, created_at=now(),
                attempt=run.attempt + 1, retry_of=run.id,
                not_before=now() + datetime.timedelta(seconds=delay))
    db.session.add(retry)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return None
    log.info("run %s of %s: retry %s queued for %s", run.id, run.project.name, retry.id,
             retry.not_before.isoformat())
    return retry


def claim_queued_runs(limit, busy_projects=()):
    """Move up to ``limit`` queued runs of projects not pulling to syncing, plus every forced one, and
    return them, oldest first.

    A project whose previous run is still distributing is not busy: each pull writes a
    snapshot of its own, so slaves still pulling the previous one are not disturbed.
    ``busy_projects`` (ids) are skipped too: a cancelled pull of theirs may not have ended yet.
    """
    busy = sa.select(Run.project_id).where(Run.state == RunState.SYNCING.value)
    due = sa.or_(Run.not_before.is_(None), Run.not_before <= now())
    ready = sa.select(Run).join(Project).where(Run.state == QUEUED, Project.enabled.is_(True),
                                               Run.project_id.not_in(busy), Run.project_id.not_in(busy_projects),
                                               due)
    candidates = db.session.execute(ready.where(Run.force.is_(True)).order_by(Run.id)).scalars().all()
    if limit > 0:
        candidates += db.session.execute(ready.where(Run.force.is_(False)).order_by(Run.id)
                                         .limit(limit)).scalars().all()
    claimed = []
    for run in candidates:
        try:
            claimed.append(move_run(run, RunState.SYNCING))
        except (StaleRun, IntegrityError):
            db.session.rollback()
    return claimed


def record_progress(run_id, progress):
    db.session.execute(sa.update(Run).where(Run.id == run_id, Run.state == RunState.SYNCING.value)
                       .values(progress=progress))
    db.session.commit()


def record_pid(run_id, pid):
    db.session.execute(sa.update(Run).where(Run.id == run_id).values(pid=pid))
    db.session.commit()


def cancel_queued_runs(project):
    for run in db.session.execute(
            sa.select(Run).where(Run.project_id == project.id, Run.state == QUEUED)).scalars().all():
        try:
            move_run(run, RunState.CANCELLED, error="cancelled: the project was disabled or removed")
        except StaleRun:
            pass


def cancelled_runs_with_a_pull():
    """Cancelled runs whose rsync may still be running (its process group is recorded)."""
    return db.session.execute(sa.select(Run).where(Run.state == RunState.CANCELLED.value,
                                                   Run.pid.is_not(None))).scalars().all()


def active_runs():
    return db.session.execute(sa.select(Run).where(Run.state.in_(ACTIVE_VALUES))).scalars().all()


def get_run(run_id):
    """Raises NotFound."""
    run = db.session.get(Run, run_id)
    if run is None:
        raise NotFound(f"There is no run {run_id}.")
    return run


def list_runs(project, limit=50, before=None):
    """Newest first, keyset-paginated by id so the cost never grows with history."""
    query = sa.select(Run).where(Run.project_id == project.id)
    if before is not None:
        query = query.where(Run.id < before)
    return db.session.execute(query.order_by(Run.id.desc()).limit(limit)).scalars().all()


def read_run_log(run_id, offset=0):
    """Return (bytes, next_offset) of a run's log from ``offset``; raises NotFound or Gone."""
    run = get_run(run_id)
    chunk = runlogs.read_log(logs_root(), run.project_name, run.id, offset)
    if chunk is not None:
        return chunk
    if run.state in (QUEUED, RunState.SYNCING.value):
        return b"", 0  # not written yet
    raise Gone(f"The log of run {run_id} is no longer kept (LOG_RETENTION) or was never written.")
