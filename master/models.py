"""Tables of the master: projects, their runs, and API tokens."""

import sqlalchemy as sa

from common.states import RunState
from master.db import UTCDateTime, db
from master.schedules import next_fire_time
from master.seams import now

_QUEUED = sa.text("state = 'queued'")
_ACTIVE = sa.text("state IN ('syncing', 'distributing')")


class Project(db.Model):
    __tablename__ = "projects"

    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(64), unique=True, nullable=False)
    upstream = sa.Column(sa.String(1024), nullable=False)
    schedule = sa.Column(sa.String(128))
    enabled = sa.Column(sa.Boolean, nullable=False, default=True)
    rsync_options = sa.Column(sa.JSON, nullable=False, default=list)
    excludes = sa.Column(sa.JSON, nullable=False, default=list)
    timeout = sa.Column(sa.Integer, nullable=False)
    upstream_password = sa.Column(sa.String(256))
    # Read-only fields kept up to date by services.runs.move_run, so that
    # listing projects never scans run history.
    last_state = sa.Column(sa.String(16))
    last_success = sa.Column(UTCDateTime)
    last_started = sa.Column(UTCDateTime)
    last_ended = sa.Column(UTCDateTime)
    size = sa.Column(sa.BigInteger)
    created_at = sa.Column(UTCDateTime, nullable=False)
    updated_at = sa.Column(UTCDateTime, nullable=False)

    runs = db.relationship("Run", back_populates="project", passive_deletes=True, lazy="dynamic")

    @property
    def status(self):
        if not self.enabled:
            return "disabled"
        return self.last_state or "none"

    @property
    def next_run(self):
        if not self.enabled or not self.schedule:
            return None
        return next_fire_time(self.schedule, now())


class Run(db.Model):
    __tablename__ = "runs"

    id = sa.Column(sa.Integer, primary_key=True)
    project_id = sa.Column(sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    trigger = sa.Column(sa.String(16), nullable=False)
    state = sa.Column(sa.String(16), nullable=False, default=RunState.QUEUED.value)
    # How many further triggers were folded into this run while it was queued.
    coalesced = sa.Column(sa.Integer, nullable=False, default=0)
    created_at = sa.Column(UTCDateTime, nullable=False)
    started_at = sa.Column(UTCDateTime)
    finished_at = sa.Column(UTCDateTime)
    exit_code = sa.Column(sa.Integer)
    error = sa.Column(sa.Text)
    warning = sa.Column(sa.Text)
    stats = sa.Column(sa.JSON)
    # Process group of the running rsync, so a restarted executor can end an orphan.
    pid = sa.Column(sa.Integer)

    project = db.relationship("Project", back_populates="runs")

    __table_args__ = (
        sa.Index("ix_runs_project_newest", "project_id", "id"),
        sa.Index("ix_runs_state", "state"),
        # At most one queued and one active run per project, whichever process asks.
        sa.Index("uq_runs_one_queued", "project_id", unique=True,
                 sqlite_where=_QUEUED, postgresql_where=_QUEUED),
        sa.Index("uq_runs_one_active", "project_id", unique=True,
                 sqlite_where=_ACTIVE, postgresql_where=_ACTIVE),
    )

    @property
    def project_name(self):
        return self.project.name


class ApiToken(db.Model):
    __tablename__ = "api_tokens"

    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(64), nullable=False)
    role = sa.Column(sa.String(16), nullable=False)
    token_hash = sa.Column(sa.String(64), unique=True, nullable=False)
    created_at = sa.Column(UTCDateTime, nullable=False)
    expires_at = sa.Column(UTCDateTime)
    revoked_at = sa.Column(UTCDateTime)
    last_used_at = sa.Column(UTCDateTime)
