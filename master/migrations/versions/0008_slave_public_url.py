"""Slaves' public URL: where visitors fetch a host's files, for the visitors' page.

Revision ID: 0008_slave_public_url
Revises: 0007_snapshots_digests
Create Date: 2026-12-01
"""

from alembic import op
import sqlalchemy as sa


revision = "0008_slave_public_url"
down_revision = "0007_snapshots_digests"
branch_labels = None
depends_on = None

# SQLite may rebuild the table; the rebuilt one must keep AUTOINCREMENT (0002).
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


def upgrade():
    with op.batch_alter_table("slaves", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.add_column(sa.Column("public_url", sa.String(length=512), nullable=True))


def downgrade():
    with op.batch_alter_table("slaves", schema=None, table_kwargs=NEVER_REUSE_IDS) as batch_op:
        batch_op.drop_column("public_url")
