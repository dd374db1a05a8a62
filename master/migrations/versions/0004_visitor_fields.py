"""Project fields for visitors (description, help_url, public_path) and forced runs.

Revision ID: 0004_visitor_fields
Revises: 0003_auth_failures_per_network
Create Date: 2026-12-01

Existing projects get public_path "/<name>", the default new ones get too.
A forced run starts even when MAX_CONCURRENT_SYNCS pulls already run;
existing runs are not forced.
"""

from alembic import op
import sqlalchemy as sa


revision = "0004_visitor_fields"
down_revision = "0003_auth_failures_per_network"
branch_labels = None
depends_on = None

# SQLite may rebuild a table to add a NOT NULL column; the rebuilt one must keep AUTOINCREMENT (0002).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def upgrade():
    with op.batch_alter_table("projects", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.add_column(sa.Column("description", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("help_url", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("public_path", sa.String(length=256), nullable=True))
    projects = sa.table("projects", sa.column("name", sa.String), sa.column("public_path", sa.String))
    op.execute(projects.update().where(projects.c.public_path.is_(None))
               .values(public_path=sa.literal("/") + projects.c.name))

    with op.batch_alter_table("runs", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.add_column(sa.Column("force", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade():
    with op.batch_alter_table("runs", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.drop_column("force")

    with op.batch_alter_table("projects", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.drop_column("public_path")
        batch_op.drop_column("help_url")
        batch_op.drop_column("description")
