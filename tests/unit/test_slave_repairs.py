"""A published tree edited behind the slave's back and left alone is pulled again, from the run it holds,
without a new order: the worker's side, with a fake rsync that writes the tree and the kernel's inotify."""

import json
import os

import pytest

from slave import watch as watch_module
from slave.syncs import ORDER, REPAIR, _Pull
from tests.support.fakes import FakeRsyncRunner
from tests.support.processes import wait_for
from tests.unit.test_slave_orders import an_order, make_slave, order, outbox, runner, services, wait_idle  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(watch_module.inotify_simple is None, reason="inotify is Linux only")


class TreeWritingRunner(FakeRsyncRunner):
    """Brings the run's one file, as a full pull from the master would."""

    def run(self, job, log_path, **kwargs):
        result = super().run(job, log_path, **kwargs)
        pool = f"{job.destination}/pool"
        os.makedirs(pool, exist_ok=True)
        with open(f"{pool}/a.deb", "w") as package:
            package.write("the run's content\n")
        return result


@pytest.fixture
def writing():
    return TreeWritingRunner()


def test_an_order_that_comes_before_a_repair_started_is_pulled_in_its_place():
    repair = _Pull(an_order(run_id=7), [], kind=REPAIR)
    repair.absorb(an_order(run_id=9, snapshot="9"))
    assert (repair.kind, repair.run_ids, repair.order["run_id"], list(repair.orders)) == (ORDER, [9], 9, [9])


def pulled_once(make_slave, runner, tmp_path, **settings):
    app = make_slave(rsync_runner=runner, REPAIR_DELAY="0.05", **settings)
    assert order(app.test_client(), an_order(snapshot="7")).status_code == 202
    wait_idle(app)
    package = tmp_path / "public" / "debian" / "pool" / "a.deb"
    assert package.read_text() == "the run's content\n" and len(runner.jobs) == 1
    return app, services(app).worker, package


@pytest.mark.parametrize("noted_by", ["this release", "a release before repairs"])
def test_an_edited_tree_left_alone_is_pulled_again_in_full_and_no_run_is_reported(
        make_slave, writing, tmp_path, noted_by):
    app, worker, package = pulled_once(make_slave, writing, tmp_path)
    if noted_by == "this release":   # the note of the published tree has the order: records may go
        for kept in (tmp_path / "state" / "syncs").iterdir():
            kept.unlink()
    else:   # the note has no order: the run's record has it
        note = tmp_path / "state" / "published" / "debian.json"
        note.write_text(json.dumps({k: v for k, v in json.loads(note.read_text()).items() if k != "order"}))
    record = worker.records.get(7, "debian")
    reports = outbox(app)

    package.write_text("tampered\n")
    wait_for(lambda: worker.repair_edited() == ["debian"], 5, message="the edited tree sent for repair")
    wait_idle(app)
    assert package.read_text() == "the run's content\n"
    [_, again] = writing.jobs
    assert (again.source, again.delete) == ("rsync://ms-mirror1@master.example.org:8730/debian/7/", True)
    assert worker.records.get(7, "debian") == record and outbox(app) == reports, "the master is not told"

    # Watched again, and the repair's own writes did not count.
    assert worker.repair_edited() == []
    package.write_text("tampered again\n")
    wait_for(lambda: worker.repair_edited() == ["debian"], 5, message="edited again, sent again")
    wait_idle(app)
    assert len(writing.jobs) == 3 and package.read_text() == "the run's content\n"


def test_no_repair_is_queued_while_a_pull_of_the_project_waits_or_runs(make_slave, tmp_path):
    held = TreeWritingRunner(hold=True)
    app = make_slave(rsync_runner=held, REPAIR_DELAY="0.05")
    assert order(app.test_client(), an_order(run_id=8)).status_code == 202
    assert held.wait_started()
    worker = services(app).worker
    assert not worker._submit_own("debian", REPAIR, an_order(run_id=8)), "the running pull repairs it anyway"
    held.release()
    wait_idle(app)


def test_with_repair_delay_zero_an_edited_tree_waits_for_the_next_pull(make_slave, writing, tmp_path):
    app, worker, package = pulled_once(make_slave, writing, tmp_path)
    worker.repair_delay = 0
    package.write_text("tampered\n")
    wait_for(lambda: worker.watch._projects["debian"][1].changed, 5, message="the edit seen")
    assert worker.repair_edited() == [] and len(writing.jobs) == 1
    assert worker.watch.take("debian").changed, "left for the next pull"
