"""A database that cannot be written for a while (a full disk): runs still end, the API answers 503."""

import sqlite3
import threading

import sqlalchemy as sa

from master.services import runs, syncs, transactions
from tests.support.api_errors import assert_error_shape


def disk_full():
    return sa.exc.OperationalError("UPDATE runs SET ...", {}, sqlite3.OperationalError("database or disk is full"))


def test_the_end_of_a_pull_is_written_again_until_the_database_takes_it(app, client, admin, make_project,
                                                                        monkeypatch):
    make_project()
    run_id = client.post("/api/v1/projects/debian/syncs", headers=admin).json["id"]
    real_move = runs.move_run
    refusals = []

    def full_for_a_while(run, state, **fields):
        if state == "success" and len(refusals) < 3:
            refusals.append(state)
            raise disk_full()
        return real_move(run, state, **fields)
    monkeypatch.setattr(runs, "move_run", full_for_a_while)
    monkeypatch.setattr(transactions.time, "sleep", lambda seconds: None)
    with app.app_context():
        [claimed] = syncs.run_ids_to_execute(1)
        syncs.start_upstream_sync(claimed)
    assert len(refusals) == 3
    run = client.get(f"/api/v1/runs/{run_id}", headers=admin).json
    assert run["state"] == "success"
    assert client.get("/api/v1/projects/debian", headers=admin).json["status"] == "success"


def test_an_executor_that_stops_gives_up_waiting_for_the_database(app, client, admin, make_project, monkeypatch):
    make_project()
    client.post("/api/v1/projects/debian/syncs", headers=admin)
    stopping = threading.Event()
    stopping.set()
    with app.app_context():
        [claimed] = syncs.run_ids_to_execute(1)
        monkeypatch.setattr(runs, "move_run", lambda *args, **kwargs: (_ for _ in ()).throw(disk_full()))
        assert syncs.start_upstream_sync(claimed, stopping=stopping) is None
    # Still syncing: the restarted executor marks it interrupted and pulls again.
    assert client.get(f"/api/v1/runs/{claimed}", headers=admin).json["state"] == "syncing"


def test_while_the_database_cannot_be_written_writes_answer_503_and_reads_still_work(
        app, client, admin, make_project, monkeypatch):
    make_project()
    monkeypatch.setattr(runs, "request_sync", lambda *args, **kwargs: (_ for _ in ()).throw(disk_full()))
    refused = client.post("/api/v1/projects/debian/syncs", headers=admin)
    assert_error_shape(refused, 503, code="database_unavailable")
    assert "cannot be written" in refused.json["message"] and refused.headers["Retry-After"]
    assert client.get("/api/v1/projects/debian", headers=admin).status_code == 200


def test_reads_work_when_noting_a_tokens_use_cannot_be_written(app, client, reader, monkeypatch, clock):
    clock.advance(3600)  # the token's last use is due to be noted
    with app.app_context():
        from master.db import db

        def refuse_commit():
            raise disk_full()
        monkeypatch.setattr(db.session, "commit", refuse_commit)
        response = client.get("/api/v1/projects", headers=reader)
    assert response.status_code == 200, response.json


def test_races_and_full_disks_are_told_apart_from_other_errors():
    class Orig(Exception):
        def __init__(self, text, sqlstate=None):
            super().__init__(text)
            self.sqlstate = sqlstate
    deadlock = sa.exc.OperationalError("UPDATE", {}, Orig("deadlock detected", "40P01"))
    pg_full = sa.exc.OperationalError("INSERT", {}, Orig("could not extend file", "53100"))
    other = sa.exc.ProgrammingError("SELECT", {}, Orig("syntax error", "42601"))
    assert transactions.lost_a_race(deadlock) and not transactions.cannot_write(deadlock)
    assert transactions.cannot_write(pg_full) and transactions.cannot_write(disk_full())
    assert not transactions.lost_a_race(other) and not transactions.cannot_write(other)


def test_a_report_that_loses_a_deadlock_is_tried_again_and_answers_200(app, client, admin, make_project,
                                                                       monkeypatch, clock):
    from master.services import distribution
    from tests.unit.test_distribution import enroll, get_run, pull, report

    class Orig(Exception):
        sqlstate = "40P01"
    make_project()
    one = enroll(client, "one")
    run_id = pull(app, client, admin)
    real = distribution._note_freshness
    lost = []

    def deadlocked_once(*args):
        if not lost:
            lost.append(True)
            raise sa.exc.OperationalError("UPDATE slave_projects", {}, Orig("deadlock detected"))
        return real(*args)
    monkeypatch.setattr(distribution, "_note_freshness", deadlocked_once)
    monkeypatch.setattr(transactions.time, "sleep", lambda seconds: None)
    answer = report(client, one, clock, run_id)
    assert answer.status_code == 200 and answer.json == {"recorded": True}
    assert lost and get_run(client, admin, run_id)["state"] == "success"
