"""Projects: create, read, change and remove mirrored projects."""

import logging

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from common.errors import Conflict, NotFound
from common import runlogs
from master.db import db
from master.models import Project
from master.paths import logs_root
from master.seams import now
from master.services import cancels, runs

log = logging.getLogger(__name__)


def default_public_path(name):
    return f"/{name}"


def list_projects():
    return db.session.execute(sa.select(Project).order_by(Project.name)).scalars().all()


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
    if data.get("public_path") is None:
        data["public_path"] = default_public_path(data["name"])
    project = Project(**data, created_at=stamp, updated_at=stamp)
    db.session.add(project)
    try:
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
        if field == "public_path" and value is None:
            value = default_public_path(project.name)
        setattr(project, field, value)
    project.updated_at = now()
    db.session.commit()
    if changes.get("enabled") is False:
        runs.cancel_queued_runs(project)
    log.info("project %s changed: %s", project.name, ", ".join(sorted(changes)) or "nothing")
    return project


def delete_project(name, force=False):
    """Remove a project, its runs and logs; its tree in DATA_DIR stays on disk.

    With ``force``, a run in progress is cancelled first. Raises NotFound, or Conflict while a run
    of it is in progress and ``force`` is not given.
    """
    project = get_project(name)
    if runs.has_active_run(project.id):
        if not force:
            raise Conflict(f"Project {name!r} has a run in progress; cancel it (POST /api/v1/runs/<id>/cancel) "
                           "or delete with ?force=true, which cancels it.")
        cancels.cancel_active_run(project, "cancelled: the project was removed")
        project = get_project(name)
    runs.cancel_queued_runs(project)
    db.session.delete(project)
    db.session.commit()
    runlogs.remove_logs(logs_root(), name)
    log.info("project %s deleted", name)
