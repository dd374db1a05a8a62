"""Schema migrations: a new database, an upgrade from an earlier release, and refusing one that is behind."""

import os

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner

from common.errors import ConfigError
from master import schema
from master.__main__ import cli
from tests.support.legacy_db import ADMIN_TOKEN, MIDDLE_OF_HISTORY_MISSING, build_legacy_database
from tests.support.upgrades import assert_every_legacy_row_reads_back, upgrade_database


def sqlite_url(path):
    return f"sqlite:///{path}"


def invoke(args, data_dir, **env):
    environment = {"MIRRORSYNC_DATA_DIR": str(data_dir), "MIRRORSYNC_LOG_LEVEL": "WARNING", **env}
    return CliRunner().invoke(cli, args, env=environment)


def master_app(data_dir, url=None, **overrides):
    from master import create_app
    config = {"DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING", **overrides}
    if url:
        config["DATABASE_URL"] = url
    return create_app(config)


def test_the_migrations_have_one_head():
    heads = ScriptDirectory.from_config(schema.alembic_config()).get_heads()
    assert len(heads) == 1, f"merge the migration heads {heads}"


def test_migrating_an_empty_database_gives_exactly_the_models_schema(tmp_path):
    """Fails when a model changed without a revision: autogenerate must find nothing to do."""
    from master.db import db
    import master.models  # noqa: F401 - registers the tables
    url = sqlite_url(tmp_path / "m.db")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        schema.upgrade(connection)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                db.metadata)
    engine.dispose()
    assert diff == [], f"a model changed without a revision: {diff}"


def test_a_new_database_is_created_at_the_newest_revision(tmp_path):
    app = master_app(tmp_path)
    with app.app_context():
        from master.db import db
        with db.engine.connect() as connection:
            assert schema.current_revision(connection) == schema.head_revision()


@pytest.mark.parametrize("missing", [None, MIDDLE_OF_HISTORY_MISSING], ids=["release-5039d10", "mid-history"])
def test_a_database_from_an_earlier_release_upgrades_and_every_row_reads_back_through_the_api(tmp_path, missing):
    data_dir = tmp_path / "data"
    os.makedirs(data_dir / ".mirrorsync")
    url = sqlite_url(data_dir / ".mirrorsync" / "mirrorsync.db")
    build_legacy_database(url, missing)

    with pytest.raises(ConfigError, match=r"behind .*run: python -m master db upgrade"):
        master_app(data_dir)
    output = upgrade_database(url, data_dir)
    assert f"upgraded from none to {schema.head_revision()}" in output

    client = master_app(data_dir).test_client()
    assert_every_legacy_row_reads_back(client)


def test_after_the_upgrade_run_ids_are_never_reused_once_rows_are_deleted(tmp_path):
    data_dir = tmp_path / "data"
    os.makedirs(data_dir / ".mirrorsync")
    url = sqlite_url(data_dir / ".mirrorsync" / "mirrorsync.db")
    build_legacy_database(url)
    upgrade_database(url, data_dir)
    client = master_app(data_dir).test_client()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert client.delete("/api/v1/projects/debian", headers=admin).status_code == 204
    created = client.post("/api/v1/projects", headers=admin,
                          json={"name": "debian", "upstream": "rsync://ftp.example.org/debian/"})
    assert created.status_code == 201
    run = client.post("/api/v1/projects/debian/syncs", headers=admin).json
    assert run["id"] > 2, "a run id of the deleted project was handed out again"
    assert created.json["name"] == "debian"


def test_a_new_sqlite_database_never_reuses_run_ids(app, client, admin, make_project):
    make_project("tour")
    first = client.post("/api/v1/projects/tour/syncs", headers=admin).json["id"]
    assert client.delete("/api/v1/projects/tour", headers=admin).status_code == 204
    make_project("debian")
    second = client.post("/api/v1/projects/debian/syncs", headers=admin).json["id"]
    assert second > first


def test_db_current_names_the_database_and_its_revision(tmp_path):
    master_app(tmp_path)
    result = invoke(["db", "current"], tmp_path)
    assert result.exit_code == 0, result.output
    assert f"database: {tmp_path / '.mirrorsync' / 'mirrorsync.db'}" in result.output
    assert f"{schema.head_revision()} (the newest)" in result.output


def test_db_current_on_a_database_from_before_migrations_says_to_upgrade(tmp_path):
    os.makedirs(tmp_path / ".mirrorsync")
    build_legacy_database(sqlite_url(tmp_path / ".mirrorsync" / "mirrorsync.db"))
    result = invoke(["db", "current"], tmp_path)
    assert result.exit_code == 0
    assert "none (none: made before migrations; run: python -m master db upgrade)" in result.output


def test_db_upgrade_of_a_current_database_changes_nothing(tmp_path):
    master_app(tmp_path)
    result = invoke(["db", "upgrade"], tmp_path)
    assert result.exit_code == 0, result.output
    assert f"already at {schema.head_revision()}" in result.output


@pytest.mark.parametrize("args", [["db", "upgrade"], ["db", "current"], ["tokens", "list"],
                                  ["tokens", "create", "--name", "x", "--role", "admin"]])
def test_admin_commands_refuse_to_make_a_new_database_and_name_the_one_they_looked_for(tmp_path, args):
    result = invoke(args, tmp_path / "typo")
    assert result.exit_code == 1
    expected = tmp_path / "typo" / ".mirrorsync" / "mirrorsync.db"
    assert f"database: {expected}" in result.output
    assert f"there is no mirror-sync database at {expected}" in result.output
    assert "--create" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "typo").exists(), "a refused command left a new directory behind"


def test_tokens_create_with_create_makes_the_database_and_the_token_works(tmp_path):
    result = invoke(["tokens", "--create", "create", "--name", "ops", "--role", "admin"], tmp_path)
    assert result.exit_code == 0, result.output
    plain = result.output.strip().splitlines()[-1]
    client = master_app(tmp_path).test_client()
    assert client.get("/api/v1/projects", headers={"Authorization": f"Bearer {plain}"}).status_code == 200


def test_tokens_commands_act_on_the_database_the_server_uses(tmp_path):
    master_app(tmp_path)
    result = invoke(["tokens", "create", "--name", "ops", "--role", "readonly"], tmp_path)
    assert result.exit_code == 0, result.output
    assert f"database: {tmp_path / '.mirrorsync' / 'mirrorsync.db'}" in result.output
    plain = result.output.strip().splitlines()[-1]
    client = master_app(tmp_path).test_client()
    assert client.get("/api/v1/projects", headers={"Authorization": f"Bearer {plain}"}).status_code == 200


def test_db_upgrade_create_makes_a_new_database_through_every_revision(tmp_path):
    result = invoke(["db", "upgrade", "--create"], tmp_path)
    assert result.exit_code == 0, result.output
    assert f"upgraded from none to {schema.head_revision()}" in result.output
    master_app(tmp_path)  # accepted as current


def test_a_database_newer_than_this_release_is_refused(tmp_path):
    master_app(tmp_path)
    engine = sa.create_engine(sqlite_url(tmp_path / ".mirrorsync" / "mirrorsync.db"))
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()
    with pytest.raises(ConfigError, match="upgraded by a newer release"):
        master_app(tmp_path)
    result = invoke(["db", "upgrade"], tmp_path)
    assert result.exit_code == 1 and "newer release" in result.output


def test_after_the_upgrade_existing_projects_are_published_under_their_name(tmp_path):
    data_dir = tmp_path / "data"
    os.makedirs(data_dir / ".mirrorsync")
    url = sqlite_url(data_dir / ".mirrorsync" / "mirrorsync.db")
    build_legacy_database(url)
    upgrade_database(url, data_dir)
    client = master_app(data_dir).test_client()
    listed = client.get("/api/v1/projects", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json
    assert {project["name"]: project["public_path"] for project in listed} == {
        "archlinux": "/archlinux", "debian": "/debian"}
    runs = client.get("/api/v1/projects/debian/runs", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json
    assert runs and all(run["force"] is False for run in runs)


def test_every_revision_id_fits_alembic_version_on_postgresql():
    """alembic_version.version_num is VARCHAR(32): a longer id upgrades SQLite but fails on PostgreSQL."""
    revisions = ScriptDirectory.from_config(schema.alembic_config()).walk_revisions()
    too_long = [revision.revision for revision in revisions if len(revision.revision) > 32]
    assert too_long == []


def test_db_current_check_fails_in_one_line_unless_the_database_is_current(tmp_path):
    master_app(tmp_path / "new")
    assert invoke(["db", "current", "--check"], tmp_path / "new").exit_code == 0
    os.makedirs(tmp_path / "old" / ".mirrorsync")
    build_legacy_database(sqlite_url(tmp_path / "old" / ".mirrorsync" / "mirrorsync.db"))
    result = invoke(["db", "current", "--check"], tmp_path / "old")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: the database is not at the newest revision {schema.head_revision()}; "
        "run: python -m master db upgrade")
