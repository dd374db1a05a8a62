"""Upgrading a PostgreSQL database made by an earlier release keeps every row."""

import pytest
import sqlalchemy as sa

from master import schema
from tests.support.legacy_db import MIDDLE_OF_HISTORY_MISSING, build_legacy_database
from tests.support.postgres import TemporaryPostgres
from tests.support.upgrades import assert_every_legacy_row_reads_back, upgrade_database

reason = TemporaryPostgres.available()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(reason is not None, reason=reason or ""),
              pytest.mark.xdist_group("postgres")]


@pytest.fixture(scope="module")
def postgres():
    with TemporaryPostgres() as server:
        yield server


def fresh_database(postgres, name):
    engine = sa.create_engine(postgres.url("postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return postgres.url(name)


@pytest.mark.parametrize("missing", [None, MIDDLE_OF_HISTORY_MISSING], ids=["release-5039d10", "mid-history"])
def test_a_postgres_database_from_an_earlier_release_upgrades_and_reads_back(postgres, tmp_path, missing):
    from common.errors import ConfigError
    from master import create_app
    url = fresh_database(postgres, f"legacy_{'mid' if missing else 'release'}")
    build_legacy_database(url, missing)
    config = {"DATA_DIR": str(tmp_path), "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    with pytest.raises(ConfigError, match="db upgrade"):
        create_app(config)
    assert f"upgraded from none to {schema.head_revision()}" in upgrade_database(url, tmp_path)
    client = create_app(config).test_client()
    assert_every_legacy_row_reads_back(client)


def test_migrating_an_empty_postgres_database_gives_exactly_the_models_schema(postgres):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from master.db import db
    import master.models  # noqa: F401
    engine = sa.create_engine(fresh_database(postgres, "empty_to_head"))
    with engine.begin() as connection:
        schema.upgrade(connection)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), db.metadata)
    engine.dispose()
    assert diff == [], f"a model changed without a revision: {diff}"
