"""Alembic's environment: runs on the connection master.schema hands it, never on its own URL."""

from alembic import context

from master.db import UTCDateTime, db


def render_item(kind, obj, autogen_context):
    # UTCDateTime stores a plain DATETIME: revisions need not import the app's types.
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    return False


config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=db.metadata,
    # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    render_item=render_item,
)
with context.begin_transaction():
    context.run_migrations()
