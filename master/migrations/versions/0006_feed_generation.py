"""Feed generation and last full success.

Revision ID: 0006_feed_generation
Revises: 0005_sync_methods
Create Date: 2026-12-01

The public documents are built once per change: ``feed_state`` holds the one
row whose generation every change moves, and ``projects.feed_generation`` the
generation of each project's newest change, so a reader rebuilds only what
changed. ``projects.last_full_success`` is the end of the newest run every
slave got (tunasync's last_update); existing projects take it from their runs.
"""

from alembic import op
import sqlalchemy as sa

revision = "0006_feed_generation"
down_revision = "0005_sync_methods"
branch_labels = None
depends_on = None


def upgrade():
    feed_state = op.create_table(
        "feed_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("layout", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(feed_state, [{"id": 1, "generation": 0, "layout": 0}])
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_full_success", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("feed_generation", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.create_index(batch_op.f("ix_projects_feed_generation"), ["feed_generation"], unique=False)
    op.execute("UPDATE projects SET last_full_success = (SELECT max(runs.finished_at) FROM runs "
               "WHERE runs.project_id = projects.id AND runs.state = 'success')")


def downgrade():
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_projects_feed_generation"))
        batch_op.drop_column("feed_generation")
        batch_op.drop_column("last_full_success")
    op.drop_table("feed_state")
