"""Snapshots and verified fan-out: run and part digests, a start deadline, one pulling run per project.

Revision ID: 0007_snapshots_digests
Revises: 0006_feed_generation
Create Date: 2026-12-01

Each pull writes a snapshot of its own, so a run still distributing no longer
blocks the next pull of its project: the unique index that allowed one
syncing-or-distributing run per project now allows one syncing run.
``runs.digest`` is the digest of the tree a run pulled and
``slave_runs.digest`` the one each slave reports of what it published;
``slave_runs.start_deadline`` is when a part whose slave went silent ends.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_snapshots_digests"
down_revision = "0006_feed_generation"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("state IN ('syncing', 'distributing')")
_SYNCING = sa.text("state = 'syncing'")


def upgrade():
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("digest", sa.String(length=80), nullable=True))
        batch_op.drop_index("uq_runs_one_active", sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)
        batch_op.create_index("uq_runs_one_syncing", ["project_id"], unique=True,
                              sqlite_where=_SYNCING, postgresql_where=_SYNCING)
    with op.batch_alter_table("slave_runs") as batch_op:
        batch_op.add_column(sa.Column("start_deadline", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("digest", sa.String(length=80), nullable=True))


def downgrade():
    with op.batch_alter_table("slave_runs") as batch_op:
        batch_op.drop_column("digest")
        batch_op.drop_column("start_deadline")
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_index("uq_runs_one_syncing", sqlite_where=_SYNCING, postgresql_where=_SYNCING)
        batch_op.create_index("uq_runs_one_active", ["project_id"], unique=True,
                              sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)
        batch_op.drop_column("digest")
