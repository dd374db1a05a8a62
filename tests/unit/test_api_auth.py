"""Who may call what: bearer tokens with roles, and the ``python -m master tokens`` commands."""

import hashlib
import os
import re

import pytest
from click.testing import CliRunner

from tests.support.fakes import FakeRsyncRunner
from tests.support.api_errors import assert_error_shape

PROJECT = "/api/v1/projects/debian"
NEW_PROJECT = {"name": "ubuntu", "upstream": "rsync://mirror.example.org/ubuntu"}

# method, path ({run} is the id of a queued run of "debian"), JSON body, status for an admin.
ENDPOINTS = [
    pytest.param("GET", "/api/v1/projects", None, 200, id="list-projects"),
    pytest.param("POST", "/api/v1/projects", NEW_PROJECT, 201, id="create-project"),
    pytest.param("GET", PROJECT, None, 200, id="get-project"),
    pytest.param("PATCH", PROJECT, {"timeout": 60}, 200, id="patch-project"),
    pytest.param("DELETE", PROJECT, None, 204, id="delete-project"),
    pytest.param("POST", f"{PROJECT}/syncs", None, 202, id="trigger-sync"),
    pytest.param("GET", f"{PROJECT}/runs", None, 200, id="project-runs"),
    pytest.param("GET", "/api/v1/runs/{run}", None, 200, id="get-run"),
    pytest.param("GET", "/api/v1/runs/{run}/log", None, 200, id="run-log"),
]
READ_METHODS = {"GET"}


@pytest.fixture
def run_id(client, admin, make_project):
    make_project("debian", upstream_password="upstream-secret")
    response = client.post(f"{PROJECT}/syncs", headers=admin)
    assert response.status_code == 202
    return response.get_json()["id"]


def issue_token(app, role, expires_in=None):
    from master.services.tokens import create_token
    with app.app_context():
        plain, token = create_token(f"{role}-token", role, expires_in)
        return plain, token.id


def credentials(kind, app, clock, admin):
    """Headers for one kind of caller, and the token value sent (or None)."""
    from master.services.tokens import revoke_token
    if kind == "no-token":
        return {}, None
    if kind == "bad-token":
        plain = "mst_" + "x" * 43
    elif kind == "revoked":
        plain, token_id = issue_token(app, "admin")
        with app.app_context():
            revoke_token(token_id)
    elif kind == "expired":
        plain, _ = issue_token(app, "admin", expires_in=60)
        clock.advance(61)
    elif kind == "readonly":
        plain, _ = issue_token(app, "readonly")
    elif kind == "admin":
        return admin, admin["Authorization"].split(" ", 1)[1]
    else:
        raise AssertionError(kind)
    return {"Authorization": f"Bearer {plain}"}, plain


def expected_status(kind, method, admin_status):
    if kind in ("no-token", "bad-token", "revoked", "expired"):
        return 401
    if kind == "readonly":
        return 200 if method in READ_METHODS else 403
    return admin_status


def snapshot(client, admin, run):
    """What a refused call must leave alone: the projects and the run."""
    return (client.get("/api/v1/projects", headers=admin).get_json(),
            client.get(f"/api/v1/runs/{run}", headers=admin).get_json())


@pytest.mark.parametrize("kind", ["no-token", "bad-token", "revoked", "expired", "readonly", "admin"])
@pytest.mark.parametrize("method, path, body, admin_status", ENDPOINTS)
def test_endpoint_answers_each_kind_of_caller(app, client, clock, admin, run_id, fake_rsync,
                                              kind, method, path, body, admin_status):
    headers, plain = credentials(kind, app, clock, admin)
    before = snapshot(client, admin, run_id)
    response = client.open(path.format(run=run_id), method=method, headers=headers, json=body)

    status = expected_status(kind, method, admin_status)
    if status in (401, 403):
        assert_error_shape(response, status)
        assert snapshot(client, admin, run_id) == before
        if plain is not None:
            assert plain not in response.get_data(as_text=True)
            assert all(plain not in value for _, value in response.headers)
    else:
        assert response.status_code == status, response.get_data(as_text=True)
    assert "upstream-secret" not in response.get_data(as_text=True)
    assert fake_rsync.jobs == []


@pytest.mark.parametrize("header", [
    pytest.param(None, id="no-header"),
    pytest.param("", id="empty-header"),
    pytest.param("Bearer", id="scheme-only"),
    pytest.param("Bearer ", id="scheme-and-space"),
    pytest.param("Basic dW5pdC1hZG1pbi10b2tlbg==", id="basic-auth"),
    pytest.param("Token unit-admin-token", id="other-scheme-with-admin-token"),
    pytest.param("unit-admin-token", id="token-without-scheme"),
    pytest.param("Bearer unit-admin-token-and-more", id="admin-token-with-suffix"),
    pytest.param("Bearer unit-admin-toke", id="admin-token-truncated"),
    pytest.param("Bearer " + hashlib.sha256(b"unit-admin-token").hexdigest(), id="stored-hash-as-token"),
    pytest.param("Bearer " + "A" * 4000, id="oversized-token"),
])
def test_malformed_authorization_is_401_without_echo(client, header, make_project, admin):
    make_project("debian")
    headers = {} if header is None else {"Authorization": header}
    response = client.get("/api/v1/projects", headers=headers)
    assert_error_shape(response, 401)
    text = response.get_data(as_text=True)
    assert "unit-admin-token" not in text
    sent = (header or "").split(" ")[-1]
    if len(sent) >= 8:  # shorter words ("Bearer") are part of the help sentence itself
        assert sent not in text


def test_token_in_query_string_is_not_accepted(client, make_project):
    make_project("debian")
    response = client.get("/api/v1/projects?access_token=unit-admin-token")
    assert_error_shape(response, 401)


def test_bearer_scheme_is_case_insensitive(client, make_project):
    make_project("debian")
    response = client.get("/api/v1/projects", headers={"Authorization": "bearer unit-admin-token"})
    assert response.status_code == 200


def test_missing_project_without_token_is_401_not_404(client):
    response = client.get("/api/v1/projects/no-such-project")
    assert_error_shape(response, 401)


def test_token_expires_exactly_at_its_lifetime(app, client, clock):
    plain, _ = issue_token(app, "readonly", expires_in=60)
    headers = {"Authorization": f"Bearer {plain}"}
    clock.advance(59)
    assert client.get("/api/v1/projects", headers=headers).status_code == 200
    clock.advance(1)
    assert_error_shape(client.get("/api/v1/projects", headers=headers), 401)


@pytest.mark.parametrize("kind", ["no-token", "bad-token", "revoked", "expired", "readonly", "admin"])
@pytest.mark.parametrize("path", ["/api/v1/status", "/healthz"])
def test_public_endpoints_answer_anyone(app, client, clock, admin, make_project, kind, path):
    make_project("debian", upstream="rsync://mirror@mirror.example.org/debian", upstream_password="upstream-secret")
    headers, _ = credentials(kind, app, clock, admin)
    response = client.get(path, headers=headers)
    assert response.status_code == 200
    assert "upstream-secret" not in response.get_data(as_text=True)
    if path == "/api/v1/status":
        assert [entry["name"] for entry in response.get_json()] == ["debian"]


# --- python -m master tokens ----------------------------------------------------

@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    for name in ("ADMIN_TOKEN", "DATABASE_URL"):
        monkeypatch.delenv(f"MIRRORSYNC_{name}", raising=False)
    path = tmp_path / "master"
    monkeypatch.setenv("MIRRORSYNC_DATA_DIR", str(path))
    monkeypatch.setenv("MIRRORSYNC_LOG_LEVEL", "WARNING")
    return path


def tokens_cli(*args):
    from master.__main__ import cli
    result = CliRunner().invoke(cli, ["tokens", *args], catch_exceptions=False)
    return result


def cli_create(name, role="readonly"):
    result = tokens_cli("create", "--name", name, "--role", role)
    assert result.exit_code == 0, result.output
    plain = result.stdout.strip()
    token_id = int(re.search(r"created token (\d+)", result.stderr).group(1))
    return result, plain, token_id


@pytest.fixture
def master_on_data_dir(data_dir):
    """An API app over the same DATA_DIR the CLI writes to."""
    from master import create_app
    return create_app({"DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING", "RSYNC_RUNNER": FakeRsyncRunner()})


def test_cli_create_prints_the_token_once_and_it_works(data_dir, master_on_data_dir):
    result, plain, _ = cli_create("ops", role="admin")
    assert plain.startswith("mst_") and len(plain) > 40
    assert result.output.count(plain) == 1
    assert plain not in result.stderr
    client = master_on_data_dir.test_client()
    headers = {"Authorization": f"Bearer {plain}"}
    assert client.post("/api/v1/projects", json=NEW_PROJECT, headers=headers).status_code == 201
    assert client.get("/api/v1/projects/ubuntu", headers=headers).status_code == 200


def test_cli_readonly_token_can_read_but_not_write(data_dir, master_on_data_dir):
    _, plain, _ = cli_create("dashboard")
    client = master_on_data_dir.test_client()
    headers = {"Authorization": f"Bearer {plain}"}
    assert client.get("/api/v1/projects", headers=headers).status_code == 200
    assert_error_shape(client.post("/api/v1/projects", json=NEW_PROJECT, headers=headers), 403)


def test_cli_list_shows_tokens_but_never_their_values(data_dir, master_on_data_dir):
    _, ops, _ = cli_create("ops", role="admin")
    _, dashboard, _ = cli_create("dashboard")
    result = tokens_cli("list")
    assert result.exit_code == 0, result.output
    assert "ops" in result.output and "dashboard" in result.output
    for plain in (ops, dashboard):
        assert plain not in result.output
        assert hashlib.sha256(plain.encode()).hexdigest() not in result.output


def test_cli_revoke_makes_the_token_fail_with_401(data_dir, master_on_data_dir):
    _, plain, token_id = cli_create("ops", role="admin")
    client = master_on_data_dir.test_client()
    headers = {"Authorization": f"Bearer {plain}"}
    assert client.get("/api/v1/projects", headers=headers).status_code == 200

    result = tokens_cli("revoke", str(token_id))
    assert result.exit_code == 0, result.output
    assert plain not in result.output
    body = assert_error_shape(client.get("/api/v1/projects", headers=headers), 401)
    assert plain not in str(body)
    listing = tokens_cli("list").output
    assert re.search(rf"^\s*{token_id}\s+ops\s.*revoked\s*$", listing, re.MULTILINE), listing


def test_cli_revoke_of_unknown_token_fails_with_one_line(data_dir, master_on_data_dir):
    result = tokens_cli("revoke", "999")
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "999" in result.output


def _database_bytes(data_dir):
    state = os.path.join(str(data_dir), ".mirrorsync")
    chunks = []
    for name in os.listdir(state):
        if name.startswith("mirrorsync.db"):  # the database and its -wal / -shm files
            with open(os.path.join(state, name), "rb") as handle:
                chunks.append(handle.read())
    return b"".join(chunks)


def test_database_stores_only_a_hash_of_cli_tokens(data_dir, master_on_data_dir):
    import sqlalchemy as sa
    from master.db import db
    from master.models import ApiToken

    _, plain, token_id = cli_create("ops", role="admin")
    digest = hashlib.sha256(plain.encode()).hexdigest()
    with master_on_data_dir.app_context():
        stored = db.session.execute(sa.select(ApiToken.token_hash).where(ApiToken.id == token_id)).scalar_one()
    assert stored == digest != plain
    contents = _database_bytes(data_dir)
    assert digest.encode() in contents  # the files read are the ones holding the tokens
    assert plain.encode() not in contents


def test_database_stores_only_a_hash_of_the_configured_admin_token(app, admin):
    import sqlalchemy as sa
    from master.db import db
    from master.models import ApiToken

    plain = admin["Authorization"].split(" ", 1)[1]
    digest = hashlib.sha256(plain.encode()).hexdigest()
    with app.app_context():
        hashes = db.session.execute(sa.select(ApiToken.token_hash)).scalars().all()
    assert digest in hashes
    contents = _database_bytes(app.config["DATA_DIR"])
    assert digest.encode() in contents
    assert plain.encode() not in contents
