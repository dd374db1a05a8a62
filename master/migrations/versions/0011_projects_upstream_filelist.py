"""Projects' upstream_filelist: the upstream's list of its tree (Fedora's fullfiletimelist-<module>), from
which a pull transfers only what changed.

Revision ID: 0011_projects_upstream_filelist
Revises: 0010_slave_runs_warning
Create Date: 2026-12-03
"""

from alembic import op
import sqlalchemy as sa


revision = "0011_projects_upstream_filelist"
down_revision = "0010_slave_runs_warning"
branch_labels = None
depends_on = None

# SQLite may rebuild the table; the rebuilt one must keep AUTOINCREMENT (0002).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def upgrade():
    with op.batch_alter_table("projects", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.add_column(sa.Column("upstream_filelist", sa.String(length=255), nullable=True))


def downgrade():
    with op.batch_alter_table("projects", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.drop_column("upstream_filelist")
