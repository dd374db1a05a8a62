"""Run life cycle with a fake rsync and a fake clock: states, coalescing, project fields."""

import os

import pytest
import sqlalchemy as sa

from common.states import RunState
from master.db import db
from master.executor import Executor
from master.models import Run
from master.services import projects, runs, syncs


def trigger(client, admin, name="debian"):
    response = client.post(f"/api/v1/projects/{name}/syncs", headers=admin)
    assert response.status_code == 202, response.json
    return response.json


def execute_one(app):
    """Claim the oldest queued run and pull it, as the executor would."""
    with app.app_context():
        [run_id] = syncs.run_ids_to_execute(1)
        syncs.start_upstream_sync(run_id)
    return run_id


def get_run(client, admin, run_id):
    return client.get(f"/api/v1/runs/{run_id}", headers=admin).json


def test_manual_trigger_answers_202_with_a_queued_run(client, admin, make_project):
    make_project()
    response = client.post("/api/v1/projects/debian/syncs", headers=admin)
    assert response.status_code == 202
    assert response.json["state"] == "queued"
    assert response.json["trigger"] == "manual"
    assert response.headers["Location"].endswith(f"/api/v1/runs/{response.json['id']}")
    assert client.get("/api/v1/projects/debian", headers=admin).json["status"] == "queued"


def test_second_trigger_while_queued_coalesces_into_the_same_run(client, admin, make_project):
    make_project()
    first = trigger(client, admin)
    second = trigger(client, admin)
    assert second["id"] == first["id"]
    assert second["coalesced"] == 1
    assert len(client.get("/api/v1/projects/debian/runs", headers=admin).json) == 1


def test_triggers_during_a_sync_coalesce_into_one_follow_up(app, client, admin, make_project):
    make_project()
    first = trigger(client, admin)
    with app.app_context():
        runs.claim_queued_runs(1)
    follow_ups = [trigger(client, admin) for _ in range(3)]
    assert {run["id"] for run in follow_ups} == {follow_ups[0]["id"]} != {first["id"]}
    assert follow_ups[-1]["coalesced"] == 2
    # While the first run syncs, the project shows it, not the queued follow-up.
    assert client.get("/api/v1/projects/debian", headers=admin).json["status"] == "syncing"
    with app.app_context():
        assert runs.claim_queued_runs(5) == [], "a project must never sync twice at once"


def test_successful_pull_stamps_run_and_project(app, client, admin, make_project, clock, fake_rsync):
    make_project(rsync_options=["--bwlimit=500"], excludes=["*.iso"], upstream_password="s3cret")
    run = trigger(client, admin)
    clock.advance(60)
    execute_one(app)
    run = get_run(client, admin, run["id"])
    assert run["state"] == "success"
    assert run["exit_code"] == 0
    assert run["stats"]["total_size"] == 1234
    assert run["started_at"] and run["finished_at"]
    project = client.get("/api/v1/projects/debian", headers=admin).json
    assert project["status"] == "success"
    assert project["last_success"] == run["finished_at"]
    assert project["last_started"] == run["started_at"]
    assert project["last_ended"] == run["finished_at"]
    assert project["size"] == 1234
    [job] = fake_rsync.jobs
    assert job.source == "rsync://mirror.example.org/debian"
    # The pull writes a fresh snapshot of its run, which then becomes DATA_DIR/<project>.
    assert job.destination == os.path.join(app.config["DATA_DIR"], ".snapshots", "debian", f"{run['id']}.partial")
    assert os.readlink(os.path.join(app.config["DATA_DIR"], "debian")) == f".snapshots/debian/{run['id']}"
    # The whole list at once (--no-inc-recursive), before the project's own options, which can take it back.
    assert job.options == ("--no-delay-updates", "--no-inc-recursive", "--info=name1", "--out-format=%i %n",
                           "--bwlimit=500") and job.excludes == ("*.iso",)
    assert job.password == "s3cret"


def test_failure_never_overwrites_last_success(app, client, admin, make_project, clock, fake_rsync):
    fake_rsync.exit_codes = [0, 23]
    make_project()
    trigger(client, admin)
    execute_one(app)
    good = client.get("/api/v1/projects/debian", headers=admin).json["last_success"]
    clock.advance(3600)
    failed = trigger(client, admin)
    execute_one(app)
    run = get_run(client, admin, failed["id"])
    assert run["state"] == "failed" and run["exit_code"] == 23
    assert "partial transfer" in run["error"].lower()
    project = client.get("/api/v1/projects/debian", headers=admin).json
    assert project["status"] == "failed"
    assert project["last_success"] == good
    assert project["last_ended"] == run["finished_at"] != good


def test_vanished_files_exit_24_is_success_with_a_warning(app, client, admin, make_project, fake_rsync):
    fake_rsync.exit_codes = [24]
    make_project()
    run = trigger(client, admin)
    execute_one(app)
    run = get_run(client, admin, run["id"])
    assert run["state"] == "success"
    assert run["exit_code"] == 24
    assert "vanished" in run["warning"]


def test_a_runner_crash_fails_the_run_instead_of_leaving_it_syncing(app, client, admin, make_project):
    class Broken:
        def run(self, *args, **kwargs):
            raise RuntimeError("boom")
    app.extensions["mirrorsync"].rsync_runner = Broken()
    make_project()
    run = trigger(client, admin)
    execute_one(app)
    run = get_run(client, admin, run["id"])
    assert run["state"] == "failed"
    assert "boom" in run["error"]


def test_disabling_cancels_the_queued_run_and_refuses_triggers(client, admin, make_project):
    make_project()
    run = trigger(client, admin)
    assert client.patch("/api/v1/projects/debian", json={"enabled": False}, headers=admin).status_code == 200
    assert get_run(client, admin, run["id"])["state"] == "cancelled"
    assert client.get("/api/v1/projects/debian", headers=admin).json["status"] == "disabled"
    response = client.post("/api/v1/projects/debian/syncs", headers=admin)
    assert response.status_code == 409
    assert "disabled" in response.json["message"]


def test_delete_refuses_while_syncing_then_removes_runs_and_logs_but_keeps_the_tree(
        app, client, admin, make_project):
    make_project()
    trigger(client, admin)
    with app.app_context():
        [claimed] = runs.claim_queued_runs(1)
        run_id = claimed.id
    response = client.delete("/api/v1/projects/debian", headers=admin)
    assert response.status_code == 409
    with app.app_context():
        syncs.start_upstream_sync(run_id)
    tree = os.path.join(app.config["DATA_DIR"], "debian")
    os.makedirs(tree, exist_ok=True)
    assert client.delete("/api/v1/projects/debian", headers=admin).status_code == 204
    assert client.get("/api/v1/projects/debian", headers=admin).status_code == 404
    assert client.get(f"/api/v1/runs/{run_id}", headers=admin).status_code == 404
    assert not os.path.exists(os.path.join(app.config["DATA_DIR"], ".mirrorsync", "logs", "debian"))
    assert os.path.isdir(tree), "deleting a project must not delete the mirrored files"


def test_only_allowed_state_moves_happen_and_moves_are_compare_and_set(app, make_project):
    make_project()
    with app.app_context():
        project = projects.get_project("debian")
        run, _ = runs.request_sync(project, "manual")
        with pytest.raises(ValueError):
            runs.move_run(run, RunState.SUCCESS)  # queued -> success skips syncing
        assert run.state == "queued"
        with db.engine.begin() as other_actor:  # e.g. a second executor claims it first
            other_actor.execute(sa.update(Run).where(Run.id == run.id).values(state="cancelled"))
        with pytest.raises(runs.StaleRun):
            runs.move_run(run, RunState.SYNCING)
        assert db.session.get(Run, run.id).state == "cancelled"


def test_executor_never_runs_more_than_max_concurrent_syncs(tmp_path, clock):
    from master import create_app
    from tests.support.fakes import FakeRsyncRunner
    runner = FakeRsyncRunner(hold=True)
    app = create_app({"DATA_DIR": str(tmp_path), "MAX_CONCURRENT_SYNCS": 2, "LOG_LEVEL": "WARNING",
                      "CLOCK": clock, "RSYNC_RUNNER": runner, "POLL_INTERVAL": 60})
    with app.app_context():
        for index in range(4):
            project = projects.create_project({"name": f"p{index}", "upstream": f"rsync://h/m{index}"})
            runs.request_sync(project, "manual")
    executor = Executor(app)
    for _ in range(3):
        executor._claim_and_start()
    assert runner.wait_started() and runner.wait_started()
    with app.app_context():
        states = sorted(db.session.execute(db.select(Run.state)).scalars())
    assert states == ["queued", "queued", "syncing", "syncing"]
    assert len(executor.running()) == 2
    executor.stop(timeout=5)
    with app.app_context():
        states = sorted(db.session.execute(db.select(Run.state)).scalars())
    # The interrupted pulls are queued again, and the queued runs are still there.
    assert states == ["interrupted", "interrupted", "queued", "queued", "queued", "queued"]
    assert runner.max_running == 2


def test_a_forced_sync_starts_past_max_concurrent_syncs(tmp_path, clock):
    from master import create_app
    from tests.support.fakes import FakeRsyncRunner
    runner = FakeRsyncRunner(hold=True)
    app = create_app({"DATA_DIR": str(tmp_path), "MAX_CONCURRENT_SYNCS": 1, "LOG_LEVEL": "WARNING",
                      "CLOCK": clock, "RSYNC_RUNNER": runner, "POLL_INTERVAL": 60, "ADMIN_TOKEN": "t"})
    client, admin = app.test_client(), {"Authorization": "Bearer t"}
    for name in ("busy", "waiting", "urgent"):
        assert client.post("/api/v1/projects", json={"name": name, "upstream": f"rsync://h/{name}"},
                           headers=admin).status_code == 201
    client.post("/api/v1/projects/busy/syncs", headers=admin)
    executor = Executor(app)
    executor._claim_and_start()
    assert runner.wait_started()
    waiting = client.post("/api/v1/projects/waiting/syncs", headers=admin).get_json()
    plain = client.post("/api/v1/projects/urgent/syncs", headers=admin).get_json()
    forced = client.post("/api/v1/projects/urgent/syncs?force=true", headers=admin).get_json()
    assert forced["id"] == plain["id"] and forced["force"] is True and waiting["force"] is False

    executor._claim_and_start()

    assert runner.wait_started(), "the forced run did not start while the one slot was taken"
    with app.app_context():
        states = dict(db.session.execute(db.select(Run.id, Run.state)).all())
    assert states[forced["id"]] == "syncing" and states[waiting["id"]] == "queued"
    assert len(executor.running()) == 2
    executor.stop(timeout=5)


@pytest.mark.parametrize("query", ["force=yes", "force=", "force=2"])
def test_a_bad_force_flag_is_refused_and_named(client, admin, make_project, query):
    from tests.support.api_errors import assert_error_shape
    make_project("debian")
    assert_error_shape(client.post(f"/api/v1/projects/debian/syncs?{query}", headers=admin), field="force")


def test_restart_marks_orphaned_runs_interrupted_and_queues_a_fresh_run(app, client, admin, make_project):
    make_project()
    trigger(client, admin)
    with app.app_context():
        runs.claim_queued_runs(1)  # the executor "dies" here, leaving the run syncing
    recovered = Executor(app).recover()
    assert len(recovered) == 1
    history = client.get("/api/v1/projects/debian/runs", headers=admin).json
    assert [(run["state"], run["trigger"]) for run in history] == [("queued", "recovery"),
                                                                  ("interrupted", "manual")]
    assert "restarted" in history[1]["error"]


def test_log_retention_keeps_the_newest_logs_only(app, client, admin, make_project):
    app.config["LOG_RETENTION"] = 2
    make_project()
    ids = []
    for _ in range(3):
        ids.append(trigger(client, admin)["id"])
        execute_one(app)
    gone = client.get(f"/api/v1/runs/{ids[0]}/log", headers=admin)
    assert gone.status_code == 410
    assert gone.json["error"] == "gone"
    kept = client.get(f"/api/v1/runs/{ids[2]}/log", headers=admin)
    assert kept.status_code == 200 and b"fake rsync" in kept.data


def test_run_log_can_be_read_from_an_offset(app, client, admin, make_project):
    make_project()
    run = trigger(client, admin)
    execute_one(app)
    whole = client.get(f"/api/v1/runs/{run['id']}/log", headers=admin)
    offset = int(whole.headers["X-Next-Offset"])
    assert offset == len(whole.data) > 0
    rest = client.get(f"/api/v1/runs/{run['id']}/log?offset={offset}", headers=admin)
    assert rest.data == b"" and rest.headers["X-Next-Offset"] == str(offset)


def test_run_history_is_paginated_newest_first(app, client, admin, make_project):
    make_project()
    ids = []
    for _ in range(5):
        ids.append(trigger(client, admin)["id"])
        execute_one(app)
    page = client.get("/api/v1/projects/debian/runs?limit=2", headers=admin).json
    assert [run["id"] for run in page] == ids[::-1][:2]
    older = client.get(f"/api/v1/projects/debian/runs?limit=2&before={page[-1]['id']}", headers=admin).json
    assert [run["id"] for run in older] == ids[::-1][2:4]


def test_a_syncing_run_shows_the_progress_of_its_pull(app, client, admin, make_project, fake_rsync):
    fake_rsync.hold = True
    make_project()
    run = trigger(client, admin)
    executor = Executor(app)
    executor._claim_and_start()
    assert fake_rsync.wait_started()
    syncing = get_run(client, admin, run["id"])
    assert syncing["state"] == "syncing"
    assert syncing["progress"] == {"bytes": 50, "percent": 50, "rate": "1.00kB/s", "eta": "0:00:01"}
    fake_rsync.release()
    executor.stop(timeout=5)


def test_the_log_of_a_run_that_just_started_is_empty_not_gone(app, client, admin, make_project):
    make_project()
    run = trigger(client, admin)
    with app.app_context():
        runs.claim_queued_runs(1)  # syncing, and rsync has not written a line yet
    log = client.get(f"/api/v1/runs/{run['id']}/log", headers=admin)
    assert log.status_code == 200 and log.data == b""


def test_a_run_ending_with_a_follow_up_queued_hands_the_status_to_it(app, client, admin, make_project):
    make_project()
    trigger(client, admin)
    with app.app_context():
        [claimed] = runs.claim_queued_runs(1)
        run_id = claimed.id
    trigger(client, admin)  # the follow-up
    assert client.get("/api/v1/projects/debian", headers=admin).json["status"] == "syncing"
    with app.app_context():
        syncs.start_upstream_sync(run_id)
    assert client.get("/api/v1/projects/debian", headers=admin).json["status"] == "queued"


def test_a_pull_whose_names_do_not_add_up_runs_again_with_rsync_deleting(app, client, admin, make_project, fake_rsync):
    """The second pull of a plain project names every entry instead of having rsync look at every
    directory again for deletions (UPSTREAM_DELETIONS listed). When those names cannot vouch for
    upstream's list (here: a log without rsync's itemized lines), nothing is deleted from them and rsync
    runs again, deleting."""
    app.config["UPSTREAM_DELETIONS"] = "listed"
    make_project(rsync_options=["--bwlimit=500"])
    trigger(client, admin)
    execute_one(app)
    [first] = fake_rsync.jobs
    assert first.listed is None and first.delete, "nothing to compare with before the first tree"
    run = trigger(client, admin)
    execute_one(app)
    assert get_run(client, admin, run["id"])["state"] == "success"
    listing, again = fake_rsync.jobs[1:]
    assert listing.listed == [] and again.listed is None and again.delete
    assert again.destination == listing.destination


def test_a_project_can_take_rsyncs_incremental_recursion_back_and_still_list(app, client, admin, make_project,
                                                                           fake_rsync):
    """A tree of millions of files may not want both ends to hold its whole list: --inc-recursive in the
    project's options comes after the master's --no-inc-recursive (rsync takes the last), and changes
    neither the list nor the deletions."""
    app.config["UPSTREAM_DELETIONS"] = "listed"
    make_project(rsync_options=["--inc-recursive"])
    for _ in range(2):
        trigger(client, admin)
        execute_one(app)
    first, listing = fake_rsync.jobs[:2]   # (the fake's log lists nothing, so a third pull deletes)
    assert first.options.index("--no-inc-recursive") < first.options.index("--inc-recursive")
    assert listing.listed is not None


@pytest.mark.parametrize("settings", [None, {"excludes": ["*.iso"]}, {"rsync_options": ["--max-delete=10"]},
                                      {"rsync_options": ["-v"]}, {"method": "two-stage", "stage1_profile": "debian"}])
def test_a_project_whose_options_shape_the_list_leaves_deletions_to_rsync(app, client, admin, make_project,
                                                                          fake_rsync, settings):
    """An excluded entry is in no list, yet rsync keeps it; --max-delete, -v and a two-stage pull change
    what rsync deletes or prints: rsync deletes, as ever. So it does by default (UPSTREAM_DELETIONS rsync)."""
    app.config["UPSTREAM_DELETIONS"] = "rsync" if settings is None else "listed"
    make_project(**(settings or {}))
    for _ in range(2):
        trigger(client, admin)
        execute_one(app)
    assert all(job.listed is None for job in fake_rsync.jobs) and fake_rsync.jobs[-1].delete


@pytest.mark.parametrize("runs_in_database", [0, 2], ids=["no-runs", "runs"])
def test_after_the_database_went_back_new_runs_are_numbered_after_what_data_dir_holds(
        tmp_path, runs_in_database, caplog):
    from master import create_app
    from tests.support.fakes import FakeRsyncRunner
    from tests.support.runids import restored_master_numbers_runs_after_disk
    app = create_app({"DATA_DIR": str(tmp_path), "LOG_LEVEL": "WARNING", "RSYNC_RUNNER": FakeRsyncRunner()})
    first, before = restored_master_numbers_runs_after_disk(app, str(tmp_path), runs_in_database)
    assert before == list(range(1, runs_in_database + 1))
    assert first == 58
    [warning] = [r.getMessage() for r in caplog.records if "restored from a backup" in r.getMessage()]
    assert f"run ids end at {runs_in_database}, but DATA_DIR holds runs up to 57" in warning


def test_after_the_database_went_back_an_api_process_started_before_the_scheduler_numbers_runs_after_disk(
        tmp_path, caplog):
    """A trigger taken by an API worker in the seconds before the scheduler starts gets a new id too."""
    from master import create_app
    from master.services import projects
    from tests.support.fakes import FakeRsyncRunner
    config = {"DATA_DIR": str(tmp_path), "LOG_LEVEL": "WARNING", "RSYNC_RUNNER": FakeRsyncRunner()}
    with create_app(config).app_context():
        project = projects.create_project({"name": "debian", "upstream": "rsync://mirror.example.org/debian"})
        assert runs.request_sync(project, "manual")[0].id == 1
        db.session.execute(sa.update(Run).values(state="success"))
        db.session.commit()
    os.makedirs(tmp_path / ".snapshots" / "debian" / "41")
    api = create_app(config)   # a restart over the database from before runs 2 to 41
    with api.app_context():
        run, created = runs.request_sync(projects.get_project("debian"), "manual")
        assert created and run.id == 42
        db.session.execute(sa.update(Run).values(state="success"))
        db.session.commit()
    assert any("DATA_DIR holds runs up to 41" in record.getMessage() for record in caplog.records)
    with create_app(config).app_context():   # the next process finds the database ahead: it moves nothing
        assert runs.request_sync(projects.get_project("debian"), "manual")[0].id == 43


def test_a_directory_that_cannot_be_listed_is_named_in_a_warning_and_the_others_still_count(
        tmp_path, monkeypatch, caplog):
    from master import runids
    os.makedirs(tmp_path / ".snapshots" / "debian" / "41")
    os.makedirs(tmp_path / ".snapshots" / "fedora" / "77")
    os.makedirs(tmp_path / ".mirrorsync" / "logs" / "debian")
    (tmp_path / ".mirrorsync" / "logs" / "debian" / "52.log").write_text("")
    unreadable, listdir = str(tmp_path / ".snapshots" / "fedora"), os.listdir

    def refusing(directory):
        if os.fspath(directory) == unreadable:
            raise PermissionError(13, "Permission denied", directory)
        return listdir(directory)

    monkeypatch.setattr(runids.os, "listdir", refusing)
    assert runids.highest_on_disk(str(tmp_path)) == 52
    [warning] = [r for r in caplog.records if r.name == "master.runids"]
    assert warning.levelname == "WARNING"
    assert warning.getMessage().startswith(f"cannot list {unreadable} to find the highest run id it names: ")
    assert "Permission denied" in warning.getMessage()
