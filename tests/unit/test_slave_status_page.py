"""A slave's own public page and /jobs: what it holds per project, from its records, and nothing private."""

import datetime
import json

import pytest

from slave.status import StatusBoard, build_holdings
from slave.syncs import SyncRecords
from tests.support.fakes import FakeRsyncRunner
from tests.unit.test_slave_orders import an_order, make_slave, order, runner, services, wait_idle  # noqa: F401

SECRET_ERROR = "rsync: @ERROR: auth failed on module debian at rsync://ms-mirror1@master.example.org:8730/"


def test_without_the_setting_the_slave_serves_no_page(make_slave):
    client = make_slave().test_client()
    assert client.get("/").status_code == 404
    assert client.get("/jobs").status_code == 404


def test_the_page_and_jobs_show_what_this_slave_holds_and_no_error_text(make_slave, tmp_path):
    app = make_slave(STATUS_PAGE=True, MAX_CONCURRENT_SYNCS=1,
                     rsync_runner=FakeRsyncRunner(exit_codes=(0, 5)))
    client = app.test_client()
    assert order(client, an_order(run_id=7, project="debian")).status_code == 202
    wait_idle(app)
    assert order(client, an_order(run_id=8, project="arch")).status_code == 202
    wait_idle(app)
    record = services(app).worker.records.get(8)
    record["error"] = SECRET_ERROR
    services(app).worker.records.save(record)
    (tmp_path / "public" / "old-project").mkdir(parents=True)

    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert '<span class="badge state-success">success</span>' in html
    assert '<span class="badge state-failed">failed</span>' in html
    assert '<time datetime="2026-01-01T00:00:00Z">2026-01-01 00:00 UTC</time>' in html
    assert "old-project" in html and "1.2 KiB" in html
    assert "<h1>mirror1</h1>" in html  # PUBLIC_NAME, which defaults to SLAVE_NAME
    for private in ("auth failed", "ms-mirror1", "master.example.org", "8730", "rsync://"):
        assert private not in html
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert "<script" not in html

    jobs = client.get("/jobs")
    assert jobs.headers["Access-Control-Allow-Origin"] == "*"
    by_name = {job["name"]: job for job in jobs.json}
    assert sorted(by_name) == ["arch", "debian", "old-project"]
    assert by_name["debian"] == {
        "name": "debian", "is_master": False, "status": "success", "upstream": "", "size": "1.23K",
        "last_update": "2026-01-01 00:00:00 +0000", "last_update_ts": 1767225600,
        "last_started": "2026-01-01 00:00:00 +0000", "last_started_ts": 1767225600,
        "last_ended": "2026-01-01 00:00:00 +0000", "last_ended_ts": 1767225600,
        "next_schedule": "0001-01-01 00:00:00 +0000", "next_schedule_ts": -62135596800}
    assert by_name["arch"]["status"] == "failed" and by_name["arch"]["last_update_ts"] == -62135596800
    assert by_name["old-project"]["status"] == "none"
    assert SECRET_ERROR not in json.dumps(jobs.json)


def _record(records, run_id, project, state, at, **fields):
    stamp = at.isoformat()
    record, _ = records.create(an_order(run_id=run_id, project=project), at)
    record.update(state=state, started_at=None if state == "accepted" else stamp,
                  finished_at=stamp if state in ("success", "failed") else None, **fields)
    records.save(record)


def test_a_waiting_order_keeps_the_status_it_follows_and_a_pull_shows_syncing(tmp_path):
    records = SyncRecords(str(tmp_path / "syncs"))
    start = datetime.datetime(2026, 5, 9, 8, 0, tzinfo=datetime.timezone.utc)
    hour = datetime.timedelta(hours=1)
    _record(records, 1, "debian", "success", start, stats={"total_size": 5000})
    _record(records, 2, "debian", "failed", start + hour, error=SECRET_ERROR)
    _record(records, 3, "debian", "accepted", start + 2 * hour)
    _record(records, 4, "arch", "success", start)
    _record(records, 5, "arch", "syncing", start + hour)
    _record(records, 6, "fresh", "accepted", start)

    holdings = {holding.project: holding for holding in build_holdings(records, str(tmp_path / "none"))}

    assert holdings["debian"].status == "failed"       # the accepted run 3 waits for a slot
    assert holdings["debian"].run_id == 1 and holdings["debian"].size == 5000
    assert holdings["debian"].last_success == start
    assert holdings["debian"].last_ended == start + hour
    assert holdings["arch"].status == "syncing" and holdings["arch"].last_started == start + hour
    assert holdings["fresh"].status == "none" and holdings["fresh"].last_success is None


def test_the_board_rebuilds_when_a_record_changes(tmp_path):
    records = SyncRecords(str(tmp_path / "syncs"))
    (tmp_path / "public").mkdir()
    start = datetime.datetime(2026, 5, 9, 8, 0, tzinfo=datetime.timezone.utc)
    board = StatusBoard(records, str(tmp_path / "public"))
    assert board.holdings() == []
    _record(records, 1, "debian", "syncing", start)
    assert [holding.status for holding in board.holdings()] == ["syncing"]
    assert board.holdings() is board.holdings(), "an unchanged board is not rebuilt"
    record = records.get(1)
    record.update(state="success", finished_at=start.isoformat())
    records.save(record)
    assert [holding.status for holding in board.holdings()] == ["success"]


def test_the_page_is_titled_with_the_public_name(make_slave):
    client = make_slave(STATUS_PAGE=True, PUBLIC_NAME="mirror.example.org").test_client()
    assert "<h1>mirror.example.org</h1>" in client.get("/").get_data(as_text=True)
