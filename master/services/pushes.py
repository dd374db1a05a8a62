"""Upstream push: a project's own token queues a run, as Debian's runmirrors or a webhook would."""

import hmac
import logging

import sqlalchemy as sa

from common.errors import Unauthorized
from common.states import Trigger
from master.db import db
from master.models import Project
from master.services import runs
from master.services.tokens import hash_token

log = logging.getLogger(__name__)

REFUSED = "This push token is not valid for this project."


def accept_push(name, token):
    """Queue a run of project ``name`` with trigger ``push``, or fold it into the queued one.

    The same Unauthorized answers an unknown project, a project without a push
    token and a wrong token, so a caller learns nothing about which projects exist.
    Raises Unauthorized, or Conflict when the project is disabled.
    """
    project = db.session.execute(sa.select(Project).where(Project.name == name)).scalar_one_or_none()
    expected = project.push_token_hash if project is not None else None
    offered = hash_token(token) if token else ""
    if not expected or not hmac.compare_digest(expected, offered):
        raise Unauthorized(REFUSED)
    run, created = runs.request_sync(project, Trigger.PUSH)
    log.info("push for %s: %s run %s", name, "queued" if created else "folded into", run.id)
    return run
