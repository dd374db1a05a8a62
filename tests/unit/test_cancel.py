"""Cancelling runs: queued, syncing (the executor ends the pull) and distributing (slaves are told)."""

import time

import pytest

from master import create_app
from master.executor import Executor
from tests.conftest import ADMIN_TOKEN
from tests.support.api_errors import assert_error_shape
from tests.support.fakes import FakeRsyncRunner, FakeSlaveClient
from master.services import distribution
from tests.unit.test_distribution import enroll, get_run, heartbeat, pull, report


def wait_until(condition, timeout=10.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def held():
    return FakeRsyncRunner(hold=True)


@pytest.fixture
def live(tmp_path, clock, held):
    """A master app whose executor runs in the background, over a pull that holds until released."""
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "WARNING",
                      "CLOCK": clock, "RSYNC_RUNNER": held, "SLAVE_CLIENT": FakeSlaveClient(),
                      "POLL_INTERVAL": 0.05})
    executor = Executor(app)
    executor.start()
    yield app, executor
    held.release()
    executor.stop(timeout=5)


def add_and_start(app, admin, held, name="debian"):
    client = app.test_client()
    assert client.post("/api/v1/projects", json={"name": name, "upstream": f"rsync://m.example.org/{name}"},
                       headers=admin).status_code == 201
    run_id = client.post(f"/api/v1/projects/{name}/syncs", headers=admin).json["id"]
    assert held.wait_started(), "the pull did not start"
    return client, run_id


def test_a_queued_run_is_cancelled_at_once(client, admin, make_project):
    make_project()
    run_id = client.post("/api/v1/projects/debian/syncs", headers=admin).json["id"]
    response = client.post(f"/api/v1/runs/{run_id}/cancel", headers=admin)
    assert response.status_code == 200, response.json
    assert response.json["state"] == "cancelled" and response.json["error"] == "cancelled by an admin"
    assert response.json["finished_at"] is not None


def test_cancelling_a_syncing_run_ends_its_pull_and_queues_nothing(live, admin, held):
    app, executor = live
    client, run_id = add_and_start(app, admin, held)
    response = client.post(f"/api/v1/runs/{run_id}/cancel", headers=admin)
    assert response.status_code == 200 and response.json["state"] == "cancelled"
    wait_until(lambda: executor.running() == [] and held.running == 0, what="the executor to end the pull")
    run = get_run(client, admin, run_id)
    assert run["state"] == "cancelled" and run["error"] == "cancelled by an admin"
    assert [r["state"] for r in client.get("/api/v1/projects/debian/runs", headers=admin).json] == ["cancelled"]
    # The project is free again: the next sync runs.
    held.release()
    again = client.post("/api/v1/projects/debian/syncs", headers=admin).json["id"]
    wait_until(lambda: get_run(client, admin, again)["state"] == "success", what="the next sync")


def test_cancelling_a_distributing_run_cancels_its_parts_and_tells_the_slaves(
        app, client, admin, make_project, fake_slaves, clock):
    make_project()
    one, two = enroll(client, "one"), enroll(client, "two")
    enroll(client, "down")
    fake_slaves.outcomes = {"down": "unreachable"}
    run_id = pull(app, client, admin)
    report(client, one, clock, run_id, state="syncing")
    response = client.post(f"/api/v1/runs/{run_id}/cancel", headers=admin)
    assert response.status_code == 200 and response.json["state"] == "cancelled"
    parts = {s["slave"]: s["state"] for s in response.json["slaves"]}
    assert parts == {"one": "cancelled", "two": "cancelled", "down": "unreachable"}
    assert sorted(fake_slaves.cancels) == [("one", run_id, "debian"), ("two", run_id, "debian")]
    # A slave that finished before it heard the cancel holds the tree, but its part stays cancelled.
    assert report(client, one, clock, run_id).status_code == 200
    assert report(client, two, clock, run_id, state="failed").status_code == 200
    run = get_run(client, admin, run_id)
    assert run["state"] == "cancelled"
    assert {s["slave"]: s["state"] for s in run["slaves"]}["one"] == "cancelled"
    feed = client.get("/api/v1/status").json[0]["slaves"]
    assert feed["one"]["state"] == "fresh" and feed["two"]["state"] == "stale"
    # Catch-up does not send the tree of a cancelled fan-out after all.
    clock.advance(4 * app.config["CATCHUP_INTERVAL"] + 1)
    heartbeat(client, two, clock)
    with app.app_context():
        assert distribution.catch_up_slaves() == 0


def test_a_cancel_that_comes_while_the_orders_are_answered_still_reaches_the_slaves(
        app, client, admin, make_project, fake_slaves):
    make_project()
    enroll(client, "one"), enroll(client, "two")
    answers = []

    def cancel_meanwhile(orders):
        # The slaves accepted (and may be pulling), the master has not recorded it: its parts are pending.
        answers.append(client.post(f"/api/v1/runs/{orders[0]['run_id']}/cancel", headers=admin))

    fake_slaves.while_answering = cancel_meanwhile
    run_id = pull(app, client, admin)
    assert answers[0].status_code == 200 and answers[0].json["state"] == "cancelled", answers[0].json
    assert {s["slave"]: s["state"] for s in get_run(client, admin, run_id)["slaves"]} == {
        "one": "cancelled", "two": "cancelled"}
    # Told by the cancel (the order may have arrived) and again by the dispatch (it may have come first).
    assert sorted(fake_slaves.cancels) == [("one", run_id, "debian")] * 2 + [("two", run_id, "debian")] * 2


def test_a_finished_or_unknown_run_cannot_be_cancelled(app, client, admin, make_project):
    make_project()
    run_id = pull(app, client, admin)
    finished = client.post(f"/api/v1/runs/{run_id}/cancel", headers=admin)
    assert_error_shape(finished, 409, code="conflict")
    assert finished.json["message"] == (f"Run {run_id} already ended (success); only a queued, syncing or "
                                        "distributing run can be cancelled.")
    assert_error_shape(client.post("/api/v1/runs/999/cancel", headers=admin), 404, code="not_found")


def test_a_reader_cannot_cancel(client, admin, reader, make_project):
    make_project()
    run_id = client.post("/api/v1/projects/debian/syncs", headers=admin).json["id"]
    assert_error_shape(client.post(f"/api/v1/runs/{run_id}/cancel", headers=reader), 403, code="forbidden")


def test_deleting_a_project_with_a_run_in_progress_needs_force_which_cancels_it(live, admin, held):
    app, executor = live
    client, run_id = add_and_start(app, admin, held)
    refused = client.delete("/api/v1/projects/debian", headers=admin)
    assert_error_shape(refused, 409, code="conflict")
    assert "?force=true" in refused.json["message"] and "cancel" in refused.json["message"]
    assert_error_shape(client.delete("/api/v1/projects/debian?force=maybe", headers=admin), 422,
                       code="validation_error")
    assert client.delete("/api/v1/projects/debian?force=true", headers=admin).status_code == 204
    wait_until(lambda: executor.running() == [] and held.running == 0, what="the executor to end the pull")
    assert client.get("/api/v1/projects/debian", headers=admin).status_code == 404
    assert client.get(f"/api/v1/runs/{run_id}", headers=admin).status_code == 404


def test_disabling_a_project_cancels_its_queued_run_and_lets_the_running_one_finish(live, admin, held):
    app, executor = live
    client, running = add_and_start(app, admin, held)
    queued = client.post("/api/v1/projects/debian/syncs", headers=admin).json["id"]
    assert queued != running
    assert client.patch("/api/v1/projects/debian", json={"enabled": False}, headers=admin).status_code == 200
    assert get_run(client, admin, queued)["state"] == "cancelled"
    assert get_run(client, admin, running)["state"] == "syncing"
    held.release()
    wait_until(lambda: get_run(client, admin, running)["state"] == "success", what="the running pull to finish")
    assert [r["state"] for r in client.get("/api/v1/projects/debian/runs", headers=admin).json] == [
        "cancelled", "success"]
