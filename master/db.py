"""The database handle, its column types and schema creation."""

import datetime
import fcntl
import os

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy

from master.paths import state_dir

db = SQLAlchemy()


class UTCDateTime(sa.types.TypeDecorator):
    """Stores naive UTC, hands back aware UTC, whatever the database does with zones."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(datetime.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=datetime.timezone.utc)


def _tune_sqlite(dbapi_connection, connection_record):
    # WAL lets API workers read while the executor writes; the busy timeout
    # makes concurrent writers from several processes wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def init_database(app, create=True):
    """Attach the engine tuning, then create a new database or check an existing one's revision.

    Raises ConfigError in one line when the database is behind the code (run
    ``python -m master db upgrade``) or, with ``create`` false, when there is none.
    """
    from master import schema
    engine = db.engine
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if engine.dialect.name == "sqlite" and engine.url.database:
        # The database holds upstream passwords and slave keys: owner-only from the first byte.
        os.close(os.open(engine.url.database, os.O_CREAT | os.O_RDWR, 0o600))
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _tune_sqlite)
        engine.dispose()
    lock_path = os.path.join(state_dir(app.config["DATA_DIR"]), "schema.lock")
    with open(lock_path, "a") as lock:
        # Several gunicorn workers start together; only one creates the schema at a time.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with engine.begin() as connection:
                return schema.check_or_create(connection, db.metadata, url, create=create)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
