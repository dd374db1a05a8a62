"""The scheduler's timers follow the database; a second scheduler is refused."""

import datetime

import pytest
import sqlalchemy as sa

from common.errors import ConfigError
from master.db import db
from master.models import Run
from master.scheduler import ScheduleKeeper, SchedulerLock
from master.services import projects


@pytest.fixture
def keeper(app):
    keeper = ScheduleKeeper(app)
    keeper.start(paused=True)
    yield keeper
    keeper.stop()


def project_id(app, name):
    with app.app_context():
        return projects.get_project(name).id


def test_reconcile_adds_changes_and_drops_timers(app, client, admin, make_project, keeper):
    make_project("hourly", schedule="0 * * * *")
    make_project("manual")  # no schedule: no timer
    keeper.reconcile()
    hourly = project_id(app, "hourly")
    assert set(keeper.scheduled()) == {hourly}
    assert keeper.scheduled()[hourly].minute == 0

    client.patch("/api/v1/projects/hourly", json={"schedule": "30 2 * * *"}, headers=admin)
    keeper.reconcile()
    fire = keeper.scheduled()[hourly]
    assert (fire.hour, fire.minute) == (2, 30)

    client.patch("/api/v1/projects/hourly", json={"splay": 120}, headers=admin)
    keeper.reconcile()
    assert keeper.scheduler.get_job(f"project-{hourly}").trigger.jitter == 120

    client.patch("/api/v1/projects/hourly", json={"enabled": False}, headers=admin)
    keeper.reconcile()
    assert keeper.scheduled() == {}

    client.patch("/api/v1/projects/hourly", json={"enabled": True}, headers=admin)
    keeper.reconcile()
    assert set(keeper.scheduled()) == {hourly}
    client.delete("/api/v1/projects/hourly", headers=admin)
    keeper.reconcile()
    assert keeper.scheduled() == {}


def test_a_timer_firing_queues_a_schedule_run(app, client, admin, make_project, keeper):
    make_project("debian", schedule="*/5 * * * *")
    keeper.reconcile()
    keeper.fire(project_id(app, "debian"))
    keeper.fire(project_id(app, "debian"))
    [run] = client.get("/api/v1/projects/debian/runs", headers=admin).json
    assert run["trigger"] == "schedule" and run["state"] == "queued"
    assert run["coalesced"] == 1


def test_a_timer_of_a_project_disabled_meanwhile_queues_nothing(app, client, admin, make_project, keeper):
    make_project("debian", schedule="*/5 * * * *")
    pid = project_id(app, "debian")
    client.patch("/api/v1/projects/debian", json={"enabled": False}, headers=admin)
    keeper.fire(pid)
    with app.app_context():
        assert db.session.execute(db.select(Run)).first() is None


def test_next_run_follows_the_schedule_and_the_clock(client, admin, make_project, clock):
    clock._now = datetime.datetime(2026, 11, 21, 10, 7, tzinfo=datetime.timezone.utc)  # a Saturday
    make_project("weekdays", schedule="0 3 * * 1-5")
    make_project("manual")
    assert client.get("/api/v1/projects/weekdays", headers=admin).json["next_run"] == "2026-11-23T03:00:00+00:00"
    assert client.get("/api/v1/projects/manual", headers=admin).json["next_run"] is None


def test_a_second_scheduler_on_the_same_data_is_refused(app):
    first = SchedulerLock(app.config["DATA_DIR"])
    first.acquire()
    try:
        with pytest.raises(ConfigError, match="another scheduler"):
            SchedulerLock(app.config["DATA_DIR"]).acquire()
    finally:
        first.release()
    second = SchedulerLock(app.config["DATA_DIR"])
    second.acquire()
    second.release()


def test_a_burst_of_timers_is_queued_in_one_batch(app, client, admin, make_project, keeper):
    names = [f"p{index:03d}" for index in range(120)]
    for name in names:
        make_project(name, schedule="0 * * * *")
    make_project("queued-already", schedule="0 * * * *")
    make_project("disabled", schedule="0 * * * *", enabled=False)
    client.post("/api/v1/projects/queued-already/syncs", headers=admin)
    ids = [project_id(app, name) for name in names + ["queued-already", "disabled"]]
    statements = []
    with app.app_context():
        engine = db.engine
    listener = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        with keeper._batch_lock:  # the whole burst fires while the flusher is busy
            for pid in ids:
                keeper._timer_fired(pid)
        keeper.flush()  # returns once this batch, or the flusher's, is written
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    listed = {p["name"]: p["status"] for p in client.get("/api/v1/projects?limit=1000", headers=admin).json}
    assert listed == {**{name: "queued" for name in names}, "queued-already": "queued", "disabled": "disabled"}
    with app.app_context():
        rows = db.session.execute(sa.select(Run.trigger, Run.coalesced)).all()
    assert len(rows) == len(names) + 1, "one queued run per enabled project, the earlier one folded in"
    assert sorted(row.coalesced for row in rows)[-1] == 1 and sum(row.coalesced for row in rows) == 1
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO RUNS")]
    assert len(inserts) == 1, f"{len(inserts)} INSERT statements for {len(names)} runs"
    assert len(statements) < 20


def test_timers_fire_on_time_after_the_wall_clock_steps_back(app, monkeypatch):
    import datetime as dt
    import threading
    import time

    import apscheduler.executors.base
    import apscheduler.schedulers.base
    import apscheduler.triggers.interval

    behind = [0.0]   # how far the (fake) wall clock is behind the real one

    class SteppedDatetime(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime.now(tz) - dt.timedelta(seconds=behind[0])
    for module in (apscheduler.schedulers.base, apscheduler.executors.base, apscheduler.triggers.interval):
        monkeypatch.setattr(module, "datetime", SteppedDatetime)
    keeper = ScheduleKeeper(app, wall=lambda: time.time() - behind[0])
    keeper.clock_watch.interval = 0.05
    fired = threading.Event()
    keeper.start()
    try:
        keeper.scheduler.add_job(fired.set, "interval", seconds=1, id="tick")
        assert fired.wait(5), "the timer works before the step"
        fired.clear()
        behind[0] = 240.0   # the wall clock steps back four minutes
        assert fired.wait(5), "a 1 s timer must not wait out the four minutes"
        fired.clear()
        assert fired.wait(5), "and it goes on every second"
    finally:
        keeper.stop()
