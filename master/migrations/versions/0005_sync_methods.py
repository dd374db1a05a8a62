"""Sync methods, hooks, upstream push, unchanged-upstream markers and trace files.

Revision ID: 0005_sync_methods
Revises: 0004_visitor_fields
Create Date: 2026-12-01

Projects gain method, stage1_profile, command, command_args,
transient_exit_codes, hooks, upstream_marker (with the internal
marker_digest), trace and push_token_hash; runs gain skipped. Existing
projects keep pulling as before: method rsync, no hooks, no marker, no trace.
"""

from alembic import op
import sqlalchemy as sa

revision = "0005_sync_methods"
down_revision = "0004_visitor_fields"
branch_labels = None
depends_on = None


# Should batch mode rebuild a table on SQLite, it keeps AUTOINCREMENT (0002): ids are never reused.
KEEP_IDS = {"sqlite_autoincrement": True}


def upgrade():
    with op.batch_alter_table("projects", schema=None, table_kwargs=KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("method", sa.String(length=16), server_default="rsync", nullable=False))
        batch_op.add_column(sa.Column("stage1_profile", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("command", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("command_args", sa.JSON(), server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("transient_exit_codes", sa.JSON(), server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("hooks", sa.JSON(), server_default="{}", nullable=False))
        batch_op.add_column(sa.Column("upstream_marker", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("marker_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("trace", sa.String(length=8), server_default="none", nullable=False))
        batch_op.add_column(sa.Column("push_token_hash", sa.String(length=64), nullable=True))
    with op.batch_alter_table("runs", schema=None, table_kwargs=KEEP_IDS) as batch_op:
        batch_op.add_column(sa.Column("skipped", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade():
    with op.batch_alter_table("runs", schema=None, table_kwargs=KEEP_IDS) as batch_op:
        batch_op.drop_column("skipped")
    with op.batch_alter_table("projects", schema=None, table_kwargs=KEEP_IDS) as batch_op:
        for column in ("push_token_hash", "trace", "marker_digest", "upstream_marker", "hooks",
                       "transient_exit_codes", "command_args", "command", "stage1_profile", "method"):
            batch_op.drop_column(column)
