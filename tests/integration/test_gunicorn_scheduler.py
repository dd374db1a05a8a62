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


def test_a_cancel_through_an_api_worker_ends_the_pull_the_scheduler_runs(tmp_path):
    import random
    import time

    from tests.support.faults import rsync_processes_under, wait_gone
    from tests.support.rsyncd import RsyncDaemon

    data_dir = tmp_path / "data"
    logs = tmp_path / "logs"
    tree = tmp_path / "slow-tree"
    tree.mkdir()
    (tree / "big.bin").write_bytes(random.Random(2).randbytes(4 * 1024 * 1024))
    api_server = start_gunicorn_master(data_dir, workers=2, log_dir=logs)
    scheduler = start_scheduler(data_dir, log_dir=logs)
    try:
        with RsyncDaemon(tmp_path / "slow-rsyncd", {"slow": tree}) as daemon:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {api_server.admin_token}"
            base = api_server.url + "/api/v1"
            assert session.post(base + "/projects", timeout=5, json={
                "name": "slowpoke", "upstream": daemon.url("slow"),
                "rsync_options": ["--bwlimit=100"]}).status_code == 201
            run = session.post(base + "/projects/slowpoke/syncs", timeout=5).json()
            pids = wait_for(lambda: set(rsync_processes_under(data_dir)), 20,
                            message="the pull's rsync")
            started = time.monotonic()
            cancelled = session.post(f"{base}/runs/{run['id']}/cancel", timeout=5)
            assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
            wait_gone(pids, 15, what="the cancelled pull's rsync")
            elapsed = time.monotonic() - started
            assert elapsed < 8, f"the scheduler took {elapsed:.1f} s to end the cancelled pull"
            assert session.get(f"{base}/runs/{run['id']}", timeout=5).json()["state"] == "cancelled"
            assert [r["state"] for r in session.get(base + "/projects/slowpoke/runs", timeout=5).json()] == [
                "cancelled"]
    finally:
        scheduler.stop()
        api_server.stop()
