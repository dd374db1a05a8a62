"""Upstream pulls: run rsync for a claimed run and record the outcome."""

import dataclasses
import logging

from flask import current_app

from common import runlogs
from common.rsync import TRANSIENT_EXIT_CODES, RsyncJob
from common.states import RunState, Trigger
from master.db import db
from master import snapshots
from master.paths import logs_root
from master.seams import current_seams
from master.services import distribution, runs, snapshots as snapshots_service

log = logging.getLogger(__name__)

# What an upstream rsync daemon says when the project's settings, not the network, are wrong.
PERMANENT_DAEMON_ERRORS = ("auth failed", "unknown module", "access denied", "chroot failed")


def upstream_job(project, staging):
    """The pull of ``project`` into the fresh snapshot ``staging``."""
    return RsyncJob(source=project.upstream, destination=staging.destination,
                    options=(*staging.options, *(project.rsync_options or ())),
                    excludes=tuple(project.excludes or ()), password=project.upstream_password,
                    timeout=project.timeout)


def _stage(project, run_id):
    """A fresh snapshot to pull into; raises SnapshotError, OSError."""
    data_dir = current_app.config["DATA_DIR"]
    snapshots.adopt_in_place_tree(data_dir, project.name, snapshots_service.adopted_name(project))
    return snapshots.prepare(data_dir, project.name, run_id)


def _progress_recorder(run_id):
    """A progress callback for the runner, which calls it from its own output thread."""
    app = current_app._get_current_object()

    def record(progress):
        with app.app_context():
            runs.record_progress(run_id, progress)
    return record


def start_upstream_sync(run_id, cancel=None):
    """Pull the project of a syncing run from its upstream and finish the run.

    ``cancel`` (a threading.Event) ends the pull early; the run is then
    recorded as interrupted. Never leaves the run in ``syncing``.
    """
    config = current_app.config
    run = runs.get_run(run_id)
    project = run.project
    path = runlogs.log_path(logs_root(), project.name, run.id)
    try:
        staging = _stage(project, run_id)
    except (snapshots.SnapshotError, OSError) as error:
        log.error("run %s of %s: %s", run_id, project.name, error)
        runs.move_run(run, RunState.FAILED, error=f"the master's tree cannot be prepared: {error}")
        return runs.get_run(run_id)
    try:
        result = current_seams().rsync_runner.run(
            upstream_job(project, staging), path, on_spawn=lambda pid: runs.record_pid(run_id, pid),
            cancel=cancel, on_progress=_progress_recorder(run_id))
    except Exception as error:  # a bug must not leave the run syncing forever
        log.exception("run %s of %s: the rsync runner failed", run_id, project.name)
        snapshots.abort(staging)
        db.session.rollback()
        runs.move_run(runs.get_run(run_id), RunState.FAILED, error=f"internal error: {error}")
        return runs.get_run(run_id)
    sealed = None
    if result.ok:
        try:
            sealed = snapshots.commit(staging)
        except OSError as error:
            log.error("run %s of %s: the new tree cannot be swapped in: %s", run_id, project.name, error)
            result = dataclasses.replace(result, ok=False, warning=None,
                                         error=f"the new tree cannot be swapped in: {error}")
    if not result.ok:
        snapshots.abort(staging)  # what slaves and the rsync daemon serve stays the previous tree
    run = runs.get_run(run_id)
    outcome = dict(exit_code=result.exit_code, stats=_stats(result, sealed), pid=None)
    if result.cancelled:
        runs.move_run(run, RunState.INTERRUPTED, error="interrupted: the executor was stopped during the pull",
                      **outcome)
        if project.enabled:
            runs.request_sync(project, Trigger.RECOVERY)  # picked up again after the restart
    elif result.ok:
        distribution.dispatch_to_slaves(run_id, dict(outcome, warning=result.warning, digest=sealed.digest))
        snapshots_service.prune(project)
    else:
        # The retry is queued first, so the failed run names it in the same update.
        retry = _retry_if_transient(run, result)
        if retry is not None:
            outcome.update(retried_by=retry.id, warning=(
                f"transient failure: retrying as run {retry.id} (attempt {retry.attempt} of "
                f"{project.retries + 1}) at {retry.not_before.isoformat()}"))
        runs.move_run(run, RunState.FAILED, error=result.error, **outcome)
    runlogs.prune_logs(logs_root(), project.name, config["LOG_RETENTION"])
    return runs.get_run(run_id)


def _stats(result, sealed):
    """rsync's stats; created and deleted counts from the change list, since a pull into a fresh
    snapshot creates every entry and deletes none as far as rsync can tell."""
    stats = result.stats.to_dict()
    if sealed is not None and sealed.changes is not None:
        stats["files_created"] = sealed.changes.created
        stats["files_deleted"] = len(sealed.changes.deleted)
    return stats


def _retry_if_transient(run, result):
    """Queue another try after a transient failure, within the project's ``retries``."""
    project = run.project
    if result.exit_code not in TRANSIENT_EXIT_CODES or result.timed_out:
        return None
    if any(marker in (result.error or "").lower() for marker in PERMANENT_DAEMON_ERRORS):
        return None  # exit 5 also covers a wrong password or module: trying again will not help
    if run.attempt > project.retries or not project.enabled:
        return None
    config = current_app.config
    delay = runs.retry_delay(run.attempt, config["RETRY_BASE_DELAY"], config["RETRY_MAX_DELAY"])
    return runs.queue_retry(run, delay)


def recover_interrupted_runs(kill_process_group):
    """At executor start: end pulls a dead executor left syncing, and queue a fresh run for each.

    ``kill_process_group(pid)`` ends an orphaned rsync that may still be running.
    Distributing runs go on: their slaves report to the API whatever happened
    here; only orders that never left are sent again.
    """
    recovered = []
    distribution.resend_unsent_orders()
    for run in runs.active_runs():
        if run.state != RunState.SYNCING.value:
            continue
        if run.pid:
            kill_process_group(run.pid)
        snapshots.remove_leftovers(current_app.config["DATA_DIR"], run.project.name)
        project = run.project
        try:
            runs.move_run(run, RunState.INTERRUPTED, pid=None,
                          error="interrupted: the executor stopped during the run and was restarted")
        except runs.StaleRun:
            continue
        if project.enabled:
            runs.request_sync(project, Trigger.RECOVERY)
        recovered.append(run.id)
    # After the orphans are gone: trees an earlier release pulled in place become snapshots.
    snapshots_service.adopt_in_place_trees()
    return recovered


def run_ids_to_execute(limit):
    return [run.id for run in runs.claim_queued_runs(limit)]

