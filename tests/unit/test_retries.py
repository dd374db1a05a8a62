"""Transient upstream failures are retried with exponential backoff and jitter; schedules can splay."""

import datetime
import random

import pytest

from master.schedules import parse_crontab
from master.services import runs, syncs


def trigger(client, admin, name="debian"):
    return client.post(f"/api/v1/projects/{name}/syncs", headers=admin).json


def execute_due(app):
    """Run every due queued run once; returns their ids."""
    with app.app_context():
        run_ids = syncs.run_ids_to_execute(10)
        for run_id in run_ids:
            syncs.start_upstream_sync(run_id)
    return run_ids


def history(client, admin, name="debian"):
    return client.get(f"/api/v1/projects/{name}/runs", headers=admin).json[::-1]


@pytest.mark.parametrize("exit_code", [5, 10, 12, 30, 35])
def test_a_transient_failure_is_retried_after_a_backoff(app, client, admin, make_project, fake_rsync, clock,
                                                        exit_code):
    fake_rsync.exit_codes = [exit_code, 0]
    make_project(retries=2)
    first = trigger(client, admin)
    execute_due(app)
    failed, retry = history(client, admin)
    assert failed["state"] == "failed" and failed["id"] == first["id"]
    assert f"retrying as run {retry['id']}" in failed["warning"]
    assert failed["retried_by"] == retry["id"]
    assert (retry["state"], retry["trigger"], retry["attempt"], retry["retry_of"]) == (
        "queued", "retry", 2, failed["id"])
    wait = (datetime.datetime.fromisoformat(retry["not_before"]) - clock.now()).total_seconds()
    base = app.config["RETRY_BASE_DELAY"]
    assert base * 0.5 <= wait <= base
    assert execute_due(app) == [], "a retry waits for its backoff"
    clock.advance(wait + 1)
    assert execute_due(app) == [retry["id"]]
    assert history(client, admin)[-1]["state"] == "success"


@pytest.mark.parametrize("exit_code", [1, 2, 3, 4, 11, 23])
def test_a_permanent_failure_is_not_retried(app, client, admin, make_project, fake_rsync, exit_code):
    fake_rsync.exit_codes = [exit_code]
    make_project(retries=3)
    trigger(client, admin)
    execute_due(app)
    [failed] = history(client, admin)
    assert failed["state"] == "failed" and failed["warning"] is None


def test_retries_stop_at_the_projects_limit_and_every_attempt_is_a_visible_run(
        app, client, admin, make_project, fake_rsync, clock):
    fake_rsync.exit_codes = [10]
    make_project(retries=2)
    trigger(client, admin)
    for _ in range(5):
        execute_due(app)
        clock.advance(app.config["RETRY_MAX_DELAY"] + 1)
    attempts = history(client, admin)
    assert [(run["attempt"], run["trigger"], run["state"]) for run in attempts] == [
        (1, "manual", "failed"), (2, "retry", "failed"), (3, "retry", "failed")]
    assert [run["retry_of"] for run in attempts] == [None, attempts[0]["id"], attempts[1]["id"]]
    assert [run["retried_by"] for run in attempts] == [attempts[1]["id"], attempts[2]["id"], None]
    assert attempts[-1]["warning"] is None, "the last attempt queues nothing"


def test_a_manual_trigger_does_not_wait_for_a_pending_retry(app, client, admin, make_project, fake_rsync):
    fake_rsync.exit_codes = [10, 0]
    make_project()
    trigger(client, admin)
    execute_due(app)
    retry = history(client, admin)[-1]
    again = trigger(client, admin)
    assert again["id"] == retry["id"] and again["coalesced"] == 1 and again["not_before"] is None
    assert execute_due(app) == [retry["id"]]


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(1800, 30 * 2 ** (attempt - 1))
        delays = [runs.retry_delay(attempt, 30, 1800, rng) for _ in range(200)]
        assert all(0.5 * ceiling <= delay <= ceiling for delay in delays)
        assert max(delays) - min(delays) > 0.3 * ceiling, "jitter spreads retries out"


def test_splay_spreads_a_hundred_hourly_projects_over_the_window():
    start = datetime.datetime(2026, 11, 21, 10, 30, tzinfo=datetime.timezone.utc)
    hour = datetime.datetime(2026, 11, 21, 11, 0, tzinfo=datetime.timezone.utc)
    fires = [parse_crontab("0 * * * *", splay=600).get_next_fire_time(None, start) for _ in range(100)]
    offsets = sorted((fire - hour).total_seconds() for fire in fires)
    assert all(0 <= offset <= 600 for offset in offsets)
    assert len({int(offset) for offset in offsets}) > 80, "starts must not bunch in the same second"
    assert offsets[-1] - offsets[0] > 300
    unsplayed = {parse_crontab("0 * * * *").get_next_fire_time(None, start) for _ in range(100)}
    assert unsplayed == {hour}


@pytest.mark.parametrize("daemon_says", ["@ERROR: auth failed on module debian", "@ERROR: Unknown module 'debain'"])
def test_exit_5_from_a_wrong_password_or_module_is_not_retried(app, client, admin, make_project, daemon_says):
    from common.rsync import result_from_exit

    class Refusing:
        def run(self, job, log_path, **kwargs):
            return result_from_exit(5, daemon_says)
    app.extensions["mirrorsync"].rsync_runner = Refusing()
    make_project(retries=3)
    trigger(client, admin)
    execute_due(app)
    [failed] = history(client, admin)
    assert failed["state"] == "failed" and failed["retried_by"] is None
