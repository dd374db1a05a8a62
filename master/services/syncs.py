"""Upstream pulls: claim a run, pull its project into a fresh snapshot, and record the outcome."""

import dataclasses
import logging

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import DBAPIError

from common import runlogs, traces
from common.methods import RSYNC, TWO_STAGE
from common.states import RunState, Trigger
from master import snapshots
from master.db import db
from master.models import Run
from master.paths import logs_root, project_tree
from master.services import distribution, pulls, runs, snapshots as snapshots_service, transactions

log = logging.getLogger(__name__)


def _stage(project, run_id):
    """A fresh snapshot to pull into; raises SnapshotError, OSError."""
    data_dir = current_app.config["DATA_DIR"]
    snapshots.adopt_in_place_tree(data_dir, project.name, snapshots_service.adopted_name(project))
    return snapshots.prepare(data_dir, project.name, run_id, current_app.config["SNAPSHOT_METHOD"])


def _filler(staging, project):
    """What the pull calls before it writes: the staged tree starts as the previous one (a btrfs
    snapshot, hard links, or an older snapshot no slave needs any more made into it).

    A sync script (method command) works on that tree as rsync does: it must replace
    files, not rewrite them, since a file rewritten in place is rewritten in every snapshot.
    """
    def fill():
        try:
            snapshots.fill(staging, needed=snapshots_service.needed(project))
        except OSError as error:
            raise OSError(f"cannot start the new tree from snapshot {staging.basis}: "
                          f"{error.strerror or error}") from None
    return fill


def _itemizes_everything(project):
    """Whether rsync's itemized output names every change to the tree the pull leaves: not with a sync
    script, a hook (it gets the tree) or trace files (written into it)."""
    return project.method in (RSYNC, TWO_STAGE) and not any((project.hooks or {}).values()) \
        and project.trace != traces.DEBIAN


# rsync options that change neither which entries rsync lists nor what it would delete, nor its output:
# with only these (and no excludes), the master deletes what rsync did not name (``_lists_everything``).
_LISTING_NEUTRAL = frozenset({"-4", "-6", "--ipv4", "--ipv6", "--no-motd", "-c", "--checksum", "--size-only",
                              "--ignore-times", "-z", "--compress", "--no-compress", "--sparse", "--no-iconv",
                              "--whole-file", "--no-whole-file", "-W", "--partial", "--fuzzy", "--force",
                              "--inc-recursive", "--no-inc-recursive"})
_LISTING_NEUTRAL_VALUED = ("--bwlimit=", "--timeout=", "--contimeout=", "--chmod=", "--block-size=")


def _lists_everything(project):
    """Whether the pull may name every upstream entry and leave the deletions to the master
    (``snapshots.delete_unlisted``) instead of rsync's second look at every directory of the tree
    (UPSTREAM_DELETIONS "listed"; by default rsync deletes, with --delete-delay): a plain rsync pull
    whose itemized output the master reads anyway, with no excludes (an excluded
    entry is in no list, yet rsync keeps it), no trace files to protect, and options that change
    neither the list nor the deletions."""
    return current_app.config["UPSTREAM_DELETIONS"] == "listed" and _itemizes_everything(project) and \
        project.method == RSYNC and not project.excludes and \
        project.trace != traces.DEBIAN and all(
            option in _LISTING_NEUTRAL or option.startswith(_LISTING_NEUTRAL_VALUED)
            for option in project.rsync_options or ())


def _progress_recorder(run_id):
    """A progress callback for the runner, which calls it from its own output thread."""
    app = current_app._get_current_object()

    def record(progress):
        with app.app_context():
            runs.record_progress(run_id, progress)
    return record


def start_upstream_sync(run_id, cancel=None, stopping=None, on_pulled=lambda: None):
    """Pull the project of a syncing run from its upstream into a new snapshot and finish the run.

    ``cancel`` (a threading.Event) ends the pull early; the run is then
    recorded as interrupted. Never leaves the run in ``syncing``: while the
    database cannot be written (a full disk), the end of the run is written
    again and again until it lands, or until ``stopping`` is set. ``on_pulled()`` is called once the
    run is distributing, before its orders go out (maybe more than once).
    """
    run = runs.get_run(run_id)
    project = run.project
    project_name = project.name
    path = runlogs.log_path(logs_root(), project.name, run.id)
    what = f"recording the end of run {run_id} of {project_name}"
    try:
        staging = _stage(project, run_id)
    except (snapshots.SnapshotError, OSError) as error:
        log.error("run %s of %s: %s", run_id, project_name, error)
        message = f"the master's tree cannot be prepared: {error}"
        return transactions.until_written(lambda: _record_crash(run_id, project_name, message), what, stopping)
    destination = staging.destination
    listed = [] if _lists_everything(project) and snapshots.can_list(staging) else None
    try:
        pulled = pulls.pull_upstream(run, destination, path, cancel=cancel,
                                     on_spawn=lambda pid: _note_pid(run_id, pid),
                                     on_progress=_progress_recorder(run_id), options=staging.options,
                                     current=project_tree(project_name), before_pull=_filler(staging, project),
                                     listed=listed, delete_unlisted=lambda result: snapshots.delete_unlisted(
                                         staging, listed, path, result.stats.files_total),
                                     previous=lambda: snapshots.previous_tree(staging),
                                     delete=lambda paths: snapshots.delete_paths(staging, paths))
        if not pulled.result.cancelled and not pulled.skipped:
            pulled = pulls.run_post_hook(runs.get_run(run_id), pulled, destination, path)
    except Exception as error:  # a bug must not leave the run syncing forever
        log.exception("run %s of %s: the pull failed", run_id, project_name)
        snapshots.abort(staging)
        db.session.rollback()
        message = f"internal error: {error}"
        return transactions.until_written(lambda: _record_crash(run_id, project_name, message), what, stopping)
    result = pulled.result
    sealed = None
    if result.ok and not pulled.skipped:
        try:
            items = snapshots.itemized(path, destination) if _itemizes_everything(project) and not pulled.walk \
                else None
            dropped = snapshots.drop_skipped(staging, path)
            if items is not None:
                items[0].update(pulled.written)
                items[1].update(dropped, pulled.deleted)
            sealed = snapshots.commit(staging, items, current_app.config["VERIFY_INTERVAL"])
        except OSError as error:
            log.error("run %s of %s: the new tree cannot be swapped in: %s", run_id, project_name, error)
            result = dataclasses.replace(result, ok=False, warning=None,
                                         error=f"the new tree cannot be swapped in: {error}")
    if sealed is None:
        snapshots.abort(staging)  # what slaves and the rsync daemon serve stays the previous tree
    return transactions.until_written(
        lambda: _record_outcome(run_id, project_name, pulled, result, sealed, on_pulled), what, stopping)


def _note_pid(run_id, pid):
    # Only for ending an orphan after a crash: a pull goes on when it cannot be written down.
    try:
        runs.record_pid(run_id, pid)
    except DBAPIError as error:
        db.session.rollback()
        log.warning("run %s: could not note rsync's process group %s: %s", run_id, pid, error.orig)


def _record_crash(run_id, project_name, message):
    run = _still_syncing(run_id, project_name)
    if run is not None:
        runs.move_run(run, RunState.FAILED, error=message)
    return db.session.get(Run, run_id)


def _record_outcome(run_id, project_name, pulled, result, sealed, on_pulled=lambda: None):
    run = _still_syncing(run_id, project_name)
    if run is None:
        return db.session.get(Run, run_id)
    project = run.project
    outcome = dict(exit_code=result.exit_code, stats=_stats(result, sealed), pid=None)
    if pulled.skipped:
        runs.move_run(run, RunState.SUCCESS, skipped=True, warning=pulled.warning, **outcome)
    elif result.cancelled:
        runs.move_run(run, RunState.INTERRUPTED, error="interrupted: the executor was stopped during the pull",
                      **outcome)
        if project.enabled:
            runs.request_sync(project, Trigger.RECOVERY)  # picked up again after the restart
    elif result.ok:
        # The snapshot before goes with the next sweep (every CATCHUP_INTERVAL), not here: deleting a
        # whole tree would hold this pull's worker and compete with the slaves pulling right now.
        distribution.dispatch_to_slaves(run_id, dict(outcome, warning=pulled.warning, digest=sealed.digest),
                                        saved=sealed.saved, ordering=on_pulled)
    else:
        # The retry is queued first, so the failed run names it in the same update.
        retry = _retry_if_transient(run, result)
        if retry is not None:
            outcome.update(retried_by=retry.id, warning=(
                f"transient failure: retrying as run {retry.id} (attempt {retry.attempt} of "
                f"{project.retries + 1}) at {retry.not_before.isoformat()}"))
        if pulled.warning:
            outcome["warning"] = "; ".join(w for w in (outcome.get("warning"), pulled.warning) if w)
        runs.move_run(run, RunState.FAILED, error=result.error, **outcome)
    runlogs.prune_logs(logs_root(), project_name, current_app.config["LOG_RETENTION"])
    return runs.get_run(run_id)


def _stats(result, sealed):
    """The method's stats; created and deleted counts from the change list, since a pull into a
    fresh snapshot creates every entry and deletes none as far as rsync can tell."""
    stats = result.stats.to_dict()
    if sealed is not None and sealed.changes is not None:
        stats["files_created"] = sealed.changes.created
        stats["files_deleted"] = len(sealed.changes.deleted)
    return stats


def _still_syncing(run_id, project_name):
    """The run, unless it was cancelled (or removed with its project) while it pulled."""
    db.session.expire_all()
    run = db.session.get(Run, run_id)
    if run is None:
        log.warning("run %s of %s was removed with its project during the pull", run_id, project_name)
        return None
    if run.state != RunState.SYNCING.value:
        log.info("run %s of %s: the pull ended after the run was %s", run_id, project_name, run.state)
        runs.record_pid(run_id, None)
        return None
    return run


def _retry_if_transient(run, result):
    """Queue another try after a transient failure, within the project's ``retries``."""
    project = run.project
    if not result.transient:
        return None  # the method says trying again will not help (see common/methods)
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
    for run in runs.cancelled_runs_with_a_pull():
        kill_process_group(run.pid)  # cancelled while this executor was gone: its rsync may live on
        runs.record_pid(run.id, None)
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


def runs_to_execute(limit, busy_projects=()):
    """Claim up to ``limit`` queued runs, none of ``busy_projects`` (ids); returns (run id, project id)."""
    return [(run.id, run.project_id) for run in runs.claim_queued_runs(limit, busy_projects)]


def run_ids_to_execute(limit):
    return [run_id for run_id, _ in runs_to_execute(limit)]


def runs_no_longer_syncing(run_ids):
    """Which of ``run_ids`` were cancelled or removed: their pulls must stop."""
    if not run_ids:
        return set()
    # Only a cancel (or a deleted project) moves a run away from a pull that still runs; a worker
    # whose pull ended moves its own run on (to distributing, say) and is not to be stopped.
    kept = set(db.session.execute(sa.select(Run.id).where(
        Run.id.in_(run_ids), Run.state != RunState.CANCELLED.value)).scalars())
    db.session.rollback()
    return set(run_ids) - kept

