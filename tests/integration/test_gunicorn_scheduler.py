"""Production shape: the API under gunicorn with 3 workers, plus exactly one scheduler process."""

import datetime

import pytest
import requests

from tests.support.processes import start_gunicorn_master, start_scheduler, wait_for, wait_run_finished
from tests.support.trees import assert_trees_equal

pytestmark = pytest.mark.slow


def test_three_api_workers_and_one_scheduler_run_each_scheduled_sync_exactly_once(tmp_path, upstream):
    data_dir = tmp_path / "data"
    logs = tmp_path / "logs"
    api_server = start_gunicorn_master(data_dir, workers=3, log_dir=logs)
    scheduler = start_scheduler(data_dir, log_dir=logs)
    try:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {api_server.admin_token}"
        base = api_server.url + "/api/v1"
        # Several requests, so every worker has served (and would have started a scheduler).
        for _ in range(12):
            assert session.get(base + "/projects", timeout=5).status_code == 200
        created = session.post(base + "/projects", timeout=5, json={
            "name": "every-minute", "upstream": upstream.url, "schedule": "* * * * *"})
        assert created.status_code == 201, created.text

        def scheduled_runs():
            runs = session.get(base + "/projects/every-minute/runs", timeout=5).json()
            return [run for run in runs if run["trigger"] == "schedule"]

        # The first minute boundary may pass before the scheduler's next reconciliation.
        [first] = wait_for(scheduled_runs, 130, interval=0.2, message="a scheduled run")
        run = wait_run_finished(api_server.url, api_server.admin_token, first["id"], timeout=30)
        assert run["state"] == "success", run
        assert run["coalesced"] == 0, "another scheduler fired for the same minute"
        created_at = datetime.datetime.fromisoformat(run["created_at"])
        assert created_at.second < 30, "the run was not started by the minute's timer"
        assert len([r for r in scheduled_runs()
                    if r["created_at"][:16] == run["created_at"][:16]]) == 1
        assert_trees_equal(upstream.tree, data_dir / "every-minute")
        # A second scheduler on the same deployment refuses to start.
        with pytest.raises(Exception, match="another scheduler"):
            start_scheduler(data_dir, log_dir=logs, timeout=10)
    finally:
        scheduler.stop()
        api_server.stop()
    assert "scheduler started" not in api_server.log_text(), "API workers must never run a scheduler"
