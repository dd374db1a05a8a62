"""Orders from the master, through the slave's API: signed or refused, pulled once, recorded, reported."""

import json
import os
import time

import pytest

from common.clock import FakeClock
from common.rsync import RsyncJob
from common.signing import signature_headers
from common.wire import report_schema
from slave import create_app
from slave.credentials import Credentials, CredentialStore
from slave.syncs import INTERRUPTED, SyncRecords
from tests.support.fakes import FakeMasterClient, FakeRsyncRunner
from tests.support.api_errors import assert_error_shape

NAME = "mirror1"
SIGNING_KEY = "order-signing-key"
RSYNC_PASSWORD = "rsync-pass-word"
IDENTITY = Credentials(name=NAME, signing_key=SIGNING_KEY, rsync_user="ms-mirror1",
                       rsync_password=RSYNC_PASSWORD, master_url="http://master.example.org:5000")


def an_order(run_id=7, project="debian", **changes):
    return {"run_id": run_id, "project": project, "rsyncd_host": "master.example.org", "rsyncd_port": 8730,
            "timeout": 600, "catchup": False, **changes}


@pytest.fixture
def runner():
    return FakeRsyncRunner()


@pytest.fixture
def make_slave(tmp_path, runner):
    built = []

    def make(enrolled=True, rsync_runner=None, **settings):
        state_dir = tmp_path / "state"
        if enrolled and not (state_dir / "credentials.json").exists():
            CredentialStore(str(state_dir)).save(IDENTITY)
        app = create_app({
            "STATE_DIR": str(state_dir), "PUBLIC_DIR": str(tmp_path / "public"),
            "SLAVE_NAME": NAME, "SLAVE_URL": "http://mirror1.example.org:7000", "JOIN_TOKEN": "join-token",
            "LOG_LEVEL": "WARNING", "CLOCK": FakeClock(), "RSYNC_RUNNER": rsync_runner or runner,
            "MASTER_CLIENT": FakeMasterClient(), "START_BACKGROUND": False, **settings})
        built.append(app)
        return app
    yield make
    for app in built:
        services(app).stop(5)


@pytest.fixture
def slave(make_slave):
    return make_slave()


@pytest.fixture
def client(slave):
    return slave.test_client()


def services(app):
    return app.extensions["mirrorsync_slave"]


def send(client, method, path, body=None, key=SIGNING_KEY, key_id=NAME, now=None, headers=None):
    raw = b"" if body is None else json.dumps(body).encode()
    signed = signature_headers(key_id, key, method, path, raw, now=now)
    if body is not None:
        signed["Content-Type"] = "application/json"
    signed.update(headers or {})
    return client.open(path, method=method, data=raw, headers=signed)


def order(client, body, **kwargs):
    return send(client, "POST", "/api/v1/syncs", body, **kwargs)


def record(client, run_id):
    return send(client, "GET", f"/api/v1/syncs/{run_id}")


def wait_idle(app):
    assert services(app).worker.wait_idle(5), "pulls did not finish"


def outbox(app):
    return services(app).outbox.pending()


def test_a_signed_order_is_accepted_at_once_and_pulled_with_the_slaves_identity(tmp_path, make_slave):
    held = FakeRsyncRunner(hold=True)
    app = make_slave(rsync_runner=held)
    response = order(app.test_client(), an_order())
    # The answer came while rsync is still running.
    assert response.status_code == 202
    assert response.json == {"run_id": 7, "project": "debian", "state": "accepted"}
    assert held.wait_started()
    assert held.jobs == [RsyncJob(source="rsync://ms-mirror1@master.example.org:8730/debian/",
                                  destination=str(tmp_path / "public" / "debian"),
                                  password=RSYNC_PASSWORD, timeout=600)]
    held.release()
    wait_idle(app)


def test_a_finished_pull_is_recorded_and_reported(slave, client):
    assert order(client, an_order()).status_code == 202
    wait_idle(slave)
    answer = record(client, 7)
    assert answer.status_code == 200
    assert answer.json["state"] == "success"
    assert answer.json["exit_code"] == 0
    assert answer.json["stats"]["total_size"] == 1234
    assert answer.json["started_at"] == answer.json["finished_at"] == "2026-01-01T00:00:00+00:00"
    assert "order" not in answer.json
    final = outbox(slave)
    assert [(r["run_id"], r["state"]) for r in final] == [(7, "success")]
    assert report_schema.load(final[0])["stats"]["files_total"] == 3


def test_the_final_report_leaves_before_the_published_tree_is_noted(make_slave):
    # Noting the tree (its manifest saved) takes the interpreter for a while at 100,000 entries: the
    # report goes first, so the master learns of the pull without waiting for the bookkeeping.
    master = FakeMasterClient()
    app = make_slave(MASTER_CLIENT=master)
    box, worker = services(app).outbox, services(app).worker
    noted_after = []
    remember = worker.published.remember

    def noting(*args, **kwargs):
        noted_after.append([(r["run_id"], r["state"]) for r in master.reports])
        return remember(*args, **kwargs)
    worker.published.remember = noting
    box.start()
    assert order(app.test_client(), an_order()).status_code == 202
    wait_idle(app)
    assert noted_after == [[(7, "success")]]


def test_a_failed_pull_is_recorded_and_reported_as_failed(make_slave):
    app = make_slave(rsync_runner=FakeRsyncRunner(exit_codes=(10,)))
    client = app.test_client()
    order(client, an_order())
    wait_idle(app)
    answer = record(client, 7).json
    assert answer["state"] == "failed" and answer["exit_code"] == 10
    assert "socket I/O" in answer["error"]
    assert [(r["state"], r["exit_code"]) for r in outbox(app)] == [("failed", 10)]


@pytest.mark.parametrize("host, url_host", [
    ("[2001:db8::1]", "[2001:db8::1]"),
    ("2001:db8::1", "[2001:db8::1]"),
    ("192.0.2.10", "192.0.2.10"),
])
def test_the_rsync_source_brackets_ipv6_hosts(slave, client, runner, host, url_host):
    assert order(client, an_order(rsyncd_host=host)).status_code == 202
    wait_idle(slave)
    assert runner.jobs[0].source == f"rsync://ms-mirror1@{url_host}:8730/debian/"


def test_the_password_reaches_rsync_only_through_the_job(slave, client, runner):
    order(client, an_order())
    wait_idle(slave)
    job = runner.jobs[0]
    assert job.password == RSYNC_PASSWORD
    assert RSYNC_PASSWORD not in job.source and RSYNC_PASSWORD not in repr(job)


@pytest.mark.parametrize("how", ["unsigned", "wrong key", "unknown key id", "stale", "from the future",
                                 "body changed"])
def test_an_order_without_a_good_signature_is_refused_and_nothing_happens(tmp_path, slave, client, runner, how):
    body = an_order()
    if how == "unsigned":
        response = client.post("/api/v1/syncs", json=body)
    elif how == "wrong key":
        response = order(client, body, key="not-the-key")
    elif how == "unknown key id":
        response = order(client, body, key_id="mirror2")
    elif how == "stale":
        response = order(client, body, now=time.time() - 3600)
    elif how == "from the future":
        response = order(client, body, now=time.time() + 3600)
    else:
        raw = json.dumps(body).encode()
        headers = signature_headers(NAME, SIGNING_KEY, "POST", "/api/v1/syncs", raw)
        response = client.post("/api/v1/syncs", data=raw.replace(b"debian", b"ubuntu"),
                               headers=headers, content_type="application/json")
    assert_error_shape(response, 401, code="unauthorized")
    assert "Signature refused" in response.json["message"]
    wait_idle(slave)
    assert runner.jobs == []
    assert record(client, 7).status_code == 404
    assert not [n for n in os.listdir(tmp_path / "state" / "syncs") if n.endswith(".json")]
    assert outbox(slave) == []


def test_a_replayed_order_is_refused(slave, client, runner):
    raw = json.dumps(an_order()).encode()
    headers = signature_headers(NAME, SIGNING_KEY, "POST", "/api/v1/syncs", raw)
    first = client.post("/api/v1/syncs", data=raw, headers=headers, content_type="application/json")
    replay = client.post("/api/v1/syncs", data=raw, headers=headers, content_type="application/json")
    assert first.status_code == 202
    assert_error_shape(replay, 401)
    assert "replayed" in replay.json["message"]
    wait_idle(slave)
    assert len(runner.jobs) == 1


def test_a_replay_is_refused_by_a_restarted_slave(make_slave):
    app = make_slave()
    raw = json.dumps(an_order()).encode()
    headers = signature_headers(NAME, SIGNING_KEY, "POST", "/api/v1/syncs", raw)
    assert app.test_client().post("/api/v1/syncs", data=raw, headers=headers,
                                  content_type="application/json").status_code == 202
    wait_idle(app)
    services(app).stop(5)
    again = make_slave().test_client().post("/api/v1/syncs", data=raw, headers=headers,
                                            content_type="application/json")
    assert again.status_code == 401


@pytest.mark.parametrize("changes, field", [
    ({"run_id": "1"}, "run_id"),
    ({"run_id": 0}, "run_id"),
    ({"project": "../etc"}, "project"),
    ({"project": "-rf"}, "project"),
    ({"rsyncd_host": "-e"}, "rsyncd_host"),
    ({"rsyncd_host": "master;reboot"}, "rsyncd_host"),
    ({"rsyncd_port": 70000}, "rsyncd_port"),
    ({"timeout": 0}, "timeout"),
    ({"rsync_options": ["-e", "sh"]}, "rsync_options"),
])
def test_an_invalid_order_is_refused_naming_the_field(slave, client, runner, changes, field):
    response = order(client, an_order(**changes))
    assert_error_shape(response, 422, code="validation_error")
    assert field in response.json["fields"]
    assert field in response.json["message"]
    assert runner.jobs == []


@pytest.mark.parametrize("changes, summary", [
    ({"change_list": "x"}, "change_list: Must be an object (base, base_digest, ...) or null."),
    ({"change_list": {"base": "7"}}, "change_list.base_digest: Missing data for required field."),
])
def test_a_nested_field_is_named_in_the_message_as_a_path(client, runner, changes, summary):
    response = order(client, an_order(changes=True, **changes))
    assert_error_shape(response, 422, code="validation_error")
    assert response.json["message"] == f"Invalid request: {summary}", response.json
    assert runner.jobs == []


def test_an_order_missing_a_field_names_it(client):
    body = an_order()
    del body["rsyncd_port"]
    response = order(client, body)
    assert_error_shape(response, 422)
    assert "rsyncd_port" in response.json["fields"]


@pytest.mark.parametrize("raw, content_type, status", [
    (b"run_id=7", "application/x-www-form-urlencoded", 415),
    (b"{not json", "application/json", 400),
    (b"[1, 2]", "application/json", 422),
    (b"", "application/json", 400),
])
def test_a_body_that_is_not_a_json_object_is_refused(client, runner, raw, content_type, status):
    headers = signature_headers(NAME, SIGNING_KEY, "POST", "/api/v1/syncs", raw)
    response = client.post("/api/v1/syncs", data=raw, headers=headers, content_type=content_type)
    assert_error_shape(response, status)
    assert runner.jobs == []


def test_an_oversized_body_is_refused(make_slave):
    client = make_slave(MAX_CONTENT_LENGTH=1024).test_client()
    response = order(client, an_order(padding="x" * 4096))
    assert_error_shape(response, 413)
    assert "over the limit of 1024 bytes" in response.get_json()["message"]


def test_an_order_before_enrollment_is_refused_with_503(make_slave, runner):
    app = make_slave(enrolled=False)
    response = order(app.test_client(), an_order())
    assert_error_shape(response, 503, code="not_enrolled")
    assert runner.jobs == []


def test_the_same_run_ordered_twice_is_pulled_once(slave, client, runner):
    assert order(client, an_order()).status_code == 202
    wait_idle(slave)
    again = order(client, an_order())
    assert again.status_code == 202
    assert again.json == {"run_id": 7, "project": "debian", "state": "success"}
    wait_idle(slave)
    assert len(runner.jobs) == 1


def test_a_run_id_reused_for_another_project_is_a_new_order(slave, client, runner):
    assert order(client, an_order(project="tour")).status_code == 202
    wait_idle(slave)
    response = order(client, an_order(project="debian"))
    assert response.status_code == 202, response.json
    assert response.json == {"run_id": 7, "project": "debian", "state": "accepted"}
    wait_idle(slave)
    assert [job.source.rsplit("/", 2)[-2] for job in runner.jobs] == ["tour", "debian"]
    assert [(r["project"], r["state"]) for r in outbox(slave) if r["state"] != "syncing"] == [
        ("tour", "success"), ("debian", "success")]
    assert send(client, "GET", "/api/v1/syncs/7?project=tour").json["project"] == "tour"
    assert send(client, "GET", "/api/v1/syncs/7?project=debian").json["state"] == "success"
    assert_error_shape(send(client, "GET", "/api/v1/syncs/7?project=ubuntu"), 404, code="not_found")
    assert_error_shape(send(client, "GET", "/api/v1/syncs/7?project=..%2Fx"), 422, code="validation_error")


def test_records_of_an_earlier_release_named_by_run_id_alone_are_kept(tmp_path, make_slave):
    syncs = tmp_path / "state" / "syncs"
    syncs.mkdir(parents=True)
    legacy = dict(SyncRecords(str(tmp_path / "elsewhere")).create(an_order(5, project="tour"),
                                                                   FakeClock().now())[0], state="success")
    (syncs / "5.json").write_text(json.dumps(legacy))
    app = make_slave()
    assert record(app.test_client(), 5).json["project"] == "tour"
    assert sorted(os.listdir(syncs)) == ["5-tour.json"]


# Two more orders while 7 is pulling: the newest, 9, is the pending order and 8 rides along,
# whichever reached the slave first (orders cross on the way: a catch-up of 8 sent just before
# 9's dispatch), so the tree is never taken back to 8's.
@pytest.mark.parametrize("arrival", [(8, 9), (9, 8)], ids=["in-order", "crossed"])
def test_orders_during_a_running_pull_wait_and_share_the_next_pull_of_the_newest(make_slave, arrival):
    held = FakeRsyncRunner(hold=True)
    app = make_slave(rsync_runner=held)
    client = app.test_client()
    order(client, an_order(7))
    assert held.wait_started()
    assert services(app).worker.syncing_projects() == ["debian"]
    for run_id in arrival:
        assert order(client, an_order(run_id, timeout={8: 300, 9: 900}[run_id])).status_code == 202
    assert record(client, 8).json["state"] == "accepted"
    held.release()
    wait_idle(app)
    assert len(held.jobs) == 2
    assert held.jobs[1].timeout == 900, "9's order is the one pulled"
    assert held.max_running == 1
    states = {run_id: record(client, run_id).json["state"] for run_id in (7, 8, 9)}
    assert states == {7: "success", 8: "success", 9: "success"}
    assert sorted((r["run_id"], r["state"]) for r in outbox(app)) == [
        (7, "success"), (8, "success"), (9, "success")]


def cancel(client, run_id, project="debian", **kwargs):
    return send(client, "POST", f"/api/v1/syncs/{run_id}/cancel", {"project": project}, **kwargs)


def test_a_cancel_from_the_master_ends_the_running_pull_and_drops_waiting_orders(make_slave):
    held = FakeRsyncRunner(hold=True)
    app = make_slave(rsync_runner=held)
    client = app.test_client()
    order(client, an_order(7))
    assert held.wait_started()
    order(client, an_order(8))
    order(client, an_order(9))
    # 8 waits (with 9 riding along): cancelling it leaves 9 to pull next.
    waiting = cancel(client, 8)
    assert waiting.status_code == 202 and waiting.json["state"] == "failed"
    running = cancel(client, 7)
    assert running.status_code == 202, running.json
    deadline = time.monotonic() + 5
    while record(client, 7).json["state"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.02)  # the pull ends by the cancel, not by the release below
    held.release()
    wait_idle(app)
    answers = {run_id: record(client, run_id).json for run_id in (7, 8, 9)}
    assert answers[7]["state"] == "failed" and answers[7]["error"] == "cancelled by the master"
    assert answers[8]["state"] == "failed" and answers[8]["error"] == "cancelled by the master"
    assert answers[9]["state"] == "success"
    assert len(held.jobs) == 2, "7 was cut short, 9 pulled"
    finals = {r["run_id"]: r for r in outbox(app) if r["state"] != "syncing"}
    assert finals[7]["error"] == "cancelled by the master" and finals[9]["state"] == "success"
    # A cancel after the end changes nothing; one for an order never taken is a 404.
    assert cancel(client, 9).json["state"] == "success"
    assert_error_shape(cancel(client, 9, project="ubuntu"), 404, code="not_found")
    assert_error_shape(cancel(client, 9, key="wrong"), 401)
    assert_error_shape(send(client, "POST", "/api/v1/syncs/9/cancel", {}), 422, code="validation_error")


def test_cancelling_the_newest_waiting_run_pulls_the_older_one_by_its_own_order(make_slave):
    held = FakeRsyncRunner(hold=True)
    app = make_slave(rsync_runner=held)
    client = app.test_client()
    order(client, an_order(7))
    assert held.wait_started()
    order(client, an_order(8, timeout=300))
    order(client, an_order(9, timeout=900))
    assert cancel(client, 9).json["state"] == "failed"
    held.release()
    wait_idle(app)
    assert len(held.jobs) == 2
    assert held.jobs[1].timeout == 300, "8's own order is pulled, not the cancelled 9's"
    assert record(client, 8).json["state"] == "success"
    assert record(client, 9).json["error"] == "cancelled by the master"


def test_a_cancel_taken_by_another_worker_process_stops_the_pull_in_the_one_running_pulls(make_slave):
    held = FakeRsyncRunner(hold=True)
    leader, other = make_slave(rsync_runner=held), make_slave(rsync_runner=held)
    order(leader.test_client(), an_order(7))
    assert held.wait_started()
    assert cancel(other.test_client(), 7).status_code == 202
    services(leader).worker.take_queued()
    wait_idle(leader)
    assert record(leader.test_client(), 7).json["error"] == "cancelled by the master"


def test_different_projects_pull_in_parallel_up_to_the_limit(make_slave):
    held = FakeRsyncRunner(hold=True)
    app = make_slave(rsync_runner=held, MAX_CONCURRENT_SYNCS=2)
    client = app.test_client()
    for run_id, project in ((1, "debian"), (2, "ubuntu"), (3, "fedora")):
        order(client, an_order(run_id, project))
    assert held.wait_started() and held.wait_started()
    assert not held.wait_started(timeout=0.2)
    assert len(services(app).worker.syncing_projects()) == 2
    held.release()
    wait_idle(app)
    assert held.max_running == 2 and len(held.jobs) == 3


def test_the_syncing_report_goes_out_when_the_pull_starts(make_slave):
    held = FakeRsyncRunner(hold=True)
    app = make_slave(rsync_runner=held)
    order(app.test_client(), an_order())
    assert held.wait_started()
    assert [(r["run_id"], r["state"]) for r in outbox(app)] == [(7, "syncing")]
    assert report_schema.load(outbox(app)[0])["started_at"] is not None
    held.release()
    wait_idle(app)
    assert [(r["run_id"], r["state"]) for r in outbox(app)] == [(7, "success")]


def test_a_stop_cancels_the_running_pull_and_reports_it_interrupted(make_slave):
    held = FakeRsyncRunner(hold=True)
    app = make_slave(rsync_runner=held)
    client = app.test_client()
    order(client, an_order(7))
    assert held.wait_started()
    order(client, an_order(8))
    services(app).stop(5)
    reports = {r["run_id"]: r for r in outbox(app)}
    assert reports[7]["state"] == "failed"
    assert reports[7]["error"] == INTERRUPTED
    # The order that had not started yet is still accepted and runs after the next start.
    assert 8 not in reports
    restarted = make_slave(rsync_runner=FakeRsyncRunner())
    wait_idle(restarted)
    assert record(restarted.test_client(), 8).json["state"] == "success"
    assert record(restarted.test_client(), 7).json["error"] == INTERRUPTED


def test_a_pull_cut_short_by_a_crash_is_reported_failed_after_restart(tmp_path, make_slave, runner):
    records = SyncRecords(str(tmp_path / "state" / "syncs"))
    record_, _ = records.create(an_order(5), FakeClock().now())
    records.save(dict(record_, state="syncing", started_at="2026-01-01T00:00:00+00:00"))
    app = make_slave()
    answer = record(app.test_client(), 5).json
    assert answer["state"] == "failed" and answer["error"] == INTERRUPTED
    assert [(r["run_id"], r["state"]) for r in outbox(app)] == [(5, "failed")]
    assert runner.jobs == []


def test_an_order_a_crash_cut_short_before_rsync_started_is_pulled_after_restart(tmp_path, make_slave, runner):
    """Its record still says accepted: the move to syncing is written with rsync's pid."""
    records = SyncRecords(str(tmp_path / "state" / "syncs"))
    records.create(an_order(5), FakeClock().now())
    app = make_slave()
    wait_idle(app)
    assert len(runner.jobs) == 1
    assert record(app.test_client(), 5).json["state"] == "success"


def test_the_record_moves_to_syncing_with_rsyncs_pid_in_one_write(make_slave, monkeypatch):
    held = FakeRsyncRunner(hold=True)
    app = make_slave(rsync_runner=held)
    records, saved = services(app).worker.records, []
    real_save = records.save
    monkeypatch.setattr(records, "save", lambda record_: (saved.append(dict(record_)), real_save(record_))[1])
    order(app.test_client(), an_order())
    assert held.wait_started()
    assert [(r["state"], r["pid"]) for r in saved] == [("syncing", os.getpid())], "one write, state and pid"
    assert saved[0]["started_at"] is not None
    assert [(r["run_id"], r["state"]) for r in outbox(app)] == [(7, "syncing")]
    held.release()
    wait_idle(app)
    assert [r["state"] for r in saved] == ["syncing", "success"]
    assert saved[-1]["started_at"] == saved[0]["started_at"]


def test_a_pull_that_fails_before_rsync_starts_reports_when_it_started(make_slave, monkeypatch, runner):
    app = make_slave()
    monkeypatch.setattr(services(app).worker.publisher, "prepare",
                        lambda *args: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    order(app.test_client(), an_order())
    wait_idle(app)
    answer = record(app.test_client(), 7).json
    assert answer["state"] == "failed" and "cannot be published" in answer["error"]
    assert answer["started_at"] is not None and runner.jobs == []
    [report] = outbox(app)
    assert report["state"] == "failed" and report["started_at"] == answer["started_at"]


def test_records_survive_a_restart(make_slave):
    app = make_slave()
    order(app.test_client(), an_order())
    wait_idle(app)
    services(app).stop(5)
    answer = record(make_slave().test_client(), 7)
    assert answer.status_code == 200 and answer.json["state"] == "success"


def test_an_order_taken_by_another_worker_process_is_pulled_by_the_one_running_pulls(make_slave, runner):
    leader, other = make_slave(), make_slave()
    assert services(leader).worker.is_leader and not services(other).worker.is_leader
    assert order(other.test_client(), an_order()).status_code == 202
    assert runner.jobs == []
    services(leader).worker.take_queued()
    wait_idle(leader)
    assert len(runner.jobs) == 1
    assert record(other.test_client(), 7).json["state"] == "success"


def test_only_the_newest_records_are_kept(tmp_path):
    records = SyncRecords(str(tmp_path / "syncs"))
    for run_id in range(1, 8):
        created, _ = records.create(an_order(run_id), FakeClock().now())
        records.save(dict(created, state="success" if run_id != 2 else "syncing"))
    assert records.prune(keep=3) == 3
    kept = sorted(int(n.split("-")[0]) for n in os.listdir(tmp_path / "syncs") if n.endswith(".json"))
    assert kept == [2, 5, 6, 7]   # an unfinished record is never pruned


def test_get_sync_needs_a_signature(slave, client):
    order(client, an_order())
    wait_idle(slave)
    assert_error_shape(client.get("/api/v1/syncs/7"), 401)
    assert_error_shape(send(client, "GET", "/api/v1/syncs/7", key="wrong"), 401)
    assert record(client, 7).status_code == 200


def test_get_sync_of_an_unknown_run_is_404(client):
    assert_error_shape(record(client, 99), 404, code="not_found")


def test_healthz_is_public_and_says_whether_the_slave_is_enrolled(make_slave):
    assert make_slave().test_client().get("/healthz").json == {"status": "ok", "enrolled": True, "name": NAME}


def test_healthz_before_enrollment(make_slave):
    answer = make_slave(enrolled=False).test_client().get("/healthz").json
    assert answer == {"status": "ok", "enrolled": False, "name": NAME}


def test_unknown_routes_and_methods_keep_the_error_shape(client):
    assert_error_shape(client.get("/api/v1/nothing"), 404)
    assert_error_shape(client.delete("/api/v1/syncs"), 405)


def test_run_logs_are_kept_per_project(tmp_path, make_slave):
    app = make_slave(LOG_RETENTION=2)
    client = app.test_client()
    for run_id in (1, 2, 3):
        order(client, an_order(run_id))
        wait_idle(app)
    assert sorted(os.listdir(tmp_path / "state" / "logs" / "debian")) == ["2.log", "3.log"]


def test_a_run_whose_pull_failed_is_pulled_again_when_ordered_again(make_slave):
    failing = FakeRsyncRunner(exit_codes=[10, 0])
    app = make_slave(rsync_runner=failing)
    client = app.test_client()
    order(client, an_order())
    wait_idle(app)
    assert services(app).worker.records.get(7)["state"] == "failed"
    again = order(client, an_order(catchup=True))
    assert again.status_code == 202
    wait_idle(app)
    assert len(failing.jobs) == 2, "a catch-up of a failed run must pull again"
    record = services(app).worker.records.get(7)
    assert record["state"] == "success" and record["catchup"] is True


def test_a_pull_remembers_rsyncs_process_group_until_it_ends(make_slave):
    held = FakeRsyncRunner(hold=True)
    app = make_slave(rsync_runner=held)
    client = app.test_client()
    order(client, an_order())
    assert held.wait_started()
    assert services(app).worker.records.get(7)["pid"] == os.getpid()  # what the fake reports as rsync's pid
    held.release()
    wait_idle(app)
    assert services(app).worker.records.get(7)["pid"] is None


def test_an_order_with_duplicate_keys_is_refused_and_nothing_runs(client, runner):
    raw = b'{"run_id": 7, "project": "debian", "project": "other", "rsyncd_host": "127.0.0.1", ' \
          b'"rsyncd_port": 873, "timeout": 60}'
    signed = signature_headers(NAME, SIGNING_KEY, "POST", "/api/v1/syncs", raw)
    response = client.post("/api/v1/syncs", data=raw, headers={**signed, "Content-Type": "application/json"})
    assert response.status_code == 400 and "duplicate key" in response.json["message"]
    assert runner.jobs == []


def finished_reports(app, run_id):
    return [r for r in outbox(app) if r["run_id"] == run_id and r["state"] != "syncing"]


# Orders cross on the way: a catch-up of run 7 sent as run 8's pull ended can reach the slave after
# run 8's order, whether it was idle by then or still pulling 8.
@pytest.mark.parametrize("when", ["idle", "pulling"])
def test_an_older_runs_order_that_comes_after_a_newer_run_leaves_the_newer_tree_public(tmp_path, make_slave, when):
    (tmp_path / "public" / "debian").mkdir(parents=True)  # what the fake rsync "pulled": a digest to compare
    held = FakeRsyncRunner(hold=True)
    app = make_slave(rsync_runner=held)
    client = app.test_client()
    order(client, an_order(8))
    assert held.wait_started()
    if when == "idle":
        held.release()
        wait_idle(app)
    assert order(client, an_order(7, catchup=True)).status_code == 202
    held.release()
    wait_idle(app)
    assert len(held.jobs) == 1, "run 7's tree would take run 8's back"
    newer, older = record(client, 8).json, record(client, 7).json
    assert newer["state"] == older["state"] == "success"
    # The master takes a newer run's digest as a success of the older run, and keeps the slave as
    # holding run 8.
    assert older["digest"] == newer["digest"] is not None
    assert "already published run 8" in older["warning"]
    [report] = finished_reports(app, 7)
    assert report["digest"] == newer["digest"] and report["state"] == "success"


def test_an_older_runs_order_after_a_failed_pull_fails_unpulled_for_catch_up_to_repair(make_slave):
    runner = FakeRsyncRunner(exit_codes=[0, 10, 0])
    app = make_slave(rsync_runner=runner)
    client = app.test_client()
    for run_id in (8, 9):
        order(client, an_order(run_id))
        wait_idle(app)
    assert record(client, 9).json["state"] == "failed"
    order(client, an_order(7, catchup=True))
    wait_idle(app)
    assert len(runner.jobs) == 2
    older = record(client, 7).json
    assert older["state"] == "failed" and older["digest"] is None
    assert "already published run 8" in older["error"] and "a pull since failed" in older["error"]
    # The newest run is still pulled, by catch-up or by the next run.
    order(client, an_order(9, catchup=True))
    wait_idle(app)
    assert len(runner.jobs) == 3 and record(client, 9).json["state"] == "success"


def test_a_new_enrollment_pulls_run_ids_its_earlier_one_was_ordered(tmp_path, make_slave, runner):
    """A master rebuilt on a new database hands out run ids again: the slave enrolls again (it is
    forgotten there) and must pull them, not answer with the old master's results."""
    app = make_slave()
    client = app.test_client()
    for run_id in (6, 7):
        order(client, an_order(run_id))
        wait_idle(app)
    key = "a-new-masters-signing-key"
    CredentialStore(str(tmp_path / "state")).save(Credentials(
        name=NAME, signing_key=key, rsync_user="ms-mirror1", rsync_password=RSYNC_PASSWORD,
        master_url="http://master.example.org:5000"))
    # Run 3 is older than what the earlier enrollment published (7), and is pulled all the same.
    order(client, an_order(3), key=key)
    wait_idle(app)
    pulled = send(client, "GET", "/api/v1/syncs/3", key=key).json
    assert pulled["state"] == "success" and pulled["warning"] is None
    again = order(client, an_order(7), key=key)
    assert again.status_code == 202 and again.json["state"] == "accepted"
    wait_idle(app)
    assert len(runner.jobs) == 4, "run 7 is the new master's, not the one pulled before"
    assert send(client, "GET", "/api/v1/syncs/7", key=key).json["state"] == "success"
