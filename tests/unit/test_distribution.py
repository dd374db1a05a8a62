"""Fan-out to slaves and folding their reports into runs, with fake rsync, slaves and clock."""

import json
import os
import threading

import pytest

from common import wire
from common.signing import signature_headers
from master.services import distribution, syncs
from master.slave_client import OrderOutcome, OrderTarget, SlaveClient
from tests.conftest import JOIN_TOKEN


def enroll(client, name, url=None):
    response = client.post("/api/v1/slaves/register", json={"name": name, "url": url or f"http://{name}:7000"},
                           headers={"Authorization": f"Bearer {JOIN_TOKEN}"})
    assert response.status_code == 201, response.json
    return response.json


def signed(client, credentials, path, body, clock, **overrides):
    raw = json.dumps(body).encode()
    headers = signature_headers(credentials["name"], credentials["signing_key"], "POST", path, raw,
                                now=overrides.pop("now", clock.now().timestamp()), **overrides)
    return client.post(path, data=raw, headers=dict(headers, **{"Content-Type": "application/json"}))


def heartbeat(client, credentials, clock, url=None, **fields):
    path = f"/api/v1/slaves/{credentials['name']}/heartbeat"
    return signed(client, credentials, path, {"url": url or f"http://{credentials['name']}:7000", **fields}, clock)


def report(client, credentials, clock, run_id, state="success", project="debian", **fields):
    body = {"run_id": run_id, "project": project, "state": state, "exit_code": 0 if state == "success" else 23,
            "error": None if state == "success" else "partial transfer", **fields}
    return signed(client, credentials, f"/api/v1/slaves/{credentials['name']}/reports", body, clock)


def pull(app, client, admin, name="debian"):
    """Trigger and execute one upstream pull; returns the run id."""
    run_id = client.post(f"/api/v1/projects/{name}/syncs", headers=admin).json["id"]
    with app.app_context():
        [claimed] = syncs.run_ids_to_execute(1)
        syncs.start_upstream_sync(claimed)
    return run_id


def get_run(client, admin, run_id):
    return client.get(f"/api/v1/runs/{run_id}", headers=admin).json


def test_without_slaves_a_good_pull_ends_the_run_as_success(app, client, admin, make_project, fake_slaves):
    make_project()
    run = get_run(client, admin, pull(app, client, admin))
    assert run["state"] == "success" and run["slaves"] == []
    assert fake_slaves.orders == []


def test_a_good_pull_orders_every_enabled_slave_and_reports_finish_the_run(
        app, client, admin, make_project, fake_slaves, clock):
    make_project()
    one, two, off = enroll(client, "one"), enroll(client, "two"), enroll(client, "off")
    client.patch("/api/v1/slaves/off", json={"enabled": False}, headers=admin)
    run_id = pull(app, client, admin)
    run = get_run(client, admin, run_id)
    assert run["state"] == "distributing"
    assert {(s["slave"], s["state"]) for s in run["slaves"]} == {("one", "dispatched"), ("two", "dispatched")}
    assert sorted(name for name, _ in fake_slaves.orders) == ["one", "two"], "a disabled slave gets no order"
    order = fake_slaves.orders[0][1]
    assert order["run_id"] == run_id and order["project"] == "debian"
    assert (order["rsyncd_host"], order["rsyncd_port"]) == (app.config["RSYNCD_ADDRESS"], app.config["RSYNCD_PORT"])

    assert report(client, one, clock, run_id, state="syncing").json == {"recorded": True}
    assert report(client, one, clock, run_id).json == {"recorded": True}
    assert get_run(client, admin, run_id)["state"] == "distributing"
    assert report(client, two, clock, run_id).json == {"recorded": True}
    run = get_run(client, admin, run_id)
    assert run["state"] == "success"
    assert all(s["state"] == "success" for s in run["slaves"])
    assert off["name"] not in {s["slave"] for s in run["slaves"]}


def test_a_repeated_report_is_counted_once(app, client, admin, make_project, clock):
    make_project()
    one, two = enroll(client, "one"), enroll(client, "two")
    run_id = pull(app, client, admin)
    assert report(client, one, clock, run_id, state="failed").json == {"recorded": True}
    assert report(client, one, clock, run_id, state="failed").json == {"recorded": False}
    assert report(client, one, clock, run_id, state="success").json == {"recorded": False}
    report(client, two, clock, run_id)
    run = get_run(client, admin, run_id)
    assert run["state"] == "partial"
    assert "one (failed)" in run["error"]


@pytest.mark.parametrize("outcomes, reports, expected", [
    ({}, {"one": "success", "two": "success"}, "success"),
    ({}, {"one": "success", "two": "failed"}, "partial"),
    ({"two": "unreachable"}, {"one": "success"}, "partial"),
    ({"one": "unreachable", "two": "failed"}, {}, "failed"),
    ({}, {"one": "failed", "two": "failed"}, "failed"),
])
def test_run_outcome_folds_every_slave(app, client, admin, make_project, fake_slaves, clock,
                                       outcomes, reports, expected):
    make_project()
    credentials = {name: enroll(client, name) for name in ("one", "two")}
    fake_slaves.outcomes = outcomes
    run_id = pull(app, client, admin)
    for name, state in reports.items():
        report(client, credentials[name], clock, run_id, state=state)
    assert get_run(client, admin, run_id)["state"] == expected


def test_a_failed_upstream_pull_dispatches_nothing(app, client, admin, make_project, fake_rsync, fake_slaves):
    fake_rsync.exit_codes = [23]
    make_project()
    enroll(client, "one")
    run = get_run(client, admin, pull(app, client, admin))
    assert run["state"] == "failed" and run["slaves"] == []
    assert fake_slaves.orders == []


def test_a_silent_slave_times_out_at_its_deadline(app, client, admin, make_project, clock):
    make_project(timeout=60)
    one, _ = enroll(client, "one"), enroll(client, "silent")
    run_id = pull(app, client, admin)
    report(client, one, clock, run_id)
    with app.app_context():
        assert distribution.expire_overdue_entries() == 0
    clock.advance(60 + app.config["SLAVE_GRACE"] + 1)
    with app.app_context():
        assert distribution.expire_overdue_entries() == 1
    run = get_run(client, admin, run_id)
    assert run["state"] == "partial"
    assert {s["slave"]: s["state"] for s in run["slaves"]} == {"one": "success", "silent": "timeout"}


def test_a_slave_that_missed_a_run_catches_up_when_it_comes_back(
        app, client, admin, make_project, fake_slaves, clock):
    make_project()
    one, late = enroll(client, "one"), enroll(client, "late")
    fake_slaves.outcomes = {"late": "unreachable"}
    run_id = pull(app, client, admin)
    report(client, one, clock, run_id)
    assert get_run(client, admin, run_id)["state"] == "partial"
    feed = client.get("/api/v1/status").json[0]["slaves"]
    assert feed["one"]["state"] == "fresh" and feed["one"]["run_id"] == run_id
    assert feed["late"]["state"] == "stale"

    fake_slaves.orders.clear()
    fake_slaves.outcomes = {}
    with app.app_context():
        assert distribution.catch_up_slaves() == 0, "an offline slave is not ordered"
    clock.advance(4 * app.config["CATCHUP_INTERVAL"] + 1)
    heartbeat(client, late, clock)
    heartbeat(client, one, clock)
    with app.app_context():
        assert distribution.catch_up_slaves() == 1
        assert distribution.catch_up_slaves() == 0, "an order in flight is not sent twice"
    [(name, order)] = fake_slaves.orders
    assert name == "late" and order["run_id"] == run_id and order["catchup"] is True
    report(client, late, clock, run_id)
    feed = client.get("/api/v1/status").json[0]["slaves"]
    assert feed["late"] == {"state": "fresh", "run_id": run_id, "since": feed["late"]["since"],
                            "last_error": None}
    entry = {s["slave"]: s for s in get_run(client, admin, run_id)["slaves"]}["late"]
    assert entry["state"] == "success" and entry["attempts"] == 2


def test_a_late_success_of_the_last_missing_part_makes_the_partial_run_a_success(
        app, client, admin, make_project, fake_slaves, clock):
    make_project()
    one, late = enroll(client, "one"), enroll(client, "late")
    fake_slaves.outcomes = {"late": "unreachable"}
    run_id = pull(app, client, admin)
    report(client, one, clock, run_id)
    ended = get_run(client, admin, run_id)
    assert ended["state"] == "partial" and "late (unreachable)" in ended["error"]
    assert client.get("/api/v1/projects/debian", headers=admin).json["status"] == "partial"

    fake_slaves.outcomes = {}
    clock.advance(4 * app.config["CATCHUP_INTERVAL"] + 1)
    heartbeat(client, late, clock)
    with app.app_context():
        assert distribution.catch_up_slaves() == 1
    assert get_run(client, admin, run_id)["state"] == "partial", "still partial while the part is in flight"
    clock.advance(5)
    assert client.get("/jobs").json[0]["status"] == "failed", "partial reads as failed in tunasync's terms"
    report(client, late, clock, run_id)
    run = get_run(client, admin, run_id)
    assert run["state"] == "success"
    assert run["finished_at"] == ended["finished_at"]
    assert run["error"] is None and "late got the tree after the run ended" in run["warning"]
    assert {s["slave"]: s["state"] for s in run["slaves"]} == {"one": "success", "late": "success"}
    assert client.get("/api/v1/projects/debian", headers=admin).json["status"] == "success"
    [job] = client.get("/jobs").json
    assert job["status"] == "success", "the public documents follow the late success"
    assert job["last_update"].startswith(ended["finished_at"][:19].replace("T", " "))
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'mirrorsync_project_runs_total{project="debian",result="success"} 1.0' in metrics
    assert 'mirrorsync_project_runs_total{project="debian",result="partial"} 0.0' in metrics


def test_a_slave_whose_pull_failed_is_retried_after_a_pause(app, client, admin, make_project, clock, fake_slaves):
    make_project()
    one = enroll(client, "one")
    run_id = pull(app, client, admin)
    report(client, one, clock, run_id, state="failed")
    heartbeat(client, one, clock)
    fake_slaves.orders.clear()
    with app.app_context():
        assert distribution.catch_up_slaves() == 0, "right after an attempt, catch-up waits a while"
    clock.advance(4 * app.config["CATCHUP_INTERVAL"] + 1)
    heartbeat(client, one, clock)
    with app.app_context():
        assert distribution.catch_up_slaves() == 1
    report(client, one, clock, run_id, state="failed")
    with app.app_context():
        assert distribution.catch_up_slaves() == 0, "retries wait a while"
    clock.advance(4 * app.config["CATCHUP_INTERVAL"] + 1)
    heartbeat(client, one, clock)
    with app.app_context():
        assert distribution.catch_up_slaves() == 1


def test_a_deleted_slave_is_told_apart_from_a_wrong_signature(client, admin, clock):
    one = enroll(client, "one")
    forged = heartbeat(client, dict(one, signing_key="guessed"), clock)
    assert forged.status_code == 401 and forged.json["error"] == "unauthorized"
    assert client.delete("/api/v1/slaves/one", headers=admin).status_code == 204
    forgotten = heartbeat(client, one, clock)
    assert forgotten.status_code == 401 and forgotten.json["error"] == "unknown_slave"
    assert "knows no slave 'one'" in forgotten.json["message"] and "join token" in forgotten.json["message"]


def test_enrollment_needs_the_join_token_and_a_free_name(client, admin):
    body = {"name": "mirror1", "url": "http://mirror1:7000"}
    assert client.post("/api/v1/slaves/register", json=body).status_code == 403
    wrong = client.post("/api/v1/slaves/register", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json["error"] == "forbidden"
    credentials = enroll(client, "mirror1")
    assert set(credentials) == {"name", "signing_key", "rsync_user", "rsync_password"}
    again = client.post("/api/v1/slaves/register", json=body, headers={"Authorization": f"Bearer {JOIN_TOKEN}"})
    assert again.status_code == 409 and "name" in again.json["fields"]
    bad = client.post("/api/v1/slaves/register", json={"name": "../x", "url": "file:///etc"},
                      headers={"Authorization": f"Bearer {JOIN_TOKEN}"})
    assert bad.status_code == 422 and set(bad.json["fields"]) == {"name", "url"}
    listing = client.get("/api/v1/slaves", headers=admin)
    assert [s["name"] for s in listing.json] == ["mirror1"]
    for secret in (credentials["signing_key"], credentials["rsync_password"]):
        assert secret not in listing.text
        assert secret not in client.get("/api/v1/slaves/mirror1", headers=admin).text


def test_enrollment_is_closed_without_a_join_token(tmp_path):
    from master import create_app
    app = create_app({"DATA_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"})
    response = app.test_client().post("/api/v1/slaves/register", json={"name": "m", "url": "http://m:7000"},
                                      headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403 and "closed" in response.json["message"]


@pytest.mark.parametrize("forgery", ["unsigned", "wrong-key", "stale", "replayed", "other-slave", "tampered"])
def test_forged_heartbeats_and_reports_are_refused(app, client, admin, make_project, clock, forgery):
    make_project()
    one, other = enroll(client, "one"), enroll(client, "other")
    run_id = pull(app, client, admin)
    path = "/api/v1/slaves/one/reports"
    body = {"run_id": run_id, "project": "debian", "state": "success"}
    raw = json.dumps(body).encode()
    headers = signature_headers("one", one["signing_key"], "POST", path, raw, now=clock.now().timestamp())
    if forgery == "unsigned":
        headers = {}
    elif forgery == "wrong-key":
        headers = signature_headers("one", "not-the-key", "POST", path, raw, now=clock.now().timestamp())
    elif forgery == "stale":
        headers = signature_headers("one", one["signing_key"], "POST", path, raw,
                                    now=clock.now().timestamp() - 301)
    elif forgery == "replayed":
        first = client.post(path, data=raw, headers=dict(headers, **{"Content-Type": "application/json"}))
        assert first.status_code == 200
    elif forgery == "other-slave":
        headers = signature_headers("other", other["signing_key"], "POST", path, raw, now=clock.now().timestamp())
    elif forgery == "tampered":
        raw = json.dumps(dict(body, state="failed")).encode()
    response = client.post(path, data=raw, headers=dict(headers, **{"Content-Type": "application/json"}))
    assert response.status_code == 401, response.json
    assert response.json["error"] == "unauthorized"
    entry = {s["slave"]: s for s in get_run(client, admin, run_id)["slaves"]}["one"]
    expected = "success" if forgery == "replayed" else "dispatched"
    assert entry["state"] == expected, "a refused report must change nothing"


def test_report_for_a_run_the_slave_had_no_part_in_is_404(app, client, admin, make_project, clock):
    make_project()
    one = enroll(client, "one")
    assert report(client, one, clock, 999).status_code == 404
    run_id = pull(app, client, admin)
    mismatch = report(client, one, clock, run_id, project="other")
    assert mismatch.status_code == 422 and "project" in mismatch.json["fields"]


def test_the_last_edit_a_slave_saw_behind_its_back_is_kept_shown_and_logged_once(client, admin, clock, caplog):
    one = enroll(client, "one")
    assert client.get("/api/v1/slaves/one", headers=admin).json["last_edit"] is None
    seen = {"project": "debian", "path": "pool/main/a.deb", "seen_at": "2026-12-03T16:00:00+00:00",
            "repaired_at": None}
    with caplog.at_level("INFO", logger="master.services.slaves"):
        for _ in range(2):
            assert heartbeat(client, one, clock, last_edit=seen).status_code == 200
        repaired = dict(seen, repaired_at="2026-12-03T16:00:10+00:00")
        assert heartbeat(client, one, clock, last_edit=repaired).status_code == 200
        assert heartbeat(client, one, clock).status_code == 200   # no edit since: the last one stays
    assert client.get("/api/v1/slaves/one", headers=admin).json["last_edit"] == repaired
    said = [record.getMessage() for record in caplog.records]
    assert said.count("slave one: its published tree of debian was edited outside mirror-sync, first at "
                      "'pool/main/a.deb'") == 1, said
    assert said.count("slave one: its tree of debian is the run's again") == 1, said


@pytest.mark.parametrize("bad", [{"project": "../etc", "path": "a", "seen_at": "2026-12-03T16:00:00+00:00"},
                                 {"project": "debian", "path": "", "seen_at": "2026-12-03T16:00:00+00:00"},
                                 {"project": "debian", "path": "a", "seen_at": "yesterday"},
                                 {"project": "debian", "path": "a", "seen_at": "2026-12-03T16:00:00"},
                                 "debian"])
def test_a_malformed_last_edit_is_refused_with_422(client, clock, bad):
    one = enroll(client, "one")
    answer = heartbeat(client, one, clock, last_edit=bad)
    assert answer.status_code == 422 and "last_edit" in answer.json["fields"], answer.json


def test_heartbeats_make_a_slave_online_then_offline_after_the_timeout(client, admin, clock, app):
    one = enroll(client, "one")
    assert client.get("/api/v1/slaves/one", headers=admin).json["state"] == "new"
    assert heartbeat(client, one, clock, url="http://moved:7000").json == {"status": "ok", "enabled": True, "takes_edits": True}
    slave = client.get("/api/v1/slaves/one", headers=admin).json
    assert slave["state"] == "online" and slave["url"] == "http://moved:7000"
    assert slave["last_seen"] is not None
    clock.advance(app.config["HEARTBEAT_TIMEOUT"] + 1)
    assert client.get("/api/v1/slaves/one", headers=admin).json["state"] == "offline"
    client.patch("/api/v1/slaves/one", json={"enabled": False}, headers=admin)
    assert client.get("/api/v1/slaves/one", headers=admin).json["state"] == "disabled"
    assert client.delete("/api/v1/slaves/one", headers=admin).status_code == 204
    assert heartbeat(client, one, clock).status_code == 401, "a deleted slave can no longer sign"


def test_orders_go_out_in_parallel_through_a_bounded_pool():
    workers = 8
    barrier = threading.Barrier(workers, timeout=5)
    seen = []

    class Probe(SlaveClient):
        def send_order(self, target, order):
            barrier.wait()  # raises BrokenBarrierError unless `workers` orders are in flight at once
            seen.append(target.name)
            return OrderOutcome(target.name, True, "dispatched")
    client = Probe(workers=workers)
    targets = [(OrderTarget(f"s{i}", "http://x", "k"), {}) for i in range(4 * workers)]
    outcomes = client.send_orders(targets)
    assert len(outcomes) == len(targets) and all(o.accepted for o in outcomes)
    assert sorted(seen) == sorted(t.name for t, _ in targets)


def test_unreachable_slave_gets_a_clear_outcome():
    outcome = SlaveClient(timeout=0.5).send_order(OrderTarget("gone", "http://127.0.0.1:9", "k"), {"run_id": 1})
    assert outcome.state == "unreachable" and not outcome.accepted and "127.0.0.1:9" in outcome.error


def test_a_restart_leaves_distributing_runs_waiting_and_resends_orders_that_never_left(
        app, client, admin, make_project, fake_slaves, clock):
    from master.db import db
    from master.executor import Executor
    from master.models import SlaveRun
    make_project()
    one, two = enroll(client, "one"), enroll(client, "two")
    run_id = pull(app, client, admin)
    with app.app_context():  # the executor died after ordering "one" but before "two"
        db.session.execute(db.update(SlaveRun).where(SlaveRun.slave_name == "two").values(state="pending"))
        db.session.commit()
    fake_slaves.orders.clear()
    Executor(app).recover()
    assert [name for name, _ in fake_slaves.orders] == ["two"]
    assert get_run(client, admin, run_id)["state"] == "distributing"
    report(client, one, clock, run_id)
    report(client, two, clock, run_id)
    assert get_run(client, admin, run_id)["state"] == "success"


def test_an_ipv6_rsync_address_reaches_slaves_in_brackets(app, client, admin, make_project, fake_slaves):
    app.config["RSYNCD_ADDRESS"] = "2001:db8::1"
    make_project()
    enroll(client, "one")
    pull(app, client, admin)
    [(_, order)] = fake_slaves.orders
    assert order["rsyncd_host"] == "[2001:db8::1]"


def test_after_a_pull_dies_catch_up_sends_the_previous_tree_whose_snapshot_is_intact(
        app, client, admin, make_project, fake_rsync, fake_slaves, clock):
    fake_rsync.exit_codes = [0, 11, 0]
    make_project()
    one = enroll(client, "one")
    fake_slaves.outcomes = {"one": "unreachable"}
    good = pull(app, client, admin)
    assert get_run(client, admin, good)["state"] == "failed"  # the only slave missed it
    pull(app, client, admin)  # the next upstream pull dies midway (disk full): its snapshot is thrown away
    clock.advance(4 * app.config["CATCHUP_INTERVAL"] + 1)
    heartbeat(client, one, clock)
    fake_slaves.outcomes, fake_slaves.orders = {}, []
    with app.app_context():
        assert distribution.catch_up_slaves() == 1
    [(name, order)] = fake_slaves.orders
    assert (name, order["run_id"], order["snapshot"]) == ("one", good, str(good))


def test_the_next_pull_of_a_project_runs_while_a_silent_slave_holds_the_previous_run_open(
        app, client, admin, make_project, fake_slaves, clock):
    make_project()
    one, _ = enroll(client, "one"), enroll(client, "silent")
    first = pull(app, client, admin)
    report(client, one, clock, first)
    assert get_run(client, admin, first)["state"] == "distributing", "the silent slave has not reported"
    second = pull(app, client, admin)  # claimed and pulled at once: nothing waits for the silent slave
    assert get_run(client, admin, second)["state"] == "distributing"
    assert [order["snapshot"] for _, order in fake_slaves.orders] == [str(first)] * 2 + [str(second)] * 2
    assert client.get("/api/v1/projects/debian", headers=admin).json["status"] == "distributing"
    report(client, one, clock, second)
    with app.app_context():
        from master.models import Project
        from master.services import snapshots as snapshots_service
        # Both snapshots stay while the silent slave may still pull either.
        assert snapshots_service.needed(db_project(Project)) == {str(first), str(second)}
    assert get_run(client, admin, first)["state"] == "distributing"


def db_project(model, name="debian"):
    from master.db import db
    return db.session.execute(db.select(model).where(model.name == name)).scalar_one()


def test_a_slave_not_heard_from_is_given_up_after_the_start_timeout_and_a_heartbeating_one_is_not(
        app, client, admin, make_project, clock):
    app.config["SLAVE_START_TIMEOUT"] = 30
    make_project(timeout=3600)
    alive, _ = enroll(client, "alive"), enroll(client, "dead")
    run_id = pull(app, client, admin)
    for _ in range(3):
        clock.advance(20)
        heartbeat(client, alive, clock)
        with app.app_context():
            distribution.expire_overdue_entries()
    parts = {s["slave"]: s for s in get_run(client, admin, run_id)["slaves"]}
    assert parts["dead"]["state"] == "timeout" and "SLAVE_START_TIMEOUT" in parts["dead"]["error"]
    assert parts["alive"]["state"] == "dispatched", "a slave that heartbeats keeps its part open"
    report(client, alive, clock, run_id, state="syncing")
    clock.advance(25)
    report(client, alive, clock, run_id)
    assert get_run(client, admin, run_id)["state"] == "partial"


def test_a_report_faster_than_the_dispatch_bookkeeping_keeps_the_dispatch_time(
        app, client, admin, make_project, fake_slaves, clock):
    make_project()
    one = enroll(client, "one")

    class Eager:
        """A slave so quick that its "syncing" report lands before send_orders returns."""

        def send_orders(self, orders):
            outcomes = fake_slaves.send_orders(orders)
            for target, order in orders:
                report(client, one, clock, order["run_id"], state="syncing")
            return outcomes
    app.extensions["mirrorsync"].slave_client = Eager()
    run_id = pull(app, client, admin)
    entry = get_run(client, admin, run_id)["slaves"][0]
    assert entry["state"] == "syncing" and entry["dispatched_at"] is not None


def test_a_slave_unreachable_at_fan_out_gets_no_catch_up_before_it_is_heard_from_again(
        app, client, admin, make_project, fake_slaves, clock):
    make_project()
    late = enroll(client, "late")
    heartbeat(client, late, clock)  # online, as far as the master knows...
    fake_slaves.outcomes = {"late": "unreachable"}  # ...but it went away just now
    pull(app, client, admin)
    clock.advance(4 * app.config["CATCHUP_INTERVAL"] + 1)
    fake_slaves.orders.clear()
    with app.app_context():
        assert distribution.catch_up_slaves() == 0, "no heartbeat since the failed order: still away"
    heartbeat(client, late, clock)
    with app.app_context():
        assert distribution.catch_up_slaves() == 1


def test_a_slave_whose_order_failed_is_ordered_again_no_sooner_than_four_sweeps_after_it(
        app, client, admin, make_project, fake_slaves, clock):
    """A slave whose orders keep failing is not sent every project's order at every sweep."""
    make_project()
    late = enroll(client, "late")
    heartbeat(client, late, clock)
    fake_slaves.outcomes = {"late": "unreachable"}
    pull(app, client, admin)
    fake_slaves.outcomes = {}
    fake_slaves.orders.clear()
    clock.advance(1)
    heartbeat(client, late, clock)
    with app.app_context():
        assert distribution.catch_up_slaves() == 0, "ordered a second ago"
    clock.advance(4 * app.config["CATCHUP_INTERVAL"] - 2)
    with app.app_context():
        assert distribution.catch_up_slaves() == 0, "still inside 4 x CATCHUP_INTERVAL"
    clock.advance(2)
    with app.app_context():
        assert distribution.catch_up_slaves() == 1
    assert [name for name, _ in fake_slaves.orders] == ["late"]


def test_a_disabled_slave_can_neither_report_nor_move_and_its_parts_in_flight_end(
        app, client, admin, make_project, clock):
    make_project()
    one, two = enroll(client, "one"), enroll(client, "two")
    run_id = pull(app, client, admin)
    assert client.patch("/api/v1/slaves/two", json={"enabled": False}, headers=admin).status_code == 200
    run = get_run(client, admin, run_id)
    part = next(entry for entry in run["slaves"] if entry["slave"] == "two")
    assert part["state"] == "failed" and "disabled" in part["error"]
    refused = report(client, two, clock, run_id)
    assert refused.status_code == 403 and "disabled" in refused.json["message"]
    answer = heartbeat(client, two, clock, url="http://attacker.example:7000")
    assert answer.status_code == 200 and answer.json["enabled"] is False
    assert client.get("/api/v1/slaves/two", headers=admin).json["url"] == "http://two:7000"
    assert report(client, one, clock, run_id).status_code == 200
    assert get_run(client, admin, run_id)["state"] == "partial"


def test_a_short_change_list_travels_in_the_order_and_a_long_one_stays_in_the_module(
        app, client, admin, make_project, fake_slaves, monkeypatch):
    make_project()
    enroll(client, "one")
    first = pull(app, client, admin)
    second = pull(app, client, admin)
    [order] = [order for _, order in fake_slaves.orders if order["run_id"] == second]
    assert order["changes"] is True
    assert order["change_list"]["base"] == str(first)
    assert order["change_list"]["base_digest"] == get_run(client, admin, first)["digest"]
    assert set(order["change_list"]) == {"base", "base_digest", "changed", "deleted", "touch"}
    assert wire.OrderSchema().load(order)["change_list"]["base"] == str(first), "the slave takes it"
    monkeypatch.setattr(wire, "INLINE_CHANGES", -1)
    third = pull(app, client, admin)
    [order] = [order for _, order in fake_slaves.orders if order["run_id"] == third]
    assert order["changes"] is True and "change_list" not in order


def test_an_older_runs_success_with_the_newer_runs_digest_counts_and_keeps_the_newer_tree_held(
        app, client, admin, make_project, fake_rsync, clock):
    """A slave that already published the newer run answers an older run's late order unpulled, with
    the digest of what it serves (slave/syncs.py ``_superseded``)."""
    make_project()
    slave = enroll(client, "one")
    first = pull(app, client, admin)
    plain = fake_rsync.run

    def bringing_a_file(job, log_path, **kwargs):   # upstream changed: the second tree differs
        with open(os.path.join(job.destination, "new-file"), "w") as new:
            new.write("changed upstream\n")
        return plain(job, log_path, **kwargs)
    fake_rsync.run = bringing_a_file
    second = pull(app, client, admin)
    newer = get_run(client, admin, second)["digest"]
    assert newer is not None and newer != get_run(client, admin, first)["digest"]
    assert report(client, slave, clock, second, digest=newer).status_code == 200
    assert report(client, slave, clock, first, digest=newer, exit_code=None,
                  warning="not pulled: this slave already published run 2, which is newer").status_code == 200
    [part] = get_run(client, admin, first)["slaves"]
    assert part["state"] == "success", part
    held = {entry["name"]: entry for entry in client.get("/api/v1/status").json}["debian"]["slaves"]["one"]
    assert held["state"] == "fresh" and held["run_id"] == second


def test_catch_up_sends_every_project_to_a_slave_enrolled_after_their_fan_out_once_it_heartbeats(
        app, client, admin, make_project, fake_slaves, clock):
    """A slave with no freshness row for a project (it joined later) misses its tree all the same."""
    make_project("debian")
    make_project("fedora")
    old = enroll(client, "old")
    runs = {name: pull(app, client, admin, name) for name in ("debian", "fedora")}
    for run_id in runs.values():
        report(client, old, clock, run_id)
    new = enroll(client, "new")
    fake_slaves.orders.clear()
    with app.app_context():
        assert distribution.catch_up_slaves() == 0, "a slave never heard from is not ordered"
    heartbeat(client, new, clock)
    heartbeat(client, old, clock)
    with app.app_context():
        assert distribution.catch_up_slaves() == 2
        assert distribution.catch_up_slaves() == 0, "orders in flight are not sent twice"
    assert sorted((name, order["project"], order["run_id"]) for name, order in fake_slaves.orders) == [
        ("new", "debian", runs["debian"]), ("new", "fedora", runs["fedora"])]


def test_an_offline_slave_gets_no_order_and_catch_up_sends_the_tree_once_it_is_back(
        app, client, admin, make_project, fake_slaves, clock):
    """A host that is down would hold the pull's worker for DISPATCH_TIMEOUT at every run."""
    make_project()
    one, silent = enroll(client, "one"), enroll(client, "silent")
    heartbeat(client, one, clock)
    heartbeat(client, silent, clock)
    clock.advance(app.config["HEARTBEAT_TIMEOUT"] + 1)
    heartbeat(client, one, clock)
    run_id = pull(app, client, admin)
    assert [name for name, _ in fake_slaves.orders] == ["one"]
    parts = {entry["slave"]: entry for entry in get_run(client, admin, run_id)["slaves"]}
    assert parts["silent"]["state"] == "unreachable" and parts["silent"]["attempts"] == 0
    assert "offline" in parts["silent"]["error"] and "no order sent" in parts["silent"]["error"]
    report(client, one, clock, run_id)
    assert get_run(client, admin, run_id)["state"] == "partial"

    fake_slaves.orders.clear()
    heartbeat(client, silent, clock)
    with app.app_context():
        assert distribution.catch_up_slaves() == 1
    [(name, order)] = fake_slaves.orders
    assert name == "silent" and order["run_id"] == run_id and order["catchup"] is True


def wait_pulled_while_orders_wait(app, first, second):
    """The ``second`` run's pull ends while the ``first`` run's orders still wait on their slave."""
    from master.db import db
    from master.models import Run
    from tests.support.processes import wait_for

    def state(run_id):
        with app.app_context():
            return db.session.get(Run, run_id).state
    wait_for(lambda: state(second) == "distributing", 10,
             message=lambda: f"the second pull to end while the first run's orders wait ({state(second)})")
    assert state(first) == "distributing"


def test_a_pull_whose_orders_wait_on_a_slave_frees_its_slot_for_the_next_pull(
        app, client, admin, make_project, fake_slaves, clock):
    """A slave that takes the order's whole DISPATCH_TIMEOUT to answer holds back no other pull."""
    from master.executor import Executor
    app.config["MAX_CONCURRENT_SYNCS"] = 1
    make_project("first")
    make_project("second")
    heartbeat(client, enroll(client, "slow"), clock)
    answering, answer = threading.Event(), threading.Event()

    def slow_for_first(orders):
        if any(order["project"] == "first" for order in orders):
            answering.set()
            assert answer.wait(10)
    fake_slaves.while_answering = slow_for_first
    first = client.post("/api/v1/projects/first/syncs", headers=admin).json["id"]
    second = client.post("/api/v1/projects/second/syncs", headers=admin).json["id"]
    executor = Executor(app)
    try:
        executor._claim_and_start()
        assert answering.wait(10), "the first run's orders did not go out"
        executor._claim_and_start()   # the one slot is free again: the first run's pull is over
        wait_pulled_while_orders_wait(app, first, second)
    finally:
        answer.set()
        executor.stop(timeout=10)


def test_a_pull_whose_orders_wait_on_a_slave_holds_back_not_even_its_own_projects_next_pull(
        app, client, admin, make_project, fake_slaves, clock):
    """The next run of the same project is pulled while the orders of the run before still wait."""
    from master.executor import Executor
    make_project("only")
    heartbeat(client, enroll(client, "slow"), clock)
    answering, answer = threading.Event(), threading.Event()

    def slow_for_the_first_run(orders):
        if any(order["run_id"] == first for order in orders):
            answering.set()
            assert answer.wait(10)
    fake_slaves.while_answering = slow_for_the_first_run
    first = client.post("/api/v1/projects/only/syncs", headers=admin).json["id"]
    executor = Executor(app)
    try:
        executor._claim_and_start()
        assert answering.wait(10), "the first run's orders did not go out"
        second = client.post("/api/v1/projects/only/syncs", headers=admin).json["id"]
        executor._claim_and_start()
        wait_pulled_while_orders_wait(app, first, second)
        assert [order["run_id"] for _, order in fake_slaves.orders] == [first, second]
    finally:
        answer.set()
        executor.stop(timeout=10)
