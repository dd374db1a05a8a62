"""Upstream push: the project's own write-only token queues a run with trigger push."""

import sqlalchemy as sa

from master.db import db
from master.models import Project
from master.services import runs

TOKEN = "push-secret-0123456789abcdef"


def push(client, token=TOKEN, name="debian"):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post(f"/api/v1/projects/{name}/push", headers=headers)


def test_the_push_token_is_write_only_and_stored_hashed(app, client, admin, make_project):
    created = make_project(push_token=TOKEN)
    assert created["has_push_token"] is True and "push_token" not in created
    shown = client.get("/api/v1/projects/debian", headers=admin)
    assert TOKEN not in shown.get_data(as_text=True)
    with app.app_context():
        stored = db.session.execute(sa.select(Project.push_token_hash)).scalar_one()
    assert stored and TOKEN not in stored and len(stored) == 64


def test_a_push_with_the_token_queues_a_run_with_trigger_push(client, admin, make_project):
    make_project(push_token=TOKEN)
    response = push(client)
    assert response.status_code == 202, response.json
    run = client.get(f"/api/v1/runs/{response.json['run']}", headers=admin).json
    assert (run["trigger"], run["state"]) == ("push", "queued")


def test_a_push_is_refused_alike_for_a_wrong_token_a_missing_one_an_api_token_or_an_unknown_project(
        client, admin, make_project):
    make_project(push_token=TOKEN)
    make_project("ubuntu")   # no push token at all
    answers = [push(client, "wrong-token-0123456789"), push(client, None), push(client, admin["Authorization"][7:]),
               push(client, name="nosuch"), push(client, name="ubuntu"), push(client, "")]
    assert [answer.status_code for answer in answers] == [401] * 6
    assert len({answer.json["message"] for answer in answers}) == 1, "nothing tells which projects exist"
    assert client.get("/api/v1/projects/debian/runs", headers=admin).json == []


def test_failed_pushes_are_rate_limited_like_any_authentication(app, client, make_project):
    make_project(push_token=TOKEN)
    app.config["AUTH_FAILURE_LIMIT"] = 3
    assert [push(client, "wrong-token-0123456789").status_code for _ in range(3)] == [401] * 3
    refused = push(client, "wrong-token-0123456789")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json["error"] == "too_many_requests"
    # Only guesses are refused: upstream's real token still gets through from the same address.
    assert push(client).status_code == 202


def test_a_push_during_a_run_is_never_lost_it_becomes_the_follow_up(app, client, admin, make_project):
    make_project(push_token=TOKEN)
    first = push(client).json["run"]
    with app.app_context():
        [running] = runs.claim_queued_runs(1)
        assert running.id == first
    follow_up = push(client).json
    again = push(client).json
    assert follow_up["run"] != first and again["run"] == follow_up["run"] and again["coalesced"] == 1
    with app.app_context():
        runs.move_run(runs.get_run(first), "failed", error="upstream went away")
    assert client.get(f"/api/v1/runs/{follow_up['run']}", headers=admin).json["state"] == "queued"


def test_removing_the_push_token_closes_the_endpoint(client, admin, make_project):
    make_project(push_token=TOKEN)
    changed = client.patch("/api/v1/projects/debian", json={"push_token": None}, headers=admin)
    assert changed.status_code == 200 and changed.json["has_push_token"] is False
    assert push(client).status_code == 401


def test_pushing_a_disabled_project_is_a_conflict(client, admin, make_project):
    make_project(push_token=TOKEN, enabled=False)
    response = push(client)
    assert response.status_code == 409 and response.json["fields"] == {"enabled": ["Project is disabled."]}
