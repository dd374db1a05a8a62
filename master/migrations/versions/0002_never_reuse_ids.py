"""Never reuse ids: AUTOINCREMENT on SQLite's integer-keyed tables.

Revision ID: 0002_never_reuse_ids
Revises: 0001_baseline
Create Date: 2026-12-01

Without AUTOINCREMENT, SQLite hands out the highest ids again once their
rows are deleted, and slaves that remember a run id then refuse a new run
under it. The tables are rebuilt with their rows; AUTOINCREMENT then counts
on from the highest id they hold. PostgreSQL's sequences never reuse ids, so
nothing changes there.
"""

from alembic import op

revision = "0002_never_reuse_ids"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

# Parents before children, so each rebuilt table's foreign keys name a table that exists.
TABLES = ("projects", "slaves", "api_tokens", "runs", "slave_runs")


def upgrade():
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass


def downgrade():
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in reversed(TABLES):
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": False}):
            pass
