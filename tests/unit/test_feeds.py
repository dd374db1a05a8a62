"""The tunasync-shaped /jobs feed and Prometheus /metrics, parsed as their consumers would."""

import datetime
import re

from prometheus_client.parser import text_string_to_metric_families

from master.services import syncs
from tests.unit.test_distribution import enroll, heartbeat, report

TEXT_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}$")
JOB_FIELDS = {"name", "is_master", "status", "last_update", "last_update_ts", "last_started", "last_started_ts",
              "last_ended", "last_ended_ts", "next_schedule", "next_schedule_ts", "upstream", "size"}


def pull(app, client, admin, name="debian"):
    run_id = client.post(f"/api/v1/projects/{name}/syncs", headers=admin).json["id"]
    with app.app_context():
        for claimed in syncs.run_ids_to_execute(1):
            syncs.start_upstream_sync(claimed)
    return client.get(f"/api/v1/runs/{run_id}", headers=admin).json


def samples(client):
    """(metric sample name, labels as a sorted tuple) -> value."""
    text = client.get("/metrics")
    assert text.status_code == 200 and text.headers["Content-Type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(text.data.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_jobs_has_tunasyncs_fields_and_formats(app, client, admin, make_project, clock):
    make_project("never", schedule="0 * * * *", upstream="rsync://mirror@mirror.example.org/never")
    make_project("synced")
    run = pull(app, client, admin, "synced")
    jobs = {job["name"]: job for job in client.get("/jobs").json}
    for job in jobs.values():
        assert set(job) == JOB_FIELDS and job["is_master"] is True
        for field in ("last_update", "last_started", "last_ended", "next_schedule"):
            assert TEXT_TIME.match(job[field]), job[field]
            assert isinstance(job[f"{field}_ts"], int)
    never, synced = jobs["never"], jobs["synced"]
    assert never["status"] == "none" and never["size"] == "unknown"
    assert never["upstream"] == "rsync://mirror.example.org/never", "no user names in a public feed"
    assert never["last_update"] == "0001-01-01 00:00:00 +0000" and never["last_update_ts"] == -62135596800
    assert never["next_schedule_ts"] > 0
    finished = datetime.datetime.fromisoformat(run["finished_at"])
    assert synced["status"] == "success" and synced["size"] == "1.2K"
    assert synced["last_update_ts"] == int(finished.timestamp())
    assert synced["last_update"] == finished.strftime("%Y-%m-%d %H:%M:%S +0000")


def test_jobs_maps_every_state_onto_tunasyncs(app, client, admin, make_project, fake_rsync):
    make_project("disabled", enabled=False)
    fake_rsync.exit_codes = [23]
    make_project("broken")
    pull(app, client, admin, "broken")
    make_project("queued")
    client.post("/api/v1/projects/queued/syncs", headers=admin)
    statuses = {job["name"]: job["status"] for job in client.get("/jobs").json}
    assert statuses == {"disabled": "disabled", "queued": "pre-syncing", "broken": "failed"}


def test_metrics_per_project_parse_with_prometheus_own_parser(app, client, admin, make_project, fake_rsync):
    fake_rsync.exit_codes = [0, 23, 0]
    make_project()
    runs = [pull(app, client, admin) for _ in range(3)]
    found = samples(client)
    project = (("project", "debian"),)
    assert found[("mirrorsync_project_runs_total", project + (("result", "success"),))] == 2
    assert found[("mirrorsync_project_runs_total", project + (("result", "failed"),))] == 1
    assert found[("mirrorsync_project_last_success_timestamp_seconds", project)] == \
        datetime.datetime.fromisoformat(runs[2]["finished_at"]).timestamp()
    assert found[("mirrorsync_project_last_run_bytes_received", project)] == 100
    assert found[("mirrorsync_project_size_bytes", project)] == 1234
    assert ("mirrorsync_project_last_run_duration_seconds", project) in found
    assert found[("mirrorsync_project_state", project + (("state", "success"),))] == 1
    assert found[("mirrorsync_project_state", project + (("state", "failed"),))] == 0


def test_metrics_per_slave_show_last_seen_and_lag(app, client, admin, make_project, clock):
    make_project()
    one = enroll(client, "one")
    enroll(client, "late")
    heartbeat(client, one, clock)
    run = pull(app, client, admin)
    report(client, one, clock, run["id"])
    clock.advance(90)
    heartbeat(client, one, clock)
    found = samples(client)
    assert found[("mirrorsync_slave_up", (("slave", "one"),))] == 1
    assert found[("mirrorsync_slave_up", (("slave", "late"),))] == 0
    assert found[("mirrorsync_slave_last_seen_timestamp_seconds", (("slave", "one"),))] > 0
    assert found[("mirrorsync_slave_lag_seconds", (("project", "debian"), ("slave", "one")))] == 0
    assert found[("mirrorsync_slave_lag_seconds", (("project", "debian"), ("slave", "late")))] >= 90
