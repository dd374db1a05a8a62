"""Progress reports of slave pulls: throttled on the slave, recorded on the part, and never after the end."""

import json
import os
import threading

import pytest

from common.clock import FakeClock
from common.rsync import RsyncStats, result_from_exit
from master.services import distribution
from slave import create_app
from slave.credentials import CredentialStore
from slave.outbox import Outbox
from slave.progress import ProgressReporter
from tests.support.fakes import FakeMasterClient
from tests.unit.test_distribution import enroll, get_run, heartbeat, pull, report
from tests.unit.test_slave_orders import IDENTITY, an_order, order, services

HALF = {"bytes": 52428800, "percent": 50, "rate": "12.34MB/s", "eta": "0:00:05",
        "files_transferred": 3, "files_to_check": 10, "files_total": 20}


def parts_of(client, admin, run_id):
    return {part["slave"]: part for part in get_run(client, admin, run_id)["slaves"]}


# --- the slave: at most one progress report per PROGRESS_INTERVAL ----------------------------


def test_progress_is_passed_on_at_most_once_per_interval_and_never_after_the_pull_ended():
    clock, sent = FakeClock(), []
    reporter = ProgressReporter(sent.append, 10, clock.monotonic)
    seen = []
    for step, seconds in enumerate([0, 3, 6.9, 0.1, 5, 4.9, 0.2, 30]):
        clock.advance(seconds)
        seen.append(reporter({"percent": step}))
    # The start of the pull was reported when the reporter was made: the first progress waits 10 s.
    assert [p["percent"] for p in sent] == [3, 6, 7]
    assert seen == [False, False, False, True, False, False, True, True]
    reporter.close()
    clock.advance(60)
    assert reporter({"percent": 99}) is False
    assert [p["percent"] for p in sent] == [3, 6, 7]


def a_report(state, **fields):
    return {"run_id": 7, "project": "debian", "state": state, "started_at": "2026-01-01T00:00:00+00:00",
            "finished_at": None, "exit_code": None, "error": None, "warning": None, "stats": None, **fields}


def test_a_progress_report_never_replaces_a_final_report_waiting_in_the_outbox(tmp_path):
    box = Outbox(str(tmp_path / "outbox"), client=None, credentials=lambda: None, retry_max=1)
    box.put(a_report("syncing"))
    assert box.put_progress(a_report("syncing", progress=HALF)) is True
    assert [r.get("progress") for r in box.pending()] == [HALF]
    box.put(a_report("success", exit_code=0))
    assert box.put_progress(a_report("syncing", progress=HALF)) is False
    assert [(r["state"], r.get("progress")) for r in box.pending()] == [("success", None)]


class ProgressRunner:
    """Plays a long rsync: reports progress before and after ``clock`` moves on by ``seconds``, then
    holds until released; keeps its progress callback so a test can call it late."""

    def __init__(self, clock, seconds):
        self.clock, self.seconds = clock, seconds
        self.reported = threading.Event()
        self.release = threading.Event()
        self.on_progress = None

    def run(self, job, log_path, on_spawn=None, cancel=None, on_progress=None):
        self.on_progress = on_progress
        on_spawn(os.getpid())                   # as the real runner does, before any output
        on_progress(dict(HALF, percent=10))     # too soon after the start: not sent
        self.clock.advance(self.seconds)
        on_progress(HALF)
        self.reported.set()
        assert self.release.wait(5)
        result = result_from_exit(0, "")
        result.stats = RsyncStats(files_total=20, files_transferred=10, total_size=100)
        return result


@pytest.fixture
def slave_app(tmp_path):
    clock = FakeClock()
    runner = ProgressRunner(clock, 10)
    CredentialStore(str(tmp_path / "state")).save(IDENTITY)
    app = create_app({
        "STATE_DIR": str(tmp_path / "state"), "PUBLIC_DIR": str(tmp_path / "public"), "SLAVE_NAME": IDENTITY.name,
        "SLAVE_URL": "http://mirror1.example.org:7000", "JOIN_TOKEN": "join-token", "LOG_LEVEL": "WARNING",
        "CLOCK": clock, "RSYNC_RUNNER": runner, "MASTER_CLIENT": FakeMasterClient(), "START_BACKGROUND": False,
        "PROGRESS_INTERVAL": 10})
    yield app, runner
    runner.release.set()
    services(app).stop(5)


def test_a_running_pull_reports_its_progress_and_the_final_report_is_the_last_word(slave_app):
    app, runner = slave_app
    outbox = services(app).outbox
    assert order(app.test_client(), an_order()).status_code == 202
    assert runner.reported.wait(5)
    [waiting] = outbox.pending()
    assert (waiting["state"], waiting["progress"]) == ("syncing", HALF)
    assert waiting["started_at"] is not None
    runner.release.set()
    assert services(app).worker.wait_idle(5)
    [final] = outbox.pending()
    assert final["state"] == "success" and "progress" not in final
    runner.on_progress(dict(HALF, percent=100))   # the runner's output thread, late
    runner.clock.advance(60)
    runner.on_progress(dict(HALF, percent=100))
    assert [r["state"] for r in outbox.pending()] == ["success"]


# --- the master: progress on the part, the start deadline moved on, nothing after the end -----


def test_progress_reports_keep_a_long_pull_open_and_show_on_its_part(app, client, admin, make_project, clock):
    app.config["SLAVE_START_TIMEOUT"] = 30
    make_project(timeout=3600)
    slow = enroll(client, "slow")
    run_id = pull(app, client, admin)
    assert report(client, slow, clock, run_id, state="syncing").json == {"recorded": True}
    assert parts_of(client, admin, run_id)["slow"]["progress"] is None
    # No heartbeat at all: only progress reports, each within SLAVE_START_TIMEOUT of the last.
    for percent in (20, 40, 60, 80):
        clock.advance(25)
        answer = report(client, slow, clock, run_id, state="syncing", progress=dict(HALF, percent=percent))
        assert answer.json == {"recorded": True}, answer.json
        with app.app_context():
            assert distribution.expire_overdue_entries() == 0
    part = parts_of(client, admin, run_id)["slow"]
    assert part["state"] == "syncing" and part["progress"] == dict(HALF, percent=80)
    assert "80%" in client.get(f"/runs/{run_id}").get_data(as_text=True), "the run's page shows it too"
    # 100 s after the pull started, longer than SLAVE_START_TIMEOUT: the part is still open, and ends well.
    clock.advance(25)
    report(client, slow, clock, run_id)
    run = get_run(client, admin, run_id)
    assert run["state"] == "success" and run["slaves"][0]["state"] == "success"


def test_a_slave_that_goes_silent_mid_pull_times_out_with_its_last_progress_kept(
        app, client, admin, make_project, clock):
    app.config["SLAVE_START_TIMEOUT"] = 30
    make_project(timeout=3600)
    silent = enroll(client, "silent")
    run_id = pull(app, client, admin)
    report(client, silent, clock, run_id, state="syncing", progress=dict(HALF, percent=30))
    clock.advance(31)
    with app.app_context():
        assert distribution.expire_overdue_entries() == 1
    part = parts_of(client, admin, run_id)["silent"]
    assert part["state"] == "timeout" and "not heard from for 30 seconds (SLAVE_START_TIMEOUT)" in part["error"]
    assert part["progress"]["percent"] == 30
    # A progress report that was on its way does not reopen the part.
    assert report(client, silent, clock, run_id, state="syncing", progress=HALF).json == {"recorded": True}
    part = parts_of(client, admin, run_id)["silent"]
    assert part["state"] == "timeout" and part["progress"]["percent"] == 30


def test_a_progress_report_after_the_final_one_changes_nothing(app, client, admin, make_project, clock):
    make_project(timeout=3600)
    one = enroll(client, "one")
    run_id = pull(app, client, admin)
    report(client, one, clock, run_id, state="syncing", progress=dict(HALF, percent=90))
    clock.advance(5)
    report(client, one, clock, run_id)
    before = get_run(client, admin, run_id)
    assert before["state"] == "success"
    clock.advance(5)
    late = report(client, one, clock, run_id, state="syncing", progress=dict(HALF, percent=95))
    assert late.status_code == 200 and late.json == {"recorded": False}
    after = get_run(client, admin, run_id)
    assert after == before, "a late progress report reopens nothing and records nothing"
    heartbeat(client, one, clock)
    assert get_run(client, admin, run_id)["slaves"] == before["slaves"]


@pytest.mark.parametrize("progress, field", [
    (dict(HALF, percent=150), "percent"),
    (dict(HALF, rate="$(reboot)"), "rate"),
    (dict(HALF, bytes=-1), "bytes"),
    (dict(HALF, colour="red"), "colour"),
    ("half", "_schema"),
])
def test_a_malformed_progress_is_refused_naming_the_field(app, client, admin, make_project, clock, progress, field):
    make_project(timeout=3600)
    one = enroll(client, "one")
    run_id = pull(app, client, admin)
    answer = report(client, one, clock, run_id, state="syncing", progress=progress)
    assert answer.status_code == 422, answer.json
    assert field in json.dumps(answer.json["fields"]), answer.json
    assert parts_of(client, admin, run_id)["one"]["state"] == "dispatched"
