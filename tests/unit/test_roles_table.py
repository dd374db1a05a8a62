"""Every endpoint of the master, for every kind of caller: the status each one gets.

Columns: anonymous (no token), read-only token, admin token. The signed
slave channel and enrollment take no bearer token at all, so every bearer
caller is refused there.
"""

import pytest

from tests.conftest import JOIN_TOKEN

ANON, READER, ADMIN = "anonymous", "readonly", "admin"

TABLE = [
    # method, path, JSON body, {caller: status}
    ("GET", "/healthz", None, {ANON: 200, READER: 200, ADMIN: 200}),
    ("GET", "/api/v1/status", None, {ANON: 200, READER: 200, ADMIN: 200}),
    ("GET", "/jobs", None, {ANON: 200, READER: 200, ADMIN: 200}),
    ("GET", "/metrics", None, {ANON: 200, READER: 200, ADMIN: 200}),
    # Public, and 404 until SITE_URL and SITE_ABBR say who the site is (unset here).
    ("GET", "/mirrorz.json", None, {ANON: 404, READER: 404, ADMIN: 404}),
    ("GET", "/api/v1/openapi.json", None, {ANON: 200, READER: 200, ADMIN: 200}),
    ("GET", "/", None, {ANON: 200, READER: 200, ADMIN: 200}),
    ("GET", "/mirrors", None, {ANON: 200, READER: 200, ADMIN: 200}),
    ("GET", "/projects/debian", None, {ANON: 200, READER: 200, ADMIN: 200}),
    ("GET", "/runs/{run}", None, {ANON: 200, READER: 200, ADMIN: 200}),
    ("GET", "/mirrors", None, {ANON: 200, READER: 200, ADMIN: 200}),
    ("GET", "/api/v1/projects", None, {ANON: 401, READER: 200, ADMIN: 200}),
    ("POST", "/api/v1/projects", {"name": "ubuntu", "upstream": "rsync://m.example.org/ubuntu"},
     {ANON: 401, READER: 403, ADMIN: 201}),
    ("GET", "/api/v1/projects/debian", None, {ANON: 401, READER: 200, ADMIN: 200}),
    ("PATCH", "/api/v1/projects/debian", {"timeout": 60}, {ANON: 401, READER: 403, ADMIN: 200}),
    ("DELETE", "/api/v1/projects/debian", None, {ANON: 401, READER: 403, ADMIN: 204}),
    ("DELETE", "/api/v1/projects/debian?force=true", None, {ANON: 401, READER: 403, ADMIN: 204}),
    ("POST", "/api/v1/projects/debian/syncs", None, {ANON: 401, READER: 403, ADMIN: 202}),
    # Only the project's own push token opens it; API tokens of any role do not.
    ("POST", "/api/v1/projects/debian/push", None, {ANON: 401, READER: 401, ADMIN: 401}),
    ("GET", "/api/v1/projects/debian/runs", None, {ANON: 401, READER: 200, ADMIN: 200}),
    ("GET", "/api/v1/runs/{run}", None, {ANON: 401, READER: 200, ADMIN: 200}),
    ("GET", "/api/v1/runs/{run}/log", None, {ANON: 401, READER: 200, ADMIN: 200}),
    ("POST", "/api/v1/runs/{run}/cancel", None, {ANON: 401, READER: 403, ADMIN: 200}),
    ("GET", "/api/v1/slaves", None, {ANON: 401, READER: 200, ADMIN: 200}),
    ("GET", "/api/v1/slaves/mirror1", None, {ANON: 401, READER: 200, ADMIN: 200}),
    ("PATCH", "/api/v1/slaves/mirror1", {"enabled": False}, {ANON: 401, READER: 403, ADMIN: 200}),
    ("DELETE", "/api/v1/slaves/mirror1", None, {ANON: 401, READER: 403, ADMIN: 204}),
    ("GET", "/api/v1/tokens", None, {ANON: 401, READER: 403, ADMIN: 200}),
    ("POST", "/api/v1/tokens", {"name": "ci"}, {ANON: 401, READER: 403, ADMIN: 201}),
    ("GET", "/api/v1/tokens/1", None, {ANON: 401, READER: 403, ADMIN: 200}),
    ("DELETE", "/api/v1/tokens/{spare_token}", None, {ANON: 401, READER: 403, ADMIN: 200}),
    ("POST", "/api/v1/slaves/register", {"name": "mirror2", "url": "http://mirror2:7000"},
     {ANON: 403, READER: 403, ADMIN: 403}),
    ("POST", "/api/v1/slaves/mirror1/heartbeat", {"url": "http://mirror1:7000"}, {ANON: 401, READER: 401, ADMIN: 401}),
    ("POST", "/api/v1/slaves/mirror1/reports", {"run_id": 1, "project": "debian", "state": "success"},
     {ANON: 401, READER: 401, ADMIN: 401}),
]


@pytest.fixture
def world(app, client, admin, reader, make_project):
    make_project("debian")
    run_id = client.post("/api/v1/projects/debian/syncs", headers=admin).get_json()["id"]
    enrolled = client.post("/api/v1/slaves/register", json={"name": "mirror1", "url": "http://mirror1:7000"},
                           headers={"Authorization": f"Bearer {JOIN_TOKEN}"})
    assert enrolled.status_code == 201
    spare = client.post("/api/v1/tokens", json={"name": "spare"}, headers=admin).get_json()["id"]
    return {"run": run_id, "spare_token": spare, "headers": {ANON: {}, READER: reader, ADMIN: admin}}


@pytest.mark.parametrize("caller", [ANON, READER, ADMIN])
@pytest.mark.parametrize("method, path, body, expected", [
    pytest.param(*row, id=f"{row[0]} {row[1]}") for row in TABLE])
def test_every_endpoint_answers_every_caller_as_the_table_says(client, world, caller, method, path, body,
                                                               expected):
    response = client.open(path.format(run=world["run"], spare_token=world["spare_token"]), method=method,
                           headers=world["headers"][caller], json=body)
    assert response.status_code == expected[caller], response.get_data(as_text=True)[:300]
    if response.status_code in (401, 403) and response.is_json:
        assert set(response.get_json()) == {"error", "message", "fields"}


def test_the_table_names_every_route_of_the_app(app):
    listed = {path.split("?")[0] for _, path, _, _ in TABLE}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or "docs" in rule.rule:
            continue
        shape = (rule.rule.replace("<id:run_id>", "{run}").replace("<name>", "debian")
                 .replace("<id:token_id>", "1").replace("<run_id>", "{run}"))
        if shape.startswith("/api/v1/slaves/"):
            shape = shape.replace("debian", "mirror1")
        assert shape in listed or shape.replace("/1", "/{spare_token}") in listed, f"{rule.rule} is not in TABLE"
