"""Cancelling a run: a queued one ends at once, a pull is stopped, slaves are told to stop theirs."""

import logging

from common.errors import Conflict
from common.states import CANCELLABLE_RUN_STATES, RunState
from master.db import db
from master.services import distribution, runs, transactions

log = logging.getLogger(__name__)

CANCELLED_BY_ADMIN = "cancelled by an admin"


@transactions.retried_on_race
def cancel_run(run_id, reason=CANCELLED_BY_ADMIN):
    """End a queued, syncing or distributing run as cancelled and return it.

    A syncing run's rsync is ended by the executor, which watches for this; slaves
    pulling the run are told to stop. Raises NotFound, or Conflict for a run that ended.
    """
    for _ in range(5):
        run = runs.get_run(run_id)
        state = RunState(run.state)
        if state not in CANCELLABLE_RUN_STATES:
            raise Conflict(f"Run {run_id} already ended ({state.value}); only a queued, syncing or "
                           "distributing run can be cancelled.", {"state": [f"Run {run_id} is {state.value}."]})
        project_name = run.project.name
        told = distribution.cancel_parts(run, reason) if state is RunState.DISTRIBUTING else []
        try:
            runs.move_run(run, RunState.CANCELLED, error=reason)
        except runs.StaleRun:
            continue  # the executor or a report moved it in between: look again
        log.warning("run %s of %s cancelled while %s (%s)", run_id, project_name, state.value, reason)
        if state is RunState.SYNCING:
            runs.wake_executor()  # it ends the pull at once instead of at its next poll
        if told:
            distribution.tell_slaves_to_cancel(run_id, project_name, told)
        return runs.get_run(run_id)
    raise Conflict(f"Run {run_id} is changing state too fast to cancel; try again.")


def cancel_active_run(project, reason):
    """Cancel the project's syncing or distributing run, if it has one."""
    for run in runs.active_runs():
        if run.project_id == project.id:
            try:
                cancel_run(run.id, reason)
            except Conflict:
                db.session.rollback()  # it ended on its own meanwhile
