"""Tables of the master: projects, their runs, and API tokens."""

import sqlalchemy as sa

from common.states import RunState
from master.db import UTCDateTime, db
from master.schedules import next_fire_time
from master.seams import now

_QUEUED = sa.text("state = 'queued'")
_SYNCING = sa.text("state = 'syncing'")


# Ids are never reused, whatever is deleted: slaves and logs know runs by id (SQLite
# otherwise hands out the highest ids again once their rows are gone).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


class Project(db.Model):
    __tablename__ = "projects"
    __table_args__ = NEVER_REUSE_IDS

    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(64), unique=True, nullable=False)
    upstream = sa.Column(sa.String(1024), nullable=False)
    schedule = sa.Column(sa.String(128))
    enabled = sa.Column(sa.Boolean, nullable=False, default=True)
    rsync_options = sa.Column(sa.JSON, nullable=False, default=list)
    excludes = sa.Column(sa.JSON, nullable=False, default=list)
    timeout = sa.Column(sa.Integer, nullable=False)
    upstream_password = sa.Column(sa.String(256))
    # How slaves publish a new tree: "delay" (rsync --delay-updates in place) or
    # "atomic" (a snapshot swapped in by renaming one symlink).
    publish = sa.Column(sa.String(8), nullable=False, default="delay")
    # Further tries after a transient upstream failure, with exponential backoff.
    retries = sa.Column(sa.Integer, nullable=False, default=3)
    # Up to this many seconds of random delay on each scheduled start.
    splay = sa.Column(sa.Integer, nullable=False, default=0)
    # For visitors: a short text, a help page, and where the files are on the site
    # (SITE_URL + public_path); services fill public_path with "/<name>" when not given.
    description = sa.Column(sa.String(256))
    help_url = sa.Column(sa.String(512))
    public_path = sa.Column(sa.String(256))
    # How the upstream is pulled: "rsync", "two-stage" (ftpsync's two stages, with the
    # stage-1 filter list ``stage1_profile``) or "command" (the script ``command`` of
    # SYNC_SCRIPTS_DIR, run with ``command_args``).
    method = sa.Column(sa.String(16), nullable=False, default="rsync", server_default="rsync")
    stage1_profile = sa.Column(sa.String(32))
    command = sa.Column(sa.String(128))
    command_args = sa.Column(sa.JSON, nullable=False, default=list, server_default="[]")
    # Exit codes of ``command`` worth a retry, like rsync's network errors.
    transient_exit_codes = sa.Column(sa.JSON, nullable=False, default=list, server_default="[]")
    # {"pre_sync": name, "post_success": name, "post_failure": name}, executables in HOOKS_DIR.
    hooks = sa.Column(sa.JSON, nullable=False, default=dict, server_default="{}")
    # A file of the upstream fetched first; unchanged since the last good pull, the pull is skipped.
    upstream_marker = sa.Column(sa.String(255))
    # The upstream's list of its tree (Fedora's fullfiletimelist-<module>): a pull transfers what it says changed.
    upstream_filelist = sa.Column(sa.String(255))
    # SHA-256 of the marker as it was before the last good pull.
    marker_digest = sa.Column(sa.String(64))
    # When the last good pull of an upstream_filelist project that compared the whole tree with
    # upstream (a plain rsync, not the listed changes only) started: one is due every FILELIST_FULL_INTERVAL.
    last_full_pull = sa.Column(UTCDateTime)
    # "debian": write ftpsync's trace files after each pull, on the master and on every slave.
    trace = sa.Column(sa.String(8), nullable=False, default="none", server_default="none")
    # SHA-256 of the token upstream presents to POST /api/v1/projects/<name>/push.
    push_token_hash = sa.Column(sa.String(64))
    # Read-only fields kept up to date by services.runs.move_run, so that
    # listing projects never scans run history.
    last_state = sa.Column(sa.String(16))
    last_success = sa.Column(UTCDateTime)
    last_started = sa.Column(UTCDateTime)
    last_ended = sa.Column(UTCDateTime)
    size = sa.Column(sa.BigInteger)
    # Newest run whose upstream pull succeeded: the tree DATA_DIR/<name> holds,
    # which catching-up slaves get.
    tree_run_id = sa.Column(sa.Integer)
    tree_at = sa.Column(UTCDateTime)  # when that pull finished
    # Set by earlier releases, which pulled in place, when a pull died after it may have changed
    # DATA_DIR/<name>; pulls into snapshots never set it, and the next good pull clears it.
    tree_dirty = sa.Column(sa.Boolean, nullable=False, default=False)
    # Finished runs by final state ({"success": 12, "failed": 1}), for metrics without counting history.
    run_totals = sa.Column(sa.JSON)
    # Seconds and bytes of the newest finished run.
    last_duration = sa.Column(sa.Float)
    last_bytes = sa.Column(sa.BigInteger)
    # End of the newest run every slave got (partial runs do not count): tunasync's last_update.
    last_full_success = sa.Column(UTCDateTime)
    # The feed generation (FeedState.generation) of the newest change to what the public
    # documents show of this project; readers rebuild the entries changed since their build.
    feed_generation = sa.Column(sa.BigInteger, nullable=False, default=0, server_default="0", index=True)
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


class FeedState(db.Model):
    """One row: counters that say when the public documents changed, shared by every process.

    ``generation`` moves on every change (the changed projects carry its new value);
    ``layout`` moves when every entry changes at once (a slave added or removed, a project deleted).
    """

    __tablename__ = "feed_state"

    id = sa.Column(sa.Integer, primary_key=True)
    generation = sa.Column(sa.BigInteger, nullable=False, default=0, server_default="0")
    layout = sa.Column(sa.BigInteger, nullable=False, default=0, server_default="0")


# The row exists from the start, so a change only ever updates it.
sa.event.listen(FeedState.__table__, "after_create",
                sa.DDL("INSERT INTO feed_state (id, generation, layout) VALUES (1, 0, 0)"))


class Run(db.Model):
    __tablename__ = "runs"

    id = sa.Column(sa.Integer, primary_key=True)
    project_id = sa.Column(sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    trigger = sa.Column(sa.String(16), nullable=False)
    state = sa.Column(sa.String(16), nullable=False, default=RunState.QUEUED.value)
    # How many further triggers were folded into this run while it was queued.
    coalesced = sa.Column(sa.Integer, nullable=False, default=0)
    # 1 for a first try; a retry of run ``retry_of`` has the next number and
    # waits in the queue until ``not_before``.
    attempt = sa.Column(sa.Integer, nullable=False, default=1)
    retry_of = sa.Column(sa.Integer)
    retried_by = sa.Column(sa.Integer)  # the run that tries again after this one failed
    not_before = sa.Column(UTCDateTime)
    # Started even when MAX_CONCURRENT_SYNCS pulls already run (mirrorctl projects sync --force).
    force = sa.Column(sa.Boolean, nullable=False, default=False, server_default=sa.false())
    created_at = sa.Column(UTCDateTime, nullable=False)
    started_at = sa.Column(UTCDateTime)
    finished_at = sa.Column(UTCDateTime)
    exit_code = sa.Column(sa.Integer)
    error = sa.Column(sa.Text)
    warning = sa.Column(sa.Text)
    stats = sa.Column(sa.JSON)
    # Latest whole-transfer progress of the upstream pull (bytes, percent, rate, eta).
    progress = sa.Column(sa.JSON)
    # The upstream marker was unchanged: nothing was pulled, no slave was ordered.
    skipped = sa.Column(sa.Boolean, nullable=False, default=False, server_default=sa.false())
    # Process group of the running rsync, so a restarted executor can end an orphan.
    pid = sa.Column(sa.Integer)
    # sha256 of the manifest of the tree this run pulled (common/digests.py); slaves report theirs.
    digest = sa.Column(sa.String(80))

    project = db.relationship("Project", back_populates="runs")
    slave_runs = db.relationship("SlaveRun", back_populates="run", passive_deletes=True,
                                 order_by="(SlaveRun.slave_name, SlaveRun.id)")

    __table_args__ = (
        sa.Index("ix_runs_project_newest", "project_id", "id"),
        sa.Index("ix_runs_state", "state"),
        # At most one queued and one pulling run per project, whichever process asks. Runs still
        # distributing do not count: the next pull writes a new snapshot, not their tree.
        sa.Index("uq_runs_one_queued", "project_id", unique=True,
                 sqlite_where=_QUEUED, postgresql_where=_QUEUED),
        sa.Index("uq_runs_one_syncing", "project_id", unique=True,
                 sqlite_where=_SYNCING, postgresql_where=_SYNCING),
        NEVER_REUSE_IDS,
    )

    @property
    def project_name(self):
        return self.project.name

    @property
    def slaves(self):
        return self.slave_runs


class ApiToken(db.Model):
    __tablename__ = "api_tokens"
    __table_args__ = NEVER_REUSE_IDS

    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(64), nullable=False)
    role = sa.Column(sa.String(16), nullable=False)
    token_hash = sa.Column(sa.String(64), unique=True, nullable=False)
    created_at = sa.Column(UTCDateTime, nullable=False)
    expires_at = sa.Column(UTCDateTime)
    revoked_at = sa.Column(UTCDateTime)
    last_used_at = sa.Column(UTCDateTime)


class Slave(db.Model):
    __tablename__ = "slaves"
    __table_args__ = NEVER_REUSE_IDS

    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(64), unique=True, nullable=False)
    url = sa.Column(sa.String(512), nullable=False)
    enabled = sa.Column(sa.Boolean, nullable=False, default=True)
    # Per-slave secrets issued at enrollment; never returned by the admin API.
    signing_key = sa.Column(sa.String(128), nullable=False)
    rsync_user = sa.Column(sa.String(80), unique=True, nullable=False)
    rsync_password = sa.Column(sa.String(128), nullable=False)
    # Where visitors fetch this host's files (its public_path joins it), set by an admin; None: unknown.
    public_url = sa.Column(sa.String(512))
    created_at = sa.Column(UTCDateTime, nullable=False)
    last_seen = sa.Column(UTCDateTime)
    # The last edit the slave saw to one of its published trees behind its back (common.wire.EditSchema,
    # times as ISO 8601 text), from its heartbeats; None: none seen since it enrolled.
    last_edit = sa.Column(sa.JSON)


class SlaveRun(db.Model):
    """One slave's part in one run: its order, its pull and its report."""

    __tablename__ = "slave_runs"

    id = sa.Column(sa.Integer, primary_key=True)
    run_id = sa.Column(sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False)
    slave_id = sa.Column(sa.Integer, sa.ForeignKey("slaves.id", ondelete="SET NULL"))
    # Kept so that run history still names a slave after it was deleted.
    slave_name = sa.Column(sa.String(64), nullable=False)
    state = sa.Column(sa.String(16), nullable=False)
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    dispatched_at = sa.Column(UTCDateTime)
    deadline = sa.Column(UTCDateTime)
    # A part whose slave is not heard from (a report, a progress report or a heartbeat) by then
    # ends as timeout; each one moves it on by SLAVE_START_TIMEOUT. ``deadline`` caps the whole pull.
    start_deadline = sa.Column(UTCDateTime)
    started_at = sa.Column(UTCDateTime)
    finished_at = sa.Column(UTCDateTime)
    exit_code = sa.Column(sa.Integer)
    error = sa.Column(sa.Text)
    warning = sa.Column(sa.Text)  # what the slave said of a pull that succeeded all the same
    stats = sa.Column(sa.JSON)
    digest = sa.Column(sa.String(80))  # of the tree the slave published
    # Latest whole-transfer progress the slave reported while it pulled (bytes, percent, rate, eta).
    progress = sa.Column(sa.JSON)

    run = db.relationship("Run", back_populates="slave_runs")

    __table_args__ = (
        sa.UniqueConstraint("run_id", "slave_id", name="uq_slave_runs_run_slave"),
        sa.Index("ix_slave_runs_state", "state"),
        NEVER_REUSE_IDS,
    )

    @property
    def slave(self):
        return self.slave_name


class SlaveProject(db.Model):
    """Which run's tree a slave holds for a project, and since when (its freshness)."""

    __tablename__ = "slave_projects"

    slave_id = sa.Column(sa.Integer, sa.ForeignKey("slaves.id", ondelete="CASCADE"), primary_key=True)
    project_id = sa.Column(sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    run_id = sa.Column(sa.Integer)         # run whose tree the slave holds; None before its first success
    synced_at = sa.Column(UTCDateTime)     # when it finished pulling that tree
    last_state = sa.Column(sa.String(16))  # outcome of its newest attempt
    last_error = sa.Column(sa.Text)
    last_attempt_at = sa.Column(UTCDateTime)

    slave = db.relationship("Slave")


class Nonce(db.Model):
    """Nonces of signed requests seen within the signature window: a repeat is a replay."""

    __tablename__ = "nonces"

    key_id = sa.Column(sa.String(128), primary_key=True)
    nonce = sa.Column(sa.String(128), primary_key=True)
    expires_at = sa.Column(sa.Integer, nullable=False, index=True)


class AuthFailure(db.Model):
    """Failed authentications per client network in the current window, shared by every worker.

    The window runs on the monotonic clock of the host that counted (``clock_id``
    names it), so a step of the wall clock neither lengthens nor ends a lockout.
    """

    __tablename__ = "auth_failures"

    network = sa.Column(sa.String(64), primary_key=True)   # 192.0.2.0/24, 2001:db8::/64, or "unknown"
    clock_id = sa.Column(sa.String(64), primary_key=True)
    count = sa.Column(sa.Integer, nullable=False)
    window_started = sa.Column(sa.Float, nullable=False)  # seconds on that host's monotonic clock
    seen_at = sa.Column(UTCDateTime, nullable=False)      # wall clock, only to purge rows of gone hosts
