"""Which master snapshots are needed, from the database: the newest good tree and those slaves still pull."""

import logging

import sqlalchemy as sa
from flask import current_app

from common.states import SlaveRunState
from master import snapshots
from master.db import db
from master.models import Project, Run, SlaveRun

log = logging.getLogger(__name__)

# A part in one of these states may still be pulling its run's snapshot.
OPEN_PARTS = (SlaveRunState.PENDING.value, SlaveRunState.DISPATCHED.value, SlaveRunState.SYNCING.value)


def _data_dir():
    return current_app.config["DATA_DIR"]


def adopted_name(project):
    """What a tree pulled in place becomes: its run's snapshot when it is whole, else ``legacy``."""
    if project.tree_run_id is not None and not project.tree_dirty:
        return str(project.tree_run_id)
    return snapshots.LEGACY_NAME


def adopt_in_place_trees():
    """At scheduler start: every tree an earlier release pulled in place becomes its first snapshot."""
    for project in db.session.execute(sa.select(Project)).scalars():
        try:
            snapshots.adopt_in_place_tree(_data_dir(), project.name, adopted_name(project))
            snapshots.remove_leftovers(_data_dir(), project.name)
        except (snapshots.SnapshotError, OSError) as error:
            log.error("project %s: %s", project.name, error)


def needed(project):
    """Names of the snapshots of ``project`` that must stay: the newest good tree and open parts' runs."""
    open_runs = db.session.execute(
        sa.select(SlaveRun.run_id).join(Run).where(Run.project_id == project.id,
                                                   SlaveRun.state.in_(OPEN_PARTS)).distinct()).scalars()
    return _kept(project.tree_run_id, open_runs)


def _kept(tree_run_id, open_runs):
    keep = {str(run_id) for run_id in open_runs}
    if tree_run_id is not None:
        keep.add(str(tree_run_id))
    return keep


def prune(project):
    """Delete the snapshots of ``project`` no slave needs any more; returns their names."""
    return snapshots.prune(_data_dir(), project.name, needed(project))


def prune_all():
    """``prune`` for every project, from two queries whatever their number."""
    open_runs = {}
    for project_id, run_id in db.session.execute(
            sa.select(Run.project_id, SlaveRun.run_id).join(Run).where(SlaveRun.state.in_(OPEN_PARTS)).distinct()):
        open_runs.setdefault(project_id, []).append(run_id)
    projects = db.session.execute(sa.select(Project.id, Project.name, Project.tree_run_id)).all()
    db.session.commit()   # end the read: deleting trees takes a while
    removed = 0
    for project_id, name, tree_run_id in projects:
        removed += len(snapshots.prune(_data_dir(), name, _kept(tree_run_id, open_runs.get(project_id, ()))))
    return removed
