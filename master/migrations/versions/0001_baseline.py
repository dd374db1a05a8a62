"""Baseline: the schema as released before migrations existed.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-01

Databases made before migrations existed carry no revision. Upgrading one
runs this revision over it: tables it lacks are created, and columns and
indexes that were added to the code during its history are added, so a
database from any earlier build keeps its rows and reaches this baseline.
"""

from alembic import op
import sqlalchemy as sa

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None

_QUEUED = sa.text("state = 'queued'")
_ACTIVE = sa.text("state IN ('syncing', 'distributing')")

metadata = sa.MetaData()

sa.Table(
    "projects", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("upstream", sa.String(1024), nullable=False),
    sa.Column("schedule", sa.String(128)),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("rsync_options", sa.JSON, nullable=False, server_default="[]"),
    sa.Column("excludes", sa.JSON, nullable=False, server_default="[]"),
    sa.Column("timeout", sa.Integer, nullable=False, server_default="21600"),
    sa.Column("upstream_password", sa.String(256)),
    sa.Column("publish", sa.String(8), nullable=False, server_default="delay"),
    sa.Column("retries", sa.Integer, nullable=False, server_default="3"),
    sa.Column("splay", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_state", sa.String(16)),
    sa.Column("last_success", sa.DateTime),
    sa.Column("last_started", sa.DateTime),
    sa.Column("last_ended", sa.DateTime),
    sa.Column("size", sa.BigInteger),
    sa.Column("tree_run_id", sa.Integer),
    sa.Column("tree_at", sa.DateTime),
    sa.Column("tree_dirty", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("run_totals", sa.JSON),
    sa.Column("last_duration", sa.Float),
    sa.Column("last_bytes", sa.BigInteger),
    sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
    sa.Column("updated_at", sa.DateTime, nullable=False, server_default=sa.func.current_timestamp()),
)

sa.Table(
    "runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("coalesced", sa.Integer, nullable=False, server_default="0"),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
    sa.Column("retry_of", sa.Integer),
    sa.Column("retried_by", sa.Integer),
    sa.Column("not_before", sa.DateTime),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("started_at", sa.DateTime),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("exit_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("warning", sa.Text),
    sa.Column("stats", sa.JSON),
    sa.Column("progress", sa.JSON),
    sa.Column("pid", sa.Integer),
    sa.Index("ix_runs_project_newest", "project_id", "id"),
    sa.Index("ix_runs_state", "state"),
    sa.Index("uq_runs_one_queued", "project_id", unique=True, sqlite_where=_QUEUED, postgresql_where=_QUEUED),
    sa.Index("uq_runs_one_active", "project_id", unique=True, sqlite_where=_ACTIVE, postgresql_where=_ACTIVE),
)

sa.Table(
    "api_tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime),
    sa.Column("revoked_at", sa.DateTime),
    sa.Column("last_used_at", sa.DateTime),
)

sa.Table(
    "slaves", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("url", sa.String(512), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("signing_key", sa.String(128), nullable=False),
    sa.Column("rsync_user", sa.String(80), nullable=False, unique=True),
    sa.Column("rsync_password", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("last_seen", sa.DateTime),
)

sa.Table(
    "slave_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("slave_id", sa.Integer, sa.ForeignKey("slaves.id", ondelete="SET NULL")),
    sa.Column("slave_name", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("dispatched_at", sa.DateTime),
    sa.Column("deadline", sa.DateTime),
    sa.Column("started_at", sa.DateTime),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("exit_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("stats", sa.JSON),
    sa.UniqueConstraint("run_id", "slave_id", name="uq_slave_runs_run_slave"),
    sa.Index("ix_slave_runs_state", "state"),
)

sa.Table(
    "slave_projects", metadata,
    sa.Column("slave_id", sa.Integer, sa.ForeignKey("slaves.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("run_id", sa.Integer),
    sa.Column("synced_at", sa.DateTime),
    sa.Column("last_state", sa.String(16)),
    sa.Column("last_error", sa.Text),
    sa.Column("last_attempt_at", sa.DateTime),
)

sa.Table(
    "nonces", metadata,
    sa.Column("key_id", sa.String(128), primary_key=True),
    sa.Column("nonce", sa.String(128), primary_key=True),
    sa.Column("expires_at", sa.Integer, nullable=False, index=True),
)

sa.Table(
    "auth_failures", metadata,
    sa.Column("address", sa.String(64), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("window_start", sa.DateTime, nullable=False),
)


def upgrade():
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in present:
            table.create(bind)
            continue
        # A table from an earlier build: add what its history added since.
        columns = {column["name"] for column in inspector.get_columns(table.name)}
        missing = [column for column in table.columns if column.name not in columns]
        if missing:
            with op.batch_alter_table(table.name) as batch:
                for column in missing:
                    if not column.nullable and column.server_default is None:
                        raise RuntimeError(f"cannot add the required column {table.name}.{column.name} "
                                           "to existing rows")
                    batch.add_column(sa.Column(column.name, column.type, nullable=column.nullable,
                                               server_default=column.server_default))
        indexes = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)


def downgrade():
    raise NotImplementedError("the baseline cannot be downgraded: restore a backup instead")
