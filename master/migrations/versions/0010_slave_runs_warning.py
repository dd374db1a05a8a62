"""Slave parts' warning: what a slave said of a pull that succeeded all the same (say, that it found
its published tree changed behind its back and pulled in full).

Revision ID: 0010_slave_runs_warning
Revises: 0009_slave_runs_progress
Create Date: 2026-12-01
"""

from alembic import op
import sqlalchemy as sa


revision = "0010_slave_runs_warning"
down_revision = "0009_slave_runs_progress"
branch_labels = None
depends_on = None

# SQLite may rebuild the table; the rebuilt one must keep AUTOINCREMENT (0002).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def upgrade():
    with op.batch_alter_table("slave_runs", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.add_column(sa.Column("warning", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("slave_runs", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.drop_column("warning")
