"""Fan-out: order slaves to pull a new tree, fold their reports into the run, catch up stragglers."""

import datetime
import logging

import sqlalchemy as sa
from flask import current_app

from common import traces, wire
from common.errors import Forbidden, NotFound, ValidationFailed
from common.methods import TWO_STAGE
from common.states import RunState, SlaveRunState
from master import rsyncd, snapshots
from master.db import db
from master.models import Project, Run, Slave, SlaveProject, SlaveRun
from master.seams import current_seams, now
from master.services import readmodel, runs, slaves as slaves_service, transactions
from master.slave_client import OrderTarget

log = logging.getLogger(__name__)

IN_FLIGHT = (SlaveRunState.PENDING.value, SlaveRunState.DISPATCHED.value, SlaveRunState.SYNCING.value)
FINAL_SLAVE_STATES = frozenset({SlaveRunState.SUCCESS.value, SlaveRunState.FAILED.value,
                                SlaveRunState.UNREACHABLE.value, SlaveRunState.TIMEOUT.value,
                                SlaveRunState.CANCELLED.value})
# Runs that ended for their slaves' sake; every part succeeding later makes them a success.
LATE_SUCCESS_STATES = frozenset({RunState.PARTIAL.value, RunState.FAILED.value})
REPORTED_STATES = frozenset({SlaveRunState.SUCCESS.value, SlaveRunState.FAILED.value})


def _rsyncd_host(address):
    """An IPv6 address goes in brackets, as in an rsync URL."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _order(run_id, project, catchup=False):
    config = current_app.config
    run = db.session.get(Run, run_id)
    change_list = snapshots.read_changes(config["DATA_DIR"], project.name, str(run_id))
    order = {"run_id": run_id, "project": project.name, "rsyncd_host": _rsyncd_host(config["RSYNCD_ADDRESS"]),
             "rsyncd_port": config["RSYNCD_PORT"], "timeout": project.timeout, "catchup": catchup,
             "publish": project.publish, "snapshot": str(run_id), "digest": run.digest if run else None,
             "changes": change_list is not None}
    if change_list is not None and max(map(len, (change_list["changed"], change_list["deleted"],
                                                   change_list["touch"]))) <= wire.INLINE_CHANGES:
        order["change_list"] = change_list
    # Only what differs from a plain order, so that slaves from before these fields still take plain ones.
    if project.method == TWO_STAGE:
        order.update(method=TWO_STAGE, stage1_profile=project.stage1_profile)
    if project.trace == traces.DEBIAN:
        order.update(trace=traces.DEBIAN, upstream_name=config["MIRROR_NAME"])
    return order


def _deadline(project, stamp):
    return stamp + datetime.timedelta(seconds=project.timeout + current_app.config["SLAVE_GRACE"])


def _send(run_id, project, slaves, catchup=False):
    """Send orders to ``slaves`` in parallel and record each outcome on the pending entries."""
    # The daemon must know the project's module and every slave's user before anyone pulls.
    rsyncd.write_config()
    order = _order(run_id, project, catchup)
    # Every slave's address and key in one query: a commit since ``slaves`` were read expired them,
    # and each would load itself again, a round trip per order (100 slaves: 38 ms).
    ids = sorted(sa.inspect(slave).identity[0] for slave in slaves)
    targets = [(OrderTarget(row.name, row.url, row.signing_key), order) for row in db.session.execute(
        sa.select(Slave.name, Slave.url, Slave.signing_key).where(Slave.id.in_(ids)).order_by(Slave.name))]
    outcomes = current_seams().slave_client.send_orders(targets)
    stamp = now()
    names = [outcome.name for outcome in outcomes]
    # Lock order, as in a report: slave_runs rows first (by id), then slave_projects rows.
    db.session.execute(sa.select(SlaveRun.id).where(SlaveRun.run_id == run_id, SlaveRun.slave_name.in_(names))
                       .order_by(SlaveRun.id).with_for_update())
    entries = sa.and_(SlaveRun.run_id == run_id, SlaveRun.slave_name.in_(names))
    # A fast slave may have reported before this line: the time is recorded whatever the state...
    db.session.execute(sa.update(SlaveRun).where(entries, SlaveRun.dispatched_at.is_(None))
                       .values(dispatched_at=stamp))
    # ...but only a pending entry changes state. One statement for all accepted orders, one per refusal.
    pending = SlaveRun.state == SlaveRunState.PENDING.value
    accepted = [outcome.name for outcome in outcomes if outcome.accepted]
    if accepted:
        db.session.execute(sa.update(SlaveRun).where(
            SlaveRun.run_id == run_id, SlaveRun.slave_name.in_(accepted), pending)
            .values(state=SlaveRunState.DISPATCHED.value, error=None,
                    start_deadline=slaves_service.start_deadline(stamp)))
    for outcome in outcomes:
        if outcome.accepted:
            continue
        log.warning("run %s: order to %s failed: %s", run_id, outcome.name, outcome.error)
        db.session.execute(sa.update(SlaveRun).where(
            SlaveRun.run_id == run_id, SlaveRun.slave_name == outcome.name, pending)
            .values(state=outcome.state, error=outcome.error, finished_at=stamp))
    _note_attempts(ids, project, stamp)
    readmodel.note_changed([project.id])
    db.session.commit()
    if accepted:
        _cancel_accepted_late(run_id, project.name, accepted, targets)
    return outcomes


def _cancel_accepted_late(run_id, project_name, accepted, targets):
    """Tell slaves whose part was cancelled while their order was on its way (it was still pending,
    so the cancel may have reached the slave before the order did, or not at all) to stop after all."""
    cancelled = set(db.session.execute(sa.select(SlaveRun.slave_name).where(
        SlaveRun.run_id == run_id, SlaveRun.slave_name.in_(accepted),
        SlaveRun.state == SlaveRunState.CANCELLED.value)).scalars())
    db.session.commit()  # end the read: nothing waits on it while the cancels go out
    if cancelled:
        tell_slaves_to_cancel(run_id, project_name, [target for target, _ in targets if target.name in cancelled])


def _note_attempts(ids, project, stamp):
    """Remember when each slave (by id, sorted) was last ordered to pull ``project`` (catch-up waits after it)."""
    _ensure_freshness_rows(ids, project.id)
    db.session.execute(sa.update(SlaveProject).where(
        SlaveProject.project_id == project.id, SlaveProject.slave_id.in_(ids)).values(last_attempt_at=stamp))


def _ensure_freshness_rows(slave_ids, project_id):
    """Insert the missing slave_projects rows, whoever else inserts them at the same moment."""
    dialect = db.session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    rows = [{"slave_id": slave_id, "project_id": project_id} for slave_id in slave_ids]
    if rows:
        db.session.execute(insert(SlaveProject).values(rows).on_conflict_do_nothing())


def dispatch_to_slaves(run_id, upstream_outcome, saved=lambda: None, ordering=lambda: None):
    """Finish the upstream part of a run: with enabled slaves, order them to pull; else success.
    ``saved()`` waits for what the orders need not wait for (the snapshot's manifest file): the run is
    not final before it returns. ``ordering()`` is called once the run is distributing, just before
    the orders go out."""
    run = runs.get_run(run_id)
    project = run.project
    slaves = slaves_service.enabled_slaves()
    if not slaves:
        saved()
        return runs.move_run(run, RunState.SUCCESS, **upstream_outcome)
    stamp = now()
    # A slave not heard from for HEARTBEAT_TIMEOUT gets no order: one whose host is down would hold
    # this pull's worker for DISPATCH_TIMEOUT at every run of every project. Its part ends unreachable
    # at once, and catch-up sends it the newest tree when it heartbeats again.
    offline = {slave.id for slave in slaves if slaves_service.slave_state(slave, stamp) == "offline"}
    silent = (f"offline (no heartbeat for {current_app.config['HEARTBEAT_TIMEOUT']:g} seconds, HEARTBEAT_TIMEOUT): "
              "no order sent; catch-up sends the tree once it is heard from again")
    for slave in slaves:
        if slave.id in offline:
            db.session.add(SlaveRun(run_id=run.id, slave_id=slave.id, slave_name=slave.name, attempts=0,
                                    state=SlaveRunState.UNREACHABLE.value, finished_at=stamp, error=silent))
        else:
            db.session.add(SlaveRun(run_id=run.id, slave_id=slave.id, slave_name=slave.name, attempts=1,
                                    state=SlaveRunState.PENDING.value, deadline=_deadline(project, stamp)))
    runs.move_run(run, RunState.DISTRIBUTING, **upstream_outcome)
    reachable = [slave for slave in slaves if slave.id not in offline]
    ordering()
    started = now()
    if reachable:
        _send(run_id, project, reachable)
    log.info("run %s of %s: ordered %d slaves in %.3f s%s", run_id, project.name, len(reachable),
             (now() - started).total_seconds(), f" ({len(offline)} offline, not ordered)" if offline else "")
    saved()
    finish_run_if_complete(run_id)
    return runs.get_run(run_id)


def resend_unsent_orders():
    """After a restart: orders of distributing runs that never left (still pending) go out again."""
    resent = 0
    runs_waiting = db.session.execute(sa.select(Run).where(
        Run.state == RunState.DISTRIBUTING.value)).scalars().all()
    for run in runs_waiting:
        pending = [entry.slave_id for entry in run.slave_runs if entry.state == SlaveRunState.PENDING.value]
        targets = [slave for slave in slaves_service.enabled_slaves() if slave.id in pending]
        if targets:
            _send(run.id, run.project, targets)
            resent += len(targets)
        finish_run_if_complete(run.id)
    return resent


def finish_run_if_complete(run_id):
    """End a distributing run once every slave entry is final: success, partial or failed.

    A run that ended partial or failed for its slaves becomes success once every part has succeeded.
    """
    run = db.session.get(Run, run_id)
    if run is None:
        return None
    if run.state in LATE_SUCCESS_STATES:
        return _settle_late_success(run)
    if run.state != RunState.DISTRIBUTING.value:
        return None
    entries = run.slave_runs
    if any(entry.state not in FINAL_SLAVE_STATES for entry in entries):
        return None
    behind = [entry for entry in entries if entry.state != SlaveRunState.SUCCESS.value]
    if not behind:
        state, error = RunState.SUCCESS, None
    else:
        state = RunState.PARTIAL if len(behind) < len(entries) else RunState.FAILED
        names = ", ".join(f"{entry.slave_name} ({entry.state})" for entry in behind)
        error = f"{len(behind)} of {len(entries)} slaves did not get the tree: {names}"
    try:
        runs.move_run(run, state, error=error)
    except runs.StaleRun:
        return None  # another worker finished it first
    return run


def _settle_late_success(run):
    entries = run.slave_runs
    if not entries or any(entry.state != SlaveRunState.SUCCESS.value for entry in entries):
        return None
    late = [entry for entry in entries if entry.finished_at and entry.finished_at > run.finished_at]
    note = ", ".join(f"{entry.slave_name} got the tree after the run ended ({entry.finished_at.isoformat()})"
                     for entry in late) or "every slave got the tree after the run ended"
    try:
        runs.settle_late_success(run, note)
    except runs.StaleRun:
        return None
    return run


def end_parts_of_disabled_slave(slave):
    """A slave an admin disabled gets no say in runs any more: its parts still in flight end as
    failed, and runs waiting only for it end (partial or failed)."""
    stamp = now()
    entries = db.session.execute(sa.select(SlaveRun).where(
        SlaveRun.slave_id == slave.id, SlaveRun.state.in_(IN_FLIGHT))).scalars().all()
    for entry in entries:
        entry.state = SlaveRunState.FAILED.value
        entry.finished_at = stamp
        entry.error = "the slave was disabled by an admin before it reported"
    db.session.commit()
    for run_id in {entry.run_id for entry in entries}:
        finish_run_if_complete(run_id)
    return len(entries)


@transactions.retried_on_race
def record_slave_report(slave, report):
    """Fold one signed report into its run; returns False for a repeat.

    Raises Forbidden for a disabled slave, NotFound, ValidationFailed.
    """
    if not slave.enabled:
        raise Forbidden(f"Slave {slave.name!r} is disabled; the master takes no report from it.")
    entry = db.session.execute(sa.select(SlaveRun).where(
        SlaveRun.run_id == report["run_id"], SlaveRun.slave_id == slave.id)).scalar_one_or_none()
    if entry is None:
        raise NotFound(f"Run {report['run_id']} has no part for slave {slave.name!r}.")
    run = entry.run
    if report["project"] != run.project.name:
        raise ValidationFailed("The report names another project than its run.",
                               {"project": [f"Run {run.id} is of project {run.project.name!r}."]})
    if entry.state in REPORTED_STATES:
        finish_run_if_complete(run.id)  # a repeat after a failed finish finishes it now
        return False  # already counted: reports are retried until acknowledged
    if entry.state == SlaveRunState.CANCELLED.value:
        if report["state"] == SlaveRunState.SUCCESS.value:
            # The pull ended before the cancel reached the slave: it holds the tree all the same.
            _note_held_tree(_freshness_row(slave, run), run, report["finished_at"] or now())
            db.session.commit()
        return True
    stamp = now()
    # Each move below is a compare-and-set on the state just read: a cancel (or a timeout) that
    # lands in between is never overwritten; the report is then judged again against it.
    if report["state"] == SlaveRunState.SYNCING.value:
        # The start of the pull, or how far it has come: either way the slave is alive. A part that
        # has ended (a final report, a timeout) stays as it is, whenever this one arrives.
        progress = {"progress": report["progress"]} if report.get("progress") is not None else {}
        was = entry.state
        if was in (SlaveRunState.PENDING.value, SlaveRunState.DISPATCHED.value):
            moved = db.session.execute(sa.update(SlaveRun).where(
                SlaveRun.id == entry.id, SlaveRun.state == was).values(
                state=SlaveRunState.SYNCING.value, started_at=report["started_at"] or stamp, **progress)).rowcount
            if moved != 1:
                db.session.rollback()
                return record_slave_report(slave, report)
            readmodel.note_changed([run.project_id])
        slaves_service.keep_parts_alive(slave, stamp)
        if was == SlaveRunState.SYNCING.value and progress:
            # After keep_parts_alive, which holds this row already. Progress is in no feed: only the
            # run's own view shows it, so the read model has nothing to rebuild.
            db.session.execute(sa.update(SlaveRun).where(
                SlaveRun.id == entry.id, SlaveRun.state == SlaveRunState.SYNCING.value).values(**progress))
        db.session.commit()
        return True
    values = dict(state=report["state"], started_at=report["started_at"] or entry.started_at,
                  finished_at=report["finished_at"] or stamp, exit_code=report["exit_code"],
                  error=report["error"], warning=report.get("warning"), stats=report["stats"],
                  digest=report.get("digest"))
    mismatch = _digest_mismatch(run, values["digest"]) if values["state"] == SlaveRunState.SUCCESS.value else None
    if mismatch:
        values.update(state=SlaveRunState.FAILED.value, error=mismatch)
        log.warning("run %s: slave %s published another tree: %s", run.id, slave.name, mismatch)
    elif values["warning"]:
        log.warning("run %s: slave %s: %s", run.id, slave.name, values["warning"])
    moved = db.session.execute(sa.update(SlaveRun).where(
        SlaveRun.id == entry.id, SlaveRun.state == entry.state).values(**values)).rowcount
    if moved != 1:
        db.session.rollback()
        return record_slave_report(slave, report)
    db.session.expire(entry)
    _note_freshness(slave, run, entry)
    readmodel.note_changed([run.project_id])
    slaves_service.keep_parts_alive(slave, stamp)
    db.session.commit()
    log.info("run %s: slave %s reported %s", run.id, slave.name, entry.state)
    finish_run_if_complete(run.id)
    return True


def _digest_mismatch(run, digest):
    """Why a reported success is not one: its digest is neither the run's nor a newer run's of
    the project (a slave that folded orders pulls the newest). None when it matches or either
    side has no digest (slaves and runs of earlier releases)."""
    if digest is None or run.digest is None or digest == run.digest:
        return None
    newer = db.session.execute(sa.select(Run.id).where(
        Run.project_id == run.project_id, Run.id > run.id, Run.digest == digest).limit(1)).first()
    if newer is not None:
        return None
    return (f"the slave's published tree ({digest[:19]}) is not run {run.id}'s tree ({run.digest[:19]}); "
            "it is pulled again in full")


def _freshness_row(slave, run):
    _ensure_freshness_rows([slave.id], run.project_id)
    return db.session.execute(sa.select(SlaveProject).where(
        SlaveProject.slave_id == slave.id, SlaveProject.project_id == run.project_id)
        .with_for_update().execution_options(populate_existing=True)).scalar_one()


def _note_held_tree(freshness, run, finished_at):
    if freshness.run_id is None or run.id >= freshness.run_id:
        freshness.run_id = run.id
        freshness.synced_at = finished_at


def _note_freshness(slave, run, entry):
    freshness = _freshness_row(slave, run)
    freshness.last_state = entry.state
    freshness.last_error = entry.error
    if entry.state == SlaveRunState.SUCCESS.value:
        _note_held_tree(freshness, run, entry.finished_at)


def cancel_parts(run, reason):
    """Mark the in-flight parts of ``run`` cancelled (uncommitted); returns who to tell, as OrderTargets."""
    stamp = now()
    told = []
    for entry in run.slave_runs:
        if entry.state not in IN_FLIGHT:
            continue
        # A pending part's order may be on its way, or answered and not yet recorded: it is told too
        # (a slave that never got the order answers 404), and the dispatch tells it again once the
        # order is accepted (_cancel_accepted_late).
        entry.state, entry.finished_at, entry.error = SlaveRunState.CANCELLED.value, stamp, reason
        slave = db.session.get(Slave, entry.slave_id) if entry.slave_id is not None else None
        if slave is not None:
            told.append(OrderTarget(slave.name, slave.url, slave.signing_key))
    return told


def tell_slaves_to_cancel(run_id, project_name, targets):
    """Ask each slave to stop its pull of the run; one that does not hear it reports a result nobody counts."""
    for outcome in current_seams().slave_client.send_cancels(
            [(target, run_id, project_name) for target in targets]):
        if not outcome.accepted:
            log.warning("run %s: telling %s to cancel failed: %s", run_id, outcome.name, outcome.error)


def expire_overdue_entries():
    """Entries past their deadline end as timeout; runs whose entries are all final end."""
    stamp = now()
    overdue = db.session.execute(sa.select(SlaveRun).where(
        SlaveRun.state.in_(IN_FLIGHT), sa.or_(SlaveRun.deadline < stamp, SlaveRun.start_deadline < stamp))
    ).scalars().all()
    silence = current_app.config["SLAVE_START_TIMEOUT"]
    for entry in overdue:
        entry.state = SlaveRunState.TIMEOUT.value
        entry.finished_at = stamp
        if entry.deadline is not None and entry.deadline < stamp:
            entry.error = "no report from the slave before its deadline"
        else:
            entry.error = f"the slave was not heard from for {silence:g} seconds (SLAVE_START_TIMEOUT)"
        log.warning("run %s: slave %s timed out", entry.run_id, entry.slave_name)
    if overdue:
        readmodel.note_changed([entry.run.project_id for entry in overdue])
    db.session.commit()
    distributing = db.session.execute(
        sa.select(Run.id).where(Run.state == RunState.DISTRIBUTING.value)).scalars().all()
    for run_id in distributing:
        finish_run_if_complete(run_id)
    return len(overdue)


def catch_up_slaves():
    """Order online slaves that miss the latest good tree of a project to pull it.

    A slave that was offline or whose last pull failed gets it without waiting
    for the next upstream change; a project with a run in progress waits for it.
    """
    config = current_app.config
    stamp = now()
    online = {s.id: s for s in slaves_service.enabled_slaves() if slaves_service.slave_state(s, stamp) == "online"}
    if not online:
        return 0
    by_project = {}
    for project_id, slave_id in _laggards(online, stamp, datetime.timedelta(seconds=4 * config["CATCHUP_INTERVAL"])):
        by_project.setdefault(project_id, []).append(online[slave_id])
    sent = 0
    for project_id, behind in by_project.items():
        project = db.session.get(Project, project_id)
        run_id = project.tree_run_id
        for slave in behind:
            _reopen_entry(run_id, project, slave, stamp)
        readmodel.note_changed([project.id])
        db.session.commit()
        log.info("catch-up: ordering %s to pull run %s of %s", ", ".join(s.name for s in behind),
                 run_id, project.name)
        _send(run_id, project, behind, catchup=True)
        sent += len(behind)
    return sent


def _laggards(online, stamp, retry_after):
    """(project id, slave id) of each online slave that misses a project's newest good tree and is due an
    order, by project and slave name. The database picks them from the freshness rows: at 1,000 projects x
    100 slaves, 0.2-0.3 s a sweep, where loading every row as an object took 2.4 s and a cross join of
    projects and slaves that looks each pair up 0.3 s for its query alone (bench/README, ``scale.py``)."""
    busy = sa.select(Run.project_id).where(Run.state == RunState.SYNCING.value)
    # An admin who cancelled a run's fan-out does not want catch-up to send it after all.
    cancelled = sa.select(Run.id).where(Run.state == RunState.CANCELLED.value)
    eligible = sa.and_(Project.enabled.is_(True), Project.tree_run_id.is_not(None), Project.tree_dirty.is_(False),
                       Project.id.not_in(busy), Project.tree_run_id.not_in(cancelled))
    not_in_flight = ~sa.exists().where(SlaveRun.slave_id == Slave.id, SlaveRun.run_id == Project.tree_run_id,
                                       SlaveRun.state.in_(IN_FLIGHT))
    # Slaves that hold another tree, or none yet, and were not tried lately or were heard from since:
    # a slave must show it is back.
    behind = db.session.execute(
        sa.select(Project.id, Slave.id).select_from(SlaveProject)
        .join(Project, Project.id == SlaveProject.project_id).join(Slave, Slave.id == SlaveProject.slave_id)
        # First the test that rules out most rows (a slave holding the newest tree).
        .where(sa.or_(SlaveProject.run_id.is_(None), SlaveProject.run_id != Project.tree_run_id),
               SlaveProject.slave_id.in_(list(online)), eligible,
               sa.or_(SlaveProject.last_attempt_at.is_(None),
                      sa.and_(SlaveProject.last_attempt_at <= stamp - retry_after,
                              Slave.last_seen > SlaveProject.last_attempt_at)),
               not_in_flight)).all()
    # Pairs without a freshness row (a slave enrolled or enabled after a project's fan-out), looked for
    # only among the slaves that have fewer rows than there are projects to hold.
    wanted = db.session.execute(sa.select(sa.func.count(Project.id)).where(eligible)).scalar()
    rows = dict(db.session.execute(
        sa.select(SlaveProject.slave_id, sa.func.count()).join(Project, Project.id == SlaveProject.project_id)
        .where(SlaveProject.slave_id.in_(list(online)), eligible).group_by(SlaveProject.slave_id)).all())
    short = [slave_id for slave_id in online if rows.get(slave_id, 0) < wanted]
    never = db.session.execute(
        sa.select(Project.id, Slave.id).join(Slave, Slave.id.in_(short))
        .where(eligible, ~sa.exists().where(SlaveProject.slave_id == Slave.id, SlaveProject.project_id == Project.id),
               not_in_flight)).all() if short else []
    db.session.commit()   # end the read before the orders go out
    return sorted(set(behind) | set(never), key=lambda pair: (pair[0], online[pair[1]].name))


def _reopen_entry(run_id, project, slave, stamp):
    entry = db.session.execute(sa.select(SlaveRun).where(
        SlaveRun.run_id == run_id, SlaveRun.slave_id == slave.id)).scalar_one_or_none()
    if entry is None:
        entry = SlaveRun(run_id=run_id, slave_id=slave.id, slave_name=slave.name, attempts=0)
        db.session.add(entry)
    entry.state = SlaveRunState.PENDING.value
    entry.attempts = (entry.attempts or 0) + 1
    entry.deadline = _deadline(project, stamp)
    entry.start_deadline = None
    entry.dispatched_at = entry.started_at = entry.finished_at = entry.exit_code = entry.error = None
    entry.stats = entry.progress = None


def freshness_by_project():
    """project id -> {slave name: freshness dict}, in two queries whatever the history."""
    rows = db.session.execute(sa.select(SlaveProject, Slave.name).join(Slave)).all()
    result = {}
    for freshness, name in rows:
        result.setdefault(freshness.project_id, {})[name] = freshness
    return result


def slave_freshness(project, held):
    """How one slave stands for one project: fresh, stale or failed, with what it holds."""
    if held.run_id is not None and held.run_id == project.tree_run_id:
        state = "fresh"
    elif held.last_state == SlaveRunState.FAILED.value:
        state = "failed"
    else:
        state = "stale"
    return {"state": state, "run_id": held.run_id, "since": held.synced_at,
            "last_error": held.last_error if state != "fresh" else None}
