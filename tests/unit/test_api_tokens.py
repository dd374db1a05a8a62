"""Admins list, create (with an expiry) and revoke API tokens over the API; nobody else can."""

import pytest

from master.db import db
from master.models import ApiToken


def test_an_admin_creates_a_token_sees_it_once_and_it_works(client, admin):
    created = client.post("/api/v1/tokens", json={"name": "grafana", "role": "readonly", "expires_in": 3600},
                          headers=admin)
    assert created.status_code == 201
    token = created.json["token"]
    assert created.headers["Location"].endswith(f"/api/v1/tokens/{created.json['id']}")
    assert created.json["expires_at"] is not None
    reader = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/projects", headers=reader).status_code == 200
    listed = client.get("/api/v1/tokens", headers=admin)
    assert token not in listed.text and "token_hash" not in listed.text
    assert {"grafana", "ADMIN_TOKEN"} <= {entry["name"] for entry in listed.json}


def test_a_token_expires(client, admin, clock):
    token = client.post("/api/v1/tokens", json={"name": "short", "expires_in": 60}, headers=admin).json["token"]
    clock.advance(61)
    expired = client.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}"})
    assert expired.status_code == 401 and "expired" in expired.json["message"]


def test_a_revoked_token_stops_working_and_stays_listed(client, admin):
    created = client.post("/api/v1/tokens", json={"name": "ci", "role": "admin"}, headers=admin).json
    revoked = client.delete(f"/api/v1/tokens/{created['id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json["revoked_at"] is not None
    assert client.get("/api/v1/projects", headers={"Authorization": f"Bearer {created['token']}"}).status_code == 401
    assert client.get(f"/api/v1/tokens/{created['id']}", headers=admin).json["revoked_at"] is not None


@pytest.mark.parametrize("method, path", [("GET", "/api/v1/tokens"), ("POST", "/api/v1/tokens"),
                                          ("GET", "/api/v1/tokens/1"), ("DELETE", "/api/v1/tokens/1")])
def test_read_only_tokens_cannot_see_or_change_tokens(client, reader, method, path):
    response = client.open(path, method=method, json={"name": "x"}, headers=reader)
    assert response.status_code == 403 and response.json["error"] == "forbidden"


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "role": "root"}, "role"), ({"name": "x", "expires_in": 5}, "expires_in"),
    ({"name": "x", "expires_in": "1h"}, "expires_in"), ({"name": "-x;rm"}, "name"), ({}, "name"),
    ({"name": "x", "token": "chosen"}, "token"),
])
def test_bad_token_requests_name_the_field_and_store_nothing(app, client, admin, body, field):
    response = client.post("/api/v1/tokens", json=body, headers=admin)
    assert response.status_code == 422 and field in response.json["fields"]
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(ApiToken.id))).scalar() == 1  # ADMIN_TOKEN only


def test_a_missing_token_is_404(client, admin):
    assert client.delete("/api/v1/tokens/999", headers=admin).status_code == 404


def test_a_revoked_admin_token_stays_revoked_when_the_app_is_built_again(app, client, admin):
    from master import create_app
    seeded = next(t for t in client.get("/api/v1/tokens", headers=admin).json if t["name"] == "ADMIN_TOKEN")
    assert client.delete(f"/api/v1/tokens/{seeded['id']}", headers=admin).status_code == 200
    # What a gunicorn worker respawn or a restart does: build the app again on the same database.
    again = create_app({"DATA_DIR": app.config["DATA_DIR"], "ADMIN_TOKEN": admin["Authorization"][7:],
                        "LOG_LEVEL": "WARNING"})
    refused = again.test_client().get("/api/v1/projects", headers=admin)
    assert refused.status_code == 401 and "revoked" in refused.json["message"]
