"""Slave parts' progress: how far a slave's pull has come, from its progress reports.

Revision ID: 0009_slave_runs_progress
Revises: 0008_slave_public_url
Create Date: 2026-12-01
"""

from alembic import op
import sqlalchemy as sa


revision = "0009_slave_runs_progress"
down_revision = "0008_slave_public_url"
branch_labels = None
depends_on = None

# SQLite may rebuild the table; the rebuilt one must keep AUTOINCREMENT (0002).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def upgrade():
    with op.batch_alter_table("slave_runs", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.add_column(sa.Column("progress", sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table("slave_runs", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.drop_column("progress")
