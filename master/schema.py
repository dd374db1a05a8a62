"""The database's schema revision: create a new database, check one before serving, upgrade one.

Revisions live in master/migrations/versions (Alembic). A new, empty
database is created from the models and stamped with the newest revision; an
existing one must be at that revision, or every process refuses to start
with one line saying to run ``python -m master db upgrade``.
"""

import functools
import os

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from common.errors import ConfigError

MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
VERSION_TABLE = "alembic_version"
UPGRADE_HINT = "run: python -m master db upgrade"


def alembic_config(connection=None):
    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    config.set_main_option("file_template", "%%(rev)s")
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision():
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads ({', '.join(heads)}); merge them")
    return heads[0]


def describe(url):
    """The database URL as an admin reads it: the SQLite file's path, or the URL without a password."""
    url = sa.engine.make_url(url)
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


def exists(url):
    """Whether the database at ``url`` is there at all (a SQLite file, a PostgreSQL database with tables)."""
    url = sa.engine.make_url(url)
    return url.get_backend_name() != "sqlite" or not url.database or os.path.exists(url.database)


def missing(url):
    return ConfigError(f"DATABASE_URL: there is no mirror-sync database at {describe(url)}; "
                       "check DATA_DIR and DATABASE_URL, or pass --create to make a new one")


def require_existing(url):
    """Raises ConfigError when the database at ``url`` plainly does not exist (a missing SQLite file)."""
    if not exists(url):
        raise missing(url)


def current_revision(connection):
    """The revision stamped in the database; None when it has none."""
    return MigrationContext.configure(connection).get_current_revision()


def table_names(connection):
    return set(sa.inspect(connection).get_table_names())


def state(connection):
    """One of "empty", "current", "behind", "unversioned" (tables from before migrations) or "ahead"."""
    tables = table_names(connection)
    if VERSION_TABLE not in tables:
        return "unversioned" if tables else "empty"
    revision = current_revision(connection)
    if revision == head_revision():
        return "current"
    if revision is None:
        return "unversioned" if tables - {VERSION_TABLE} else "empty"
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    return "behind" if revision in known else "ahead"


def check_or_create(connection, metadata, url, create=True):
    """Create an empty database at the newest revision, or check that an existing one is there.

    Raises ConfigError, in one line, when the database is behind, newer than
    this code, or empty while ``create`` is false.
    """
    where = describe(url)
    found = state(connection)
    if found == "current":
        return found
    if found == "empty":
        if not create:
            raise missing(url)
        metadata.create_all(connection)
        command.stamp(alembic_config(connection), "head")
        return "created"
    if found == "ahead":
        raise ConfigError(f"DATABASE_URL: the database at {where} is at revision "
                          f"{current_revision(connection)}, which this release does not know: "
                          "it was upgraded by a newer release")
    revision = current_revision(connection) or "none (made before migrations)"
    raise ConfigError(f"DATABASE_URL: the database at {where} is at revision {revision}, behind "
                      f"{head_revision()}; {UPGRADE_HINT}")


def upgrade(connection, revision="head"):
    """Bring the database to ``revision``, keeping its rows; returns (before, after)."""
    before = current_revision(connection)
    command.upgrade(alembic_config(connection), revision)
    return before, current_revision(connection)
