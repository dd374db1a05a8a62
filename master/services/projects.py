"""Projects: create, read, change and remove mirrored projects."""

import json
import logging

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from common.errors import Conflict, NotFound
from common import runlogs
from master.db import db
from master.models import Project
from master.paths import logs_root
from master.schemas import ProjectSchema
from master.seams import now
from master.services import readmodel, runs

log = logging.getLogger(__name__)
_LISTED = ProjectSchema()


def list_projects():
    return db.session.execute(sa.select(Project).order_by(Project.name)).scalars().all()


def project_piece(snapshot, model):
    """One project as GET /api/v1/projects lists it (ProjectSchema), as JSON: built once per change."""
    return json.dumps(_LISTED.dump(snapshot.row), separators=(",", ":")).encode()


def list_projects_page(limit, after=None):
    """(JSON list of up to ``limit`` projects by name after ``after``, the name to continue after or None)."""
    pieces, following = readmodel.current_model().page("projects", limit, after)
    return b"[" + b",".join(pieces) + b"]", following


def get_project(name):
    """Raises NotFound."""
    project = db.session.execute(sa.select(Project).where(Project.name == name)).scalar_one_or_none()
    if project is None:
        raise NotFound(f"There is no project {name!r}.")
    return project


def create_project(data):
    """Raises Conflict when the name is taken."""
    stamp = now()
    data = dict(data)
    if data.get("timeout") is None:
        data["timeout"] = current_app.config["DEFAULT_TIMEOUT"]
    project = Project(**data, created_at=stamp, updated_at=stamp)
    db.session.add(project)
    try:
        db.session.flush()
        readmodel.note_changed([project.id])
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(f"A project named {data['name']!r} already exists.",
                       {"name": ["A project with this name already exists."]}) from None
    log.info("project %s created (upstream %s)", project.name, project.upstream)
    return project


def update_project(name, changes):
    """Apply a partial change; disabling cancels queued runs. Raises NotFound."""
    project = get_project(name)
    for field, value in changes.items():
        if field == "timeout" and value is None:
            value = current_app.config["DEFAULT_TIMEOUT"]
        setattr(project, field, value)
    project.updated_at = now()
    readmodel.note_changed([project.id])
    db.session.commit()
    if changes.get("enabled") is False:
        runs.cancel_queued_runs(project)
    log.info("project %s changed: %s", project.name, ", ".join(sorted(changes)) or "nothing")
    return project


def delete_project(name):
    """Remove a project, its runs and logs; its tree in DATA_DIR stays on disk.

    Raises NotFound, or Conflict while a run of it is syncing.
    """
    project = get_project(name)
    if runs.has_active_run(project.id):
        raise Conflict(f"Project {name!r} has a run in progress; disable it and delete it once the run ends.")
    runs.cancel_queued_runs(project)
    db.session.delete(project)
    readmodel.note_changed(layout=True)
    db.session.commit()
    runlogs.remove_logs(logs_root(), name)
    log.info("project %s deleted", name)
