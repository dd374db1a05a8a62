"""Projects: create, read, change and remove mirrored projects."""

import json
import logging

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from common import hooks, runlogs
from common.errors import Conflict, NotFound, ValidationFailed
from common.methods import COMMAND, RSYNC, TWO_STAGE
from common.validation import is_rsync_url
from master.db import db
from master.models import Project
from master.paths import logs_root
from master.schemas import ProjectSchema
from master.seams import now
from master.services import cancels, readmodel, runs
from master.services.tokens import hash_token

# The fields whose values decide together whether a project can be pulled.
CHECKED_TOGETHER = ("method", "upstream", "stage1_profile", "command", "hooks", "upstream_marker",
                    "upstream_filelist")

log = logging.getLogger(__name__)
_LISTED = ProjectSchema()


def default_public_path(name):
    return f"/{name}"


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
    data = _with_push_token(dict(data))
    if data.get("timeout") is None:
        data["timeout"] = current_app.config["DEFAULT_TIMEOUT"]
    if data.get("public_path") is None:
        data["public_path"] = default_public_path(data["name"])
    check_fields_together(data)
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
    changes = _with_push_token(dict(changes))
    if any(field in changes for field in CHECKED_TOGETHER):
        check_fields_together({field: changes.get(field, getattr(project, field)) for field in CHECKED_TOGETHER})
    for field, value in changes.items():
        if field == "timeout" and value is None:
            value = current_app.config["DEFAULT_TIMEOUT"]
        if field == "public_path" and value is None:
            value = default_public_path(project.name)
        setattr(project, field, value)
    project.marker_digest = None   # changed settings: the next pull is a full one
    project.updated_at = now()
    readmodel.note_changed([project.id])
    db.session.commit()
    if changes.get("enabled") is False:
        runs.cancel_queued_runs(project)
    log.info("project %s changed: %s", project.name, ", ".join(sorted(changes)) or "nothing")
    return project


def _with_push_token(data):
    """Swap a plain ``push_token`` for its hash (null removes the token)."""
    if "push_token" in data:
        token = data.pop("push_token")
        data["push_token_hash"] = hash_token(token) if token else None
    return data


def check_fields_together(values):
    """Check what no single field can: the method's needs, names of scripts and hooks on this master.

    Raises ValidationFailed naming each field (``hooks.pre_sync`` for a hook).
    """
    config = current_app.config
    method = values.get("method") or "rsync"
    errors = {}
    if method != COMMAND and not is_rsync_url(values.get("upstream") or ""):
        errors["upstream"] = [f"Method {method} pulls with rsync: the upstream must be an rsync:// URL."]
    if method == TWO_STAGE and not values.get("stage1_profile"):
        errors["stage1_profile"] = ["Method two-stage needs a stage1_profile, such as 'debian'."]
    if method == COMMAND:
        try:
            hooks.executable_in(config["SYNC_SCRIPTS_DIR"], values.get("command") or "")
        except ValueError as error:
            errors["command"] = [_sentence("SYNC_SCRIPTS_DIR", values.get("command"), error)]
        if values.get("upstream_marker"):
            errors["upstream_marker"] = ["Only rsync methods can fetch a marker first."]
    if method != RSYNC and values.get("upstream_filelist"):
        errors["upstream_filelist"] = [f"Only method rsync pulls by the upstream's file list, not {method}."]
    for hook, name in (values.get("hooks") or {}).items():
        if name:
            try:
                hooks.executable_in(config["HOOKS_DIR"], name)
            except ValueError as error:
                errors.setdefault("hooks", {})[hook] = [_sentence("HOOKS_DIR", name, error)]
    if errors:
        field, messages = next(iter(errors.items()))
        if isinstance(messages, dict):
            hook, messages = next(iter(messages.items()))
            field = f"{field}.{hook}"
        raise ValidationFailed(f"Invalid request: {field}: {messages[0].rstrip('.')}.", errors)


def _sentence(setting, name, error):
    if not name:
        return "Name an executable of SYNC_SCRIPTS_DIR."
    if not current_app.config[setting]:
        return f"{setting} is not set on this master, so no {name!r} can be run."
    return f"There is no executable {name!r} in {setting}."


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
    readmodel.note_changed(layout=True)
    db.session.commit()
    runlogs.remove_logs(logs_root(), name)
    log.info("project %s deleted", name)
