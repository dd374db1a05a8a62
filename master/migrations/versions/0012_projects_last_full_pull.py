"""Projects' last_full_pull: when an upstream_filelist project last compared its whole tree with upstream.

Revision ID: 0012_projects_last_full_pull
Revises: 0011_projects_upstream_filelist
Create Date: 2026-12-03
"""

from alembic import op
import sqlalchemy as sa


revision = "0012_projects_last_full_pull"
down_revision = "0011_projects_upstream_filelist"
branch_labels = None
depends_on = None

# SQLite may rebuild the table; the rebuilt one must keep AUTOINCREMENT (0002).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def upgrade():
    with op.batch_alter_table("projects", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.add_column(sa.Column("last_full_pull", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("projects", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.drop_column("last_full_pull")
