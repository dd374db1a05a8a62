"""The master on PostgreSQL: the same rules hold, across processes, as on SQLite."""

import threading

import pytest

from tests.support.postgres import TemporaryPostgres
from tests.support.processes import wait_run_finished
from tests.support.trees import assert_trees_equal

reason = TemporaryPostgres.available()
pytestmark = [pytest.mark.skipif(reason is not None, reason=reason or ""),
              pytest.mark.xdist_group("postgres")]


@pytest.fixture(scope="module")
def postgres():
    with TemporaryPostgres() as server:
        yield server


@pytest.fixture
def database_url(postgres, request):
    """A fresh database per test, so tests never see each other's rows."""
    import sqlalchemy as sa
    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "")[:40]
    engine = sa.create_engine(postgres.url("postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return postgres.url(name)


def test_concurrent_triggers_coalesce_into_one_queued_run(tmp_path, database_url):
    from master import create_app
    from master.services import projects, runs
    from tests.support.fakes import FakeRsyncRunner
    app = create_app({"DATA_DIR": str(tmp_path), "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING",
                      "RSYNC_RUNNER": FakeRsyncRunner()})
    with app.app_context():
        projects.create_project({"name": "debian", "upstream": "rsync://mirror.example.org/debian"})
    results, barrier = [], threading.Barrier(8)

    def trigger():
        with app.app_context():
            barrier.wait()
            run, created = runs.request_sync(projects.get_project("debian"), "manual")
            results.append((run.id, created))
    threads = [threading.Thread(target=trigger) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({run_id for run_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with app.app_context():
        [run] = runs.list_runs(projects.get_project("debian"))
        assert run.coalesced == 7
        projects.update_project("debian", {"enabled": False})
        assert runs.get_run(run.id).state == "cancelled"
        projects.delete_project("debian")
        from master.db import db
        from master.models import Run
        assert db.session.execute(db.select(db.func.count(Run.id))).scalar() == 0, "runs must go with it"


def test_real_master_on_postgres_syncs_a_tree(master_factory, tmp_path, upstream, database_url):
    from tests.integration.conftest import ApiClient
    master = master_factory(tmp_path / "data", extra_env={"MIRRORSYNC_DATABASE_URL": database_url})
    api = ApiClient(master.url, master.admin_token)
    assert api.post("/api/v1/projects", json={"name": "pg", "upstream": upstream.url}).status_code == 201
    run = api.post("/api/v1/projects/pg/syncs").json()
    run = wait_run_finished(master.url, master.admin_token, run["id"])
    assert run["state"] == "success", run
    assert_trees_equal(upstream.tree, master.data_dir / "pg")
    project = api.get("/api/v1/projects/pg").json()
    assert project["last_success"] == run["finished_at"] and project["size"] == run["stats"]["total_size"]
    assert not (master.data_dir / ".mirrorsync" / "mirrorsync.db").exists(), "SQLite must not be used"


def test_a_trigger_in_an_api_process_wakes_the_scheduler_through_listen_notify(tmp_path, database_url):
    """Two apps stand for the API worker and the scheduler process: NOTIFY crosses between them."""
    from master import create_app
    from master.services import projects, runs
    from master.wakeups import WakeupListener
    settings = {"DATA_DIR": str(tmp_path), "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    scheduler_app, api_app = create_app(settings), create_app(settings)
    woken = threading.Event()
    listener = WakeupListener(scheduler_app, woken.set)
    listener.start()
    try:
        with api_app.app_context():
            project = projects.create_project({"name": "debian", "upstream": "rsync://mirror.example.org/debian"})
            woken.wait(5)  # the listener wakes once when it starts listening
            woken.clear()
            runs.request_sync(project, "manual")
        assert woken.wait(10), "NOTIFY did not reach the listener"
    finally:
        listener.stop()


def test_many_reports_and_orders_at_once_never_answer_5xx(tmp_path, database_url):
    """Fan-out, catch-up and timeouts (the scheduler) race slaves' reports (the API) over the same rows."""
    import json
    import random

    from common.clock import FakeClock
    from common.signing import signature_headers
    from master import create_app
    from master.services import distribution, projects, runs, syncs
    from tests.support.fakes import FakeRsyncRunner, FakeSlaveClient

    clock = FakeClock()
    app = create_app({"DATA_DIR": str(tmp_path), "DATABASE_URL": database_url, "LOG_LEVEL": "ERROR",
                      "JOIN_TOKEN": "join", "RSYNC_RUNNER": FakeRsyncRunner(), "SLAVE_CLIENT": FakeSlaveClient(),
                      "CLOCK": clock, "CATCHUP_INTERVAL": 0.05})
    client = app.test_client()
    slaves = []
    for index in range(12):
        answer = client.post("/api/v1/slaves/register", json={"name": f"m{index}", "url": f"http://m{index}:7000"},
                             headers={"Authorization": "Bearer join"})
        assert answer.status_code == 201
        slaves.append(answer.json)
    names = [f"p{index}" for index in range(3)]
    with app.app_context():
        for name in names:
            projects.create_project({"name": name, "upstream": f"rsync://m.example.org/{name}", "timeout": 1})
    failures, statuses, stop = [], [], threading.Event()

    def signed_post(credentials, path, body):
        raw = json.dumps(body).encode()
        headers = signature_headers(credentials["name"], credentials["signing_key"], "POST", path, raw,
                                    now=clock.now().timestamp())
        return client.post(path, data=raw, headers=dict(headers, **{"Content-Type": "application/json"}))

    def scheduler():
        try:
            for round_ in range(8):
                with app.app_context():
                    for name in names:
                        runs.request_sync(projects.get_project(name), "manual")
                    for run_id in syncs.run_ids_to_execute(len(names)):
                        syncs.start_upstream_sync(run_id)
                    distribution.catch_up_slaves()
                    distribution.expire_overdue_entries()
        except Exception as error:  # noqa: BLE001 - the test reports it
            failures.append(repr(error))
        finally:
            stop.set()

    def slave(credentials, rng):
        while not stop.is_set():
            with app.app_context():
                run_ids = [run.id for name in names for run in runs.list_runs(projects.get_project(name), limit=3)]
            for run_id in rng.sample(run_ids, min(len(run_ids), 4)):
                project = None
                with app.app_context():
                    project = runs.get_run(run_id).project.name
                for state in ("syncing", "success"):
                    answer = signed_post(credentials, f"/api/v1/slaves/{credentials['name']}/reports",
                                         {"run_id": run_id, "project": project, "state": state})
                    statuses.append(answer.status_code)
                answer = signed_post(credentials, f"/api/v1/slaves/{credentials['name']}/heartbeat",
                                     {"url": f"http://{credentials['name']}:7000"})
                statuses.append(answer.status_code)

    threads = [threading.Thread(target=scheduler)] + [
        threading.Thread(target=slave, args=(credentials, random.Random(index)))
        for index, credentials in enumerate(slaves)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    assert statuses and max(statuses) < 500, sorted(set(statuses))


def test_public_documents_stay_in_step_across_workers_on_postgres(tmp_path, database_url):
    """Two apps stand for two gunicorn workers: each serves its own build, both follow every change,
    and concurrent changes each land in the shared generation."""
    from master import create_app
    from master.services import projects, runs
    settings = {"DATA_DIR": str(tmp_path), "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    first, second = create_app(settings), create_app(settings)
    with first.app_context():
        for index in range(6):
            projects.create_project({"name": f"p{index}", "upstream": f"rsync://mirror.example.org/p{index}"})
    readers = [first.test_client(), second.test_client()]
    etags = {reader.get("/jobs").headers["ETag"] for reader in readers}
    assert len(etags) == 1, "the same build gives the same ETag in every worker"
    barrier = threading.Barrier(6)

    def trigger(index):
        with (first if index % 2 else second).app_context():
            barrier.wait()
            runs.request_sync(projects.get_project(f"p{index}"), "manual")
    threads = [threading.Thread(target=trigger, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for reader in readers:
        assert {entry["name"]: entry["status"] for entry in reader.get("/api/v1/status").json} == \
            {f"p{index}": "queued" for index in range(6)}
    assert len({reader.get("/jobs").headers["ETag"] for reader in readers} | etags) == 2


def test_after_the_database_went_back_new_runs_are_numbered_after_what_data_dir_holds(tmp_path, database_url):
    from master import create_app
    from tests.support.fakes import FakeRsyncRunner
    from tests.support.runids import restored_master_numbers_runs_after_disk
    app = create_app({"DATA_DIR": str(tmp_path), "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING",
                      "RSYNC_RUNNER": FakeRsyncRunner()})
    first, before = restored_master_numbers_runs_after_disk(app, str(tmp_path), 2)
    assert before == [1, 2] and first == 58
