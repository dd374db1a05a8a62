"""The public documents are built once per change: a request after that costs the same few queries
and no entry builds, however many projects and slaves there are."""

import pytest
import sqlalchemy as sa

from master.db import db
from master.models import SlaveProject
from master.services import projects, slaves
from tests.conftest import JOIN_TOKEN

DOCUMENTS = ("/api/v1/status", "/jobs", "/mirrorz.json", "/metrics", "/")
# Queries per request once built: the generation, plus slave liveness (/metrics, /) and the
# progress of running pulls (/).
QUERIES = {"/api/v1/status": 1, "/jobs": 1, "/mirrorz.json": 1, "/metrics": 2, "/": 3}


def fill(app, project_count, slave_count):
    with app.app_context():
        made = [projects.create_project({"name": f"p{index:03d}", "upstream": f"rsync://m.example.org/p{index}",
                                         "schedule": "0 * * * *"}) for index in range(project_count)]
        enrolled = [slaves.register_slave(f"s{index:03d}", f"http://s{index}:7000", join_token=JOIN_TOKEN,
                                           channel_private=True)[0]
                    for index in range(slave_count)]
        for project in made:
            for slave in enrolled[::2]:
                db.session.add(SlaveProject(slave_id=slave.id, project_id=project.id, last_state="failed",
                                            last_error="partial transfer"))
        db.session.commit()


def statements_of(app, client, path):
    seen = []
    with app.app_context():
        engine = db.engine
    listener = lambda conn, cursor, statement, *rest: seen.append(statement)  # noqa: E731
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        response = client.get(path)
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    assert response.status_code == 200, (path, response.data[:300])
    return seen


def builds(app):
    return app.extensions["mirrorsync_readmodel"].builds


@pytest.mark.parametrize("project_count, slave_count", [(3, 2), (40, 20)])
def test_a_request_after_the_build_costs_a_few_queries_and_no_builds(app, client, project_count, slave_count):
    app.config.update(SITE_URL="https://mirror.example.edu", SITE_ABBR="EXAMPLE")
    fill(app, project_count, slave_count)
    for path in DOCUMENTS:
        client.get(path)
    assert builds(app) == project_count, "every project's entry built once for all five documents"
    for path in DOCUMENTS:
        assert len(statements_of(app, client, path)) == QUERIES[path], path
    assert builds(app) == project_count


def test_a_change_rebuilds_only_the_changed_project(app, client, admin):
    fill(app, 30, 4)
    client.get("/api/v1/status")
    before = builds(app)
    client.patch("/api/v1/projects/p007", json={"schedule": "30 * * * *"}, headers=admin)
    entry = next(item for item in client.get("/api/v1/status").json if item["name"] == "p007")
    assert entry["next_run"].endswith(":30:00+00:00")
    assert builds(app) == before + 1


def test_a_new_slave_or_a_deleted_project_rebuilds_every_entry(app, client, admin):
    fill(app, 5, 2)
    client.get("/api/v1/status")
    before = builds(app)
    with app.app_context():
        slaves.register_slave("late", "http://late:7000", join_token=JOIN_TOKEN, channel_private=True)
    assert all("late" in entry["slaves"] for entry in client.get("/api/v1/status").json)
    assert builds(app) == before + 5
    client.delete("/api/v1/projects/p002", headers=admin)
    assert [entry["name"] for entry in client.get("/jobs").json] == ["p000", "p001", "p003", "p004"]


def test_another_process_change_is_seen_through_the_shared_generation(app, client, admin):
    """Two apps on one database stand for two gunicorn workers: each keeps its own build."""
    from master import create_app
    fill(app, 3, 1)
    other = create_app({"DATA_DIR": app.config["DATA_DIR"], "LOG_LEVEL": "WARNING"}).test_client()
    assert [entry["status"] for entry in other.get("/jobs").json] == ["none"] * 3
    client.patch("/api/v1/projects/p001", json={"enabled": False}, headers=admin)
    assert [entry["status"] for entry in other.get("/jobs").json] == ["none", "disabled", "none"]


def test_the_status_feed_matches_its_schema(app, client):
    from master.schemas import StatusSchema
    fill(app, 2, 3)
    feed = client.get("/api/v1/status").json
    assert set(feed[0]) == set(StatusSchema().fields)
    assert feed[0]["slaves"]["s000"] == {"state": "failed", "run_id": None, "since": None,
                                         "last_error": "partial transfer"}
    assert feed[0]["slaves"]["s001"] == {"state": "stale", "run_id": None, "since": None, "last_error": None}


def test_next_run_moves_on_once_its_time_has_passed(app, client, clock):
    fill(app, 2, 0)
    first = client.get("/api/v1/status").json[0]["next_run"]
    clock.advance(3601)
    assert client.get("/api/v1/status").json[0]["next_run"] > first


def test_clients_that_accept_gzip_get_the_same_documents_compressed(app, client, admin):
    import gzip
    app.config.update(SITE_URL="https://mirror.example.edu", SITE_ABBR="EXAMPLE")
    fill(app, 12, 5)
    for path in ("/api/v1/status", "/jobs", "/mirrorz.json", "/metrics"):
        plain = client.get(path)
        packed = client.get(path, headers={"Accept-Encoding": "gzip"})
        assert packed.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed.headers["Vary"]
        assert gzip.decompress(packed.data) == plain.data, path
        assert packed.headers["ETag"] != plain.headers["ETag"], "each encoding is its own representation"
        again = client.get(path, headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["ETag"]})
        assert again.status_code == 304, path


def test_the_projects_list_comes_from_the_build_in_a_few_queries(app, client, admin):
    fill(app, 25, 3)
    first = client.get("/api/v1/projects?limit=10", headers=admin)
    assert [project["name"] for project in first.json] == [f"p{index:03d}" for index in range(10)]
    assert len(statements_of_authorized(app, client, "/api/v1/projects?limit=10", admin)) <= 3
    client.patch("/api/v1/projects/p003", json={"retries": 7}, headers=admin)
    assert client.get("/api/v1/projects?limit=10", headers=admin).json[3]["retries"] == 7


def statements_of_authorized(app, client, path, headers):
    seen = []
    with app.app_context():
        engine = db.engine
    listener = lambda conn, cursor, statement, *rest: seen.append(statement)  # noqa: E731
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        assert client.get(path, headers=headers).status_code == 200
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    return seen


def test_the_front_page_folds_slave_columns_past_twelve_slaves(app, client):
    from master.services.pages import FOLD_SLAVES_AT
    fill(app, 3, 100)
    body = client.get("/").get_data(as_text=True)
    assert 'data-slave="' not in body, "no column per slave at 100 slaves"
    assert "Slaves (100)" in body
    row = body[body.index('id="project-p000"'):body.index('id="project-p001"')]
    assert "50 stale" in row and "50 failed" in row and "s000 (failed)" in row and "and 90 more" in row
    assert len(body) < 40_000, "a few hundred bytes per project, not per project x slave"
    assert FOLD_SLAVES_AT < 100


def test_mirrorz_json_follows_mirrorzs_rules(app, client, admin, make_project, fake_rsync):
    import re
    fake_rsync.exit_codes = [0, 23]
    assert client.get("/mirrorz.json").status_code == 404, "who the site is must be set first"
    assert "SITE_URL" in client.get("/mirrorz.json").json["message"]
    app.config.update(SITE_URL="https://mirror.example.edu", SITE_ABBR="EXAMPLE", SITE_NAME="Example Mirror")
    make_project("ok", schedule="0 * * * *")
    make_project("broken", retries=0)
    make_project("off", enabled=False)
    make_project("waiting")
    from tests.unit.test_feeds import pull
    pull(app, client, admin, "ok")
    pull(app, client, admin, "broken")
    client.post("/api/v1/projects/waiting/syncs", headers=admin)
    response = client.get("/mirrorz.json")
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    document = response.json
    assert document["version"] == 1.7 and document["info"] == []
    site = document["site"]
    assert site == {"url": "https://mirror.example.edu", "abbr": "EXAMPLE", "name": "Example Mirror"}
    assert not site["url"].endswith("/")
    token = r"[SDYFPCRU]\d*"
    for mirror in document["mirrors"]:
        assert {"cname", "url", "status"} <= set(mirror)
        assert mirror["url"].startswith("/") or mirror["url"].startswith("http")
        assert re.fullmatch(rf"{token}(?:[XNO]\d+)*", mirror["status"]), mirror["status"]
    status = {mirror["cname"]: mirror["status"] for mirror in document["mirrors"]}
    assert re.fullmatch(r"S\d+X\d+", status["ok"])
    assert re.fullmatch(r"F\d+", status["broken"]), "failed, never a full success: no O"
    assert status["off"] == "P" and status["waiting"] == "D"
