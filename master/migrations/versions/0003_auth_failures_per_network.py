"""Failed logins counted per network on the host's monotonic clock.

Revision ID: 0003_auth_failures_per_network
Revises: 0002_never_reuse_ids
Create Date: 2026-12-01

Rows of auth_failures only live for one window (a minute by default), so the
table is made anew instead of converted: keyed by network (/24, /64) and the
id of the monotonic clock that timed the window, instead of by address with a
wall-clock start.
"""

import sqlalchemy as sa
from alembic import op


revision = "0003_auth_failures_per_network"
down_revision = "0002_never_reuse_ids"
branch_labels = None
depends_on = None


def upgrade():
    op.drop_table("auth_failures")
    op.create_table(
        "auth_failures",
        sa.Column("network", sa.String(64), primary_key=True),
        sa.Column("clock_id", sa.String(64), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("window_started", sa.Float, nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
    )


def downgrade():
    op.drop_table("auth_failures")
    op.create_table(
        "auth_failures",
        sa.Column("address", sa.String(64), primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("window_start", sa.DateTime(), nullable=False),
    )
