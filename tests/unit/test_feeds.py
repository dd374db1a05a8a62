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
    assert synced["status"] == "success" and synced["size"] == "1.23K", "rsync -h: base 1000, two decimals"
    assert synced["last_update_ts"] == int(finished.timestamp())
    assert synced["last_update"] == finished.strftime("%Y-%m-%d %H:%M:%S +0000")


def test_jobs_maps_every_state_onto_tunasyncs(app, client, admin, make_project, fake_rsync):
    make_project("disabled", enabled=False)
    fake_rsync.exit_codes = [23]
    make_project("broken", retries=0)
    pull(app, client, admin, "broken")
    make_project("queued")
    client.post("/api/v1/projects/queued/syncs", headers=admin)
    statuses = {job["name"]: job["status"] for job in client.get("/jobs").json}
    assert statuses == {"disabled": "disabled", "queued": "none", "broken": "failed"}, \
        "a run waiting for a slot shows the status before it, as tunasync does"


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
    assert found[("mirrorsync_project_last_run_received_bytes", project)] == 100
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


def jobs_of(client):
    return {job["name"]: job for job in client.get("/jobs").json}


def test_a_queued_run_keeps_the_previous_status_until_its_pull_starts(app, client, admin, make_project, clock):
    make_project()
    first = pull(app, client, admin)
    clock.advance(600)
    client.post("/api/v1/projects/debian/syncs", headers=admin)
    waiting = jobs_of(client)["debian"]
    assert waiting["status"] == "success", "queued is not pre-syncing: tunasync has no slot for it yet"
    assert waiting["last_started_ts"] == int(datetime.datetime.fromisoformat(first["started_at"]).timestamp())
    with app.app_context():
        [claimed] = syncs.run_ids_to_execute(1)
    started = jobs_of(client)["debian"]
    assert started["status"] == "syncing"
    assert started["last_started_ts"] == int(clock.now().timestamp()), "stamped when the pull starts"
    with app.app_context():
        syncs.start_upstream_sync(claimed)
    assert jobs_of(client)["debian"]["status"] == "success"


def test_a_partial_run_is_failed_with_last_update_at_the_last_full_success(app, client, admin, make_project,
                                                                           clock):
    make_project()
    one, two = enroll(client, "one"), enroll(client, "two")
    full = pull(app, client, admin)
    for credentials in (one, two):
        report(client, credentials, clock, full["id"])
    full_end = client.get(f"/api/v1/runs/{full['id']}", headers=admin).json["finished_at"]
    clock.advance(3600)
    partial = pull(app, client, admin)
    report(client, one, clock, partial["id"])
    report(client, two, clock, partial["id"], state="failed")
    assert client.get(f"/api/v1/runs/{partial['id']}", headers=admin).json["state"] == "partial"
    job = jobs_of(client)["debian"]
    assert job["status"] == "failed"
    assert job["last_update_ts"] == int(datetime.datetime.fromisoformat(full_end).timestamp())
    assert job["last_ended_ts"] == int(clock.now().timestamp()) > job["last_update_ts"], \
        "mirror-web shows the attempt after the last success"
    client.post("/api/v1/projects/debian/syncs", headers=admin)
    assert jobs_of(client)["debian"]["status"] == "failed", "queued behind a partial run: still failed"


def test_sizes_read_as_rsync_h_prints_them():
    from common.tunasync import rsync_size
    assert [rsync_size(size) for size in (None, 0, 999, 1000, 130990, 55_610_000_000, 1_234_567_890_123)] == \
        ["unknown", "0", "999", "1.00K", "130.99K", "55.61G", "1.23T"]


def test_a_disabled_project_keeps_its_next_schedule(client, admin, make_project, clock):
    clock.advance(60)
    make_project("paused", schedule="0 * * * *", enabled=False)
    make_project("manual", enabled=False)
    jobs = jobs_of(client)
    assert jobs["paused"]["status"] == "disabled"
    assert jobs["paused"]["next_schedule_ts"] == int(clock.now().timestamp()) + 3600 - 60
    assert jobs["manual"]["next_schedule_ts"] == -62135596800


def _strict_media_type(value):
    """Parse a Content-Type by RFC 9110's grammar, refusing what Go's mime.ParseMediaType refuses
    (a repeated parameter, a bad token)."""
    token = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
    match = re.fullmatch(rf"({token})/({token})((?:\s*;\s*{token}=(?:{token}|\"[^\"]*\"))*)", value)
    assert match, f"not a media type: {value!r}"
    params = re.findall(rf";\s*({token})=({token}|\"[^\"]*\")", match.group(3))
    names = [name.lower() for name, _ in params]
    assert len(names) == len(set(names)), f"repeated parameter in {value!r}"
    return f"{match.group(1)}/{match.group(2)}".lower(), {name.lower(): v.strip('"') for name, v in params}


def test_metrics_content_type_has_one_charset_and_parses_strictly(client):
    media, params = _strict_media_type(client.get("/metrics").headers["Content-Type"])
    assert media == "text/plain" and params == {"version": "0.0.4", "charset": "utf-8"}


def test_metric_names_follow_prometheus_conventions(app, client, admin, make_project):
    from master.services.feeds import EXPORTED_METRICS
    make_project()
    enroll(client, "one")
    pull(app, client, admin)
    families = list(text_string_to_metric_families(client.get("/metrics").data.decode()))
    assert {family.name for family in families} >= {"mirrorsync_project_runs", "mirrorsync_slave_up"}
    for name in EXPORTED_METRICS:
        assert re.fullmatch(r"mirrorsync_[a-z_]+", name)
        assert not name.endswith("_received") and "bytes_" not in name, "units go last: ..._bytes"
    for family in families:
        if family.type == "counter":
            assert all(sample.name.endswith("_total") for sample in family.samples)


def test_public_documents_answer_304_to_their_etag(app, client, admin, make_project):
    app.config.update(SITE_URL="https://mirror.example.edu", SITE_ABBR="EXAMPLE")
    make_project()
    for path in ("/jobs", "/api/v1/status", "/mirrorz.json", "/", "/metrics"):
        first = client.get(path)
        assert first.status_code == 200 and first.headers["ETag"] and first.headers["Cache-Control"], path
        again = client.get(path, headers={"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304 and again.data == b"", path
    etag = client.get("/jobs").headers["ETag"]
    client.patch("/api/v1/projects/debian", json={"schedule": "0 * * * *"}, headers=admin)
    changed = client.get("/jobs", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json[0]["next_schedule_ts"] > 0
