"""A published tree edited behind the slave's back and left alone is pulled again, from the run it holds,
without a new order: the worker's side, with a fake rsync that writes the tree and the kernel's inotify."""

import json
import os
import time

import pytest

from slave import transfers, watch as watch_module
from slave.syncs import ORDER, REPAIR, WATCH, _Pull, _Slot
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
    said = (tmp_path / "state" / "logs" / "debian" / "7.log").read_text().splitlines()
    [repair] = [line for line in said if "repairing" in line]
    assert repair.startswith("# ") and repair.endswith(": repairing the published tree, edited outside "
                                                       "mirror-sync: pulling run 7 again")
    assert said.index(repair) < len(said) - 1 and said[-1].startswith("fake rsync "), "before its rsync's output"

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


def rewrite_keeping_size_and_time(path, content):
    before = path.stat()
    path.write_bytes(content)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_what_changed_since_the_tree_was_settled_is_found_by_its_ctime(tmp_path):
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    for name in ("a/b/leaf.txt", "a/kept.txt", "top.txt"):
        (tree / name).write_text("same\n")
    os.symlink("top.txt", tree / "link")
    settled = time.time_ns()
    assert transfers.changed_since(tree, settled, 10) == []
    wait_for(lambda: clock_passed(tmp_path / "probe", settled), 1, interval=0.001,
             message="the file system's clock past the note")   # it ticks coarser than time_ns
    rewrite_keeping_size_and_time(tree / "a" / "b" / "leaf.txt", b"diff\n")   # size and time as they were
    os.chmod(tree / "top.txt", 0o600)
    (tree / "a" / "new.txt").write_text("new\n")
    found = transfers.changed_since(tree, settled, 10)
    assert sorted(found) == ["a", "a/b/leaf.txt", "a/new.txt", "top.txt"], found
    assert len(transfers.changed_since(tree, settled, 2)) == 2, "bounded"
    assert transfers.changed_since(tmp_path / "gone", settled, 10) == ["."]


def clock_passed(probe, moment_ns):
    probe.write_text("")
    return probe.stat().st_ctime_ns > moment_ns


def test_pruning_an_old_snapshot_moves_the_ctimes_it_shared_and_settling_after_it_does_not_count_them(tmp_path):
    """A file the pruned snapshot shared with the live tree (a hard link) loses a link, which moves its
    ctime: the tree is noted settled after the prune, or a restart would take the slave's own prune for
    edits and pull the tree again."""
    from common.clock import FakeClock
    from slave.publishing import ATOMIC, Publisher
    public = tmp_path / "public"
    public.mkdir()
    publisher, published = Publisher(str(public), FakeClock()), transfers.PublishedTrees(str(tmp_path / "state"))
    for run_id in (1, 2, 3):
        publication = publisher.prepare("p", run_id, ATOMIC)
        for link in publication.options:
            if link.startswith("--link-dest="):
                os.link(os.path.join(link[len("--link-dest="):], "file"), os.path.join(publication.destination, "file"))
        if not os.path.exists(os.path.join(publication.destination, "file")):
            with open(os.path.join(publication.destination, "file"), "w") as stream:
                stream.write("shared by every snapshot\n")
        previous = publisher.commit(publication)
        published.remember("p", str(run_id), "sha256:x", [])
        noted = published.get("p")["settled_at_ns"]
        wait_for(lambda: clock_passed(tmp_path / "probe", noted), 1, interval=0.001,
                 message="the file system's clock past the note")   # it ticks coarser than time_ns
        if publisher.prune("p", previous):
            assert transfers.changed_since(public / "p", noted, 10) == ["file"], "the prune moved its ctime"
            published.settle("p")
            break
    else:
        pytest.fail("no snapshot was pruned")
    assert transfers.changed_since(public / "p", published.get("p")["settled_at_ns"], 10) == []


def test_an_order_that_comes_before_the_watch_after_a_start_looks_at_the_tree_first_and_repairs_it(
        make_slave, writing, tmp_path, caplog):
    """After a start every published tree is looked at in the background; an order that comes first does
    that look itself, so a tree rewritten while the slave was down is pulled in full by that order."""
    app, worker, package = pulled_once(make_slave, writing, tmp_path)
    worker.watch.take("debian")   # as after a start: not watched yet
    settled = worker.published.get("debian")["settled_at_ns"]
    wait_for(lambda: clock_passed(tmp_path / "probe", settled), 1, interval=0.001,
             message="the file system's clock past the note")
    rewrite_keeping_size_and_time(package, b"tampered, same size\n"[:len(package.read_bytes())])
    watching = _Pull({"project": "debian", "run_id": 0}, [], kind=WATCH)
    with worker._lock:
        worker._slots["debian"] = _Slot(watching)   # queued, not started
    fields = {k: v for k, v in an_order(run_id=9, snapshot="9").items() if k not in ("run_id", "project", "catchup")}
    worker.records.create(an_order(run_id=9, snapshot="9"), worker.clock.now())
    worker._submit({"run_id": 9, "project": "debian", "order": fields})
    assert (watching.kind, watching.run_ids, watching.recheck) == (ORDER, [9], True)
    with caplog.at_level("WARNING", logger="slave.syncs"):
        worker._ready.put(watching)
        wait_idle(app)
    said = " ".join(record.getMessage() for record in caplog.records)
    assert "debian: its published tree was changed while this slave was not running, first at: 'pool/a.deb'" in said
    assert "the published tree was changed outside mirror-sync, first at: 'pool/a.deb'; pulled in full" in said
    assert worker.records.get(9, "debian")["state"] == "success" and package.read_text() == "the run's content\n"
    assert "# the published tree was changed outside mirror-sync, first at: 'pool/a.deb'; pulled in full\n" in \
        (tmp_path / "state" / "logs" / "debian" / "9.log").read_text(), "the run's log says why it pulled in full"


def test_a_thread_takes_orders_and_repairs_before_watches_and_its_stop_last():
    from slave.syncs import _ReadyPulls
    ready = _ReadyPulls()
    first, second = (_Pull({"project": name, "run_id": 0}, [], kind=WATCH) for name in ("a", "b"))
    repair, pull = _Pull(an_order(project="c"), [], kind=REPAIR), _Pull(an_order(project="d"), [7])
    for queued in (first, None, second, repair, pull):
        ready.put(queued)
    second.absorb(an_order(run_id=9, project="b"))   # a watch that took an order is that order's pull
    assert [ready.get() for _ in range(5)] == [second, repair, pull, first, None]


def test_an_order_after_a_start_does_not_wait_behind_the_looks_at_other_trees(make_slave, tmp_path):
    """At a start every published tree is looked at (``_watch_again``); with one thread busy, an order
    that comes meanwhile is pulled before the looks still queued."""
    held = TreeWritingRunner(hold=True)
    app = make_slave(rsync_runner=held, MAX_CONCURRENT_SYNCS="1")
    worker, done = services(app).worker, []
    looked = worker._watch_again
    worker._watch_again = lambda project: (done.append(("look", project)), looked(project))
    client = app.test_client()
    assert order(client, an_order(run_id=8)).status_code == 202
    assert held.wait_started()
    for project in ("arch", "fedora", "ubuntu"):
        assert worker._submit_own(project, WATCH, {"project": project, "run_id": 0})
    assert order(client, an_order(run_id=9, project="pypi")).status_code == 202
    original = held.run
    held.run = lambda job, log_path, **kwargs: (done.append(("pull", job.destination.split("/")[-1])),
                                                 original(job, log_path, **kwargs))[1]
    held.release()
    wait_idle(app)
    assert [what for what, _ in done] == ["pull", "look", "look", "look"], done
    assert worker.records.get(9, "pypi")["state"] == "success"


def test_the_last_edit_is_kept_over_a_restart_and_a_broken_note_of_it_is_not_reported(make_slave, tmp_path, caplog):
    """The master shows a slave's last edit until a newer one comes: a restarted slave says it again,
    repaired or not, instead of nothing."""
    worker = services(make_slave()).worker
    worker.saw_edit("debian", "pool/a.deb")
    seen = worker.last_edit()
    assert services(make_slave()).worker.last_edit() == seen and seen["repaired_at"] is None
    worker._saw_repaired("debian")
    repaired = worker.last_edit()
    assert repaired["repaired_at"] is not None
    assert services(make_slave()).worker.last_edit() == repaired
    note = tmp_path / "state" / "last_edit.json"
    assert oct(note.stat().st_mode & 0o777) == "0o600"
    for broken in ("{not json", json.dumps(dict(repaired, seen_at="yesterday")), "[]"):
        note.write_text(broken)
        caplog.clear()
        assert services(make_slave()).worker.last_edit() is None
        assert any(f"the last edit noted in {note}" in r.getMessage() and r.levelname == "ERROR"
                   for r in caplog.records), broken


def test_an_edit_whose_repair_failed_counts_as_repaired_once_a_later_full_pull_is_verified(
        make_slave, writing, tmp_path):
    """A failed repair forgets the tree held, so the next pull is a full one that finds no edit of its
    own to report: that it ended verified is what says the edit is gone."""
    app, worker, package = pulled_once(make_slave, writing, tmp_path)
    worker.saw_edit("debian", "pool/a.deb")
    worker.published.forget("debian")   # as a repair that failed leaves it
    assert worker.last_edit()["repaired_at"] is None
    assert order(app.test_client(), an_order(run_id=8, snapshot="8")).status_code == 202
    wait_idle(app)
    assert worker.records.get(8, "debian")["state"] == "success"
    assert worker.last_edit()["repaired_at"] is not None, worker.last_edit()
    assert (worker.last_edit()["project"], worker.last_edit()["path"]) == ("debian", "pool/a.deb")
