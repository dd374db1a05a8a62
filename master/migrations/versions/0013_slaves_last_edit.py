"""Slaves' last edit: the last edit a slave saw to one of its published trees behind its back, and
when a pull had the run's tree public again, from its heartbeats.

Revision ID: 0013_slaves_last_edit
Revises: 0012_projects_last_full_pull
Create Date: 2026-12-03
"""

from alembic import op
import sqlalchemy as sa


revision = "0013_slaves_last_edit"
down_revision = "0012_projects_last_full_pull"
branch_labels = None
depends_on = None

# SQLite may rebuild the table; the rebuilt one must keep AUTOINCREMENT (0002).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def upgrade():
    with op.batch_alter_table("slaves", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.add_column(sa.Column("last_edit", sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table("slaves", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.drop_column("last_edit")
