"""Faults injected into real processes mid-transfer: kill -9 and SIGTERM of the scheduler and of slaves.

The master side runs in its production shape (gunicorn API + ``python -m
master.scheduler``) or as ``python -m master``; slaves are ``python -m slave``.
A pull is made slow enough to be caught in the middle with ``--bwlimit``: on
the master through the project's ``rsync_options``, on a slave through an
RSYNC_BINARY that runs rsync with ``--bwlimit`` (tests/support/faults.py).
Only rsync processes whose command line names this test's own paths are looked
at or killed, since other tests run rsync at the same time.
"""

import contextlib
import datetime
import os
import random
import shutil
import signal
import sqlite3

import pytest

from tests.integration.conftest import STARTED_PROCESSES, ApiClient
from tests.support.faults import (kill_rsync_under, published_tree, rsync_processes_under,
                                  throttled_rsync, tree_differences, wait_gone, wait_rsync_under)
from tests.support.processes import (DEFAULT_JOIN_TOKEN, free_port, start_gunicorn_master, start_scheduler,
                                     start_slave, wait_for, wait_run_finished)
from tests.support.rsyncd import RsyncDaemon
from tests.support.trees import assert_trees_equal, describe_tree

FINAL_SLAVE_STATES = ("success", "failed", "unreachable", "timeout")
MiB = 1024 * 1024
# KiB/s, so that a pull is still running when the fault hits: the master's 6 MiB upstream pull
# takes 12 s, a slow slave's pull of the 4 MiB file of generation 2 takes 16 s.
UPSTREAM_BWLIMIT = 500
SLAVE_BWLIMIT = 250


def _track(request, service):
    request.node.stash.setdefault(STARTED_PROCESSES, []).append(service)
    return service


def runs_of(api, project):
    response = api.get(f"/api/v1/projects/{project}/runs")
    assert response.status_code == 200, response.text
    return response.json()


def run_of(api, run_id):
    response = api.get(f"/api/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()


def trigger(api, project):
    response = api.post(f"/api/v1/projects/{project}/syncs")
    assert response.status_code == 202, response.text
    return response.json()


def create_project(api, name, upstream, **fields):
    response = api.post("/api/v1/projects", json={"name": name, "upstream": upstream, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def wait_state(api, run_id, state, timeout=20):
    last = {}

    def reached():
        last.update(run_of(api, run_id))
        return last["state"] == state
    wait_for(reached, timeout, message=lambda: f"run {run_id} to be {state} (now {last.get('state')!r})")


def slow_tree(root, size=6 * MiB):
    root.mkdir(parents=True, exist_ok=True)
    (root / "big.bin").write_bytes(random.Random(7).randbytes(size))
    (root / "README").write_text("a tree that takes a while to pull\n")
    return root


def assert_no_run_left_active(api, project):
    states = {run["id"]: run["state"] for run in runs_of(api, project)}
    assert not {run_id: state for run_id, state in states.items() if state in ("syncing", "distributing")}, states


# --- the scheduler in production shape -------------------------------------


class Production:
    """A gunicorn API and one ``python -m master.scheduler`` over one DATA_DIR, sharing one environment."""

    def __init__(self, request, tmp_path, extra_env=None):
        self.request = request
        self.logs = tmp_path / "logs"
        self.data_dir = tmp_path / "master"
        # Every master-side process must agree on where the rsync daemon listens.
        self.env = {"MIRRORSYNC_RSYNCD_PORT": str(free_port()), **(extra_env or {})}
        self.api_server = self.scheduler = self.api = None

    def start(self):
        self.api_server = _track(self.request, start_gunicorn_master(
            self.data_dir, workers=2, extra_env=self.env, log_dir=self.logs))
        self.api = ApiClient(self.api_server.url, self.api_server.admin_token)
        self.start_scheduler()
        return self

    def start_scheduler(self):
        self.scheduler = _track(self.request, start_scheduler(self.data_dir, extra_env=self.env,
                                                              log_dir=self.logs))
        return self.scheduler

    def wait_finished(self, run_id, timeout=30):
        return wait_run_finished(self.api_server.url, self.api_server.admin_token, run_id, timeout)

    def stop(self):
        if self.api is not None:
            self.api.close()
        for service in (self.scheduler, self.api_server):
            if service is not None:
                service.stop()


@pytest.fixture
def production_factory(request, tmp_path):
    started = []

    def start(extra_env=None):
        started.append(Production(request, tmp_path, extra_env))
        return started[-1].start()
    yield start
    for production in started:
        production.stop()


def _noted_pid(database, run_id):
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as connection:
        row = connection.execute("SELECT pid FROM runs WHERE id = ?", (run_id,)).fetchone()
    return row is not None and row[0] is not None


def test_kill9_of_the_scheduler_mid_pull_interrupts_the_run_and_the_restart_ends_its_rsync_and_resumes(
        production_factory, tmp_path):
    prod = production_factory()
    api = prod.api
    tree = slow_tree(tmp_path / "slow-tree")
    with RsyncDaemon(tmp_path / "slow-rsyncd", {"slow": tree}) as daemon:
        create_project(api, "crash", daemon.url("slow"), rsync_options=[f"--bwlimit={UPSTREAM_BWLIMIT}"])
        run = trigger(api, "crash")
        wait_state(api, run["id"], "syncing")
        wait_rsync_under(prod.data_dir / ".snapshots" / "crash")
        # The scheduler notes rsync's process group a moment after rsync starts; a kill before that
        # leaves the restart nothing to end (the API does not serve the pid: read the database).
        database = prod.data_dir / ".mirrorsync" / "mirrorsync.db"
        wait_for(lambda: _noted_pid(database, run["id"]), 10, message="the scheduler noting rsync's pid")

        prod.scheduler.kill9(whole_session=False)
        # rsync runs in a session of its own: the crash leaves it running, still writing into DATA_DIR.
        orphans = set(rsync_processes_under(prod.data_dir / ".snapshots" / "crash"))
        assert orphans, "the rsync of the killed scheduler should have outlived it"
        assert run_of(api, run["id"])["state"] == "syncing"
        # Only to keep the test short: the resumed pull reads the project as it is then.
        assert api.patch("/api/v1/projects/crash", json={"rsync_options": []}).status_code == 200

        scheduler = prod.start_scheduler()
        interrupted = run_of(api, run["id"])
        assert interrupted["state"] == "interrupted", interrupted
        assert "interrupted" in interrupted["error"] and interrupted["finished_at"]
        # A 6 MiB pull at 500 KiB/s runs for 12 s: gone within 5 s means the restart ended it.
        wait_gone(orphans, 10, "the orphaned rsync of the killed scheduler")
        assert "ended orphaned rsync process group" in scheduler.log_text()

        history = runs_of(api, "crash")
        assert [r["id"] for r in history[1:]] == [run["id"]], history
        recovery = history[0]
        assert recovery["trigger"] == "recovery", recovery
        resumed = prod.wait_finished(recovery["id"])
    assert resumed["state"] == "success", resumed
    assert_trees_equal(tree, prod.data_dir / "crash")
    assert_no_run_left_active(api, "crash")
    assert not rsync_processes_under(prod.data_dir)


@pytest.mark.slow
def test_sigterm_of_the_scheduler_mid_pull_records_it_interrupted_and_loses_no_queued_run(
        production_factory, tmp_path, upstream):
    prod = production_factory({"MIRRORSYNC_MAX_CONCURRENT_SYNCS": "1"})
    api = prod.api
    tree = slow_tree(tmp_path / "slow-tree")
    waiting = ("queued1", "queued2", "queued3")
    with RsyncDaemon(tmp_path / "slow-rsyncd", {"slow": tree}) as daemon:
        create_project(api, "gentle", daemon.url("slow"), rsync_options=[f"--bwlimit={UPSTREAM_BWLIMIT}"])
        for name in waiting:
            create_project(api, name, upstream.url)
        run = trigger(api, "gentle")
        wait_state(api, run["id"], "syncing")
        wait_rsync_under(prod.data_dir / ".snapshots" / "gentle")
        behind = {name: trigger(api, name)["id"] for name in waiting}
        assert {name: run_of(api, run_id)["state"] for name, run_id in behind.items()} == dict.fromkeys(
            waiting, "queued"), "with MAX_CONCURRENT_SYNCS=1 the other projects wait their turn"

        assert prod.scheduler.stop() == 0, prod.scheduler.log_tail()
        assert "scheduler stopped" in prod.scheduler.log_text()
        assert not rsync_processes_under(prod.data_dir), "SIGTERM must end the running rsync"
        interrupted = run_of(api, run["id"])
        assert interrupted["state"] == "interrupted", interrupted
        assert "interrupted" in interrupted["error"]
        newest = runs_of(api, "gentle")[0]
        assert (newest["trigger"], newest["state"]) == ("recovery", "queued"), newest
        assert {name: runs_of(api, name)[0]["state"] for name in waiting} == dict.fromkeys(waiting, "queued")

        assert api.patch("/api/v1/projects/gentle", json={"rsync_options": []}).status_code == 200
        prod.start_scheduler()
        finals = {name: prod.wait_finished(runs_of(api, name)[0]["id"])
                  for name in ("gentle", *waiting)}
    assert {name: run["state"] for name, run in finals.items()} == dict.fromkeys(finals, "success"), finals
    assert finals["gentle"]["trigger"] == "recovery"
    assert {name: finals[name]["id"] for name in waiting} == behind, "the queued runs themselves ran"
    assert_trees_equal(tree, prod.data_dir / "gentle")
    for name in waiting:
        assert_trees_equal(upstream.tree, prod.data_dir / name)
    for name in finals:
        assert_no_run_left_active(api, name)


# --- slaves ----------------------------------------------------------------

MASTER_ENV = {"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN, "MIRRORSYNC_CATCHUP_INTERVAL": "0.3",
              "MIRRORSYNC_HEARTBEAT_TIMEOUT": "1.5", "MIRRORSYNC_SLAVE_GRACE": "1",
              "MIRRORSYNC_DISPATCH_TIMEOUT": "2"}
TIMEOUT = 5             # the project's timeout: a silent slave times out TIMEOUT + SLAVE_GRACE after its order
GEN1 = {"README": b"generation 1\n", "data/a.bin": random.Random(1).randbytes(64 * 1024),
        "old.txt": b"only in generation 1\n"}
GEN2 = {"README": b"generation 2\n", "data/a.bin": random.Random(2).randbytes(64 * 1024),
        "data/big.bin": random.Random(3).randbytes(4 * MiB), "new.txt": b"only in generation 2\n"}


def write_generation(root, files, mtime):
    """Make ``root`` hold exactly ``files`` (relative path -> bytes); returns describe_tree of it."""
    if root.exists():
        shutil.rmtree(root)
    for relpath, content in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.utime(path, (mtime, mtime))
    for directory in (root / "data", root):
        os.utime(directory, (mtime, mtime))
    return describe_tree(root)


class SlaveCluster:
    """``python -m master``, the slow slave mirror2 that the tests hurt and, by default, a steady mirror1."""

    def __init__(self, request, tmp_path):
        self.request, self.tmp_path = request, tmp_path
        self.logs = tmp_path / "logs"
        self.upstream_tree = tmp_path / "upstream"
        self.master = self.api = self.steady = self.victim = self.daemon = None

    def start(self, master_factory, master_env=None, steady=True):
        self.master = master_factory(self.tmp_path / "master", extra_env={**MASTER_ENV, **(master_env or {})})
        self.api = ApiClient(self.master.url, self.master.admin_token)
        if steady:
            self.steady = self._start("mirror1")
        slow = {"MIRRORSYNC_RSYNC_BINARY": str(throttled_rsync(self.tmp_path / "bin", SLAVE_BWLIMIT))}
        self.victim = self._start("mirror2", extra_env=slow)
        self.upstream_tree.mkdir()
        self.daemon = RsyncDaemon(self.tmp_path / "upstream-rsyncd", {"mirror": self.upstream_tree}).start()
        return self

    def _start(self, name, port=None, extra_env=None):
        return _track(self.request, start_slave(self.tmp_path / name, name, self.master.url, port=port,
                                                extra_env=extra_env, log_dir=self.logs))

    def restart_victim(self):
        """The slow slave again, on its root and port, at full speed this time."""
        old = self.victim
        self.victim = self._start(old.slave_name, port=old.port)
        return self.victim

    def wait_online(self):
        wanted = {slave.slave_name: "online" for slave in (self.steady, self.victim) if slave is not None}

        def states():
            return {s["name"]: s["state"] for s in self.api.get("/api/v1/slaves").json()}
        wait_for(lambda: states() == wanted, 20, message=lambda: f"slaves online (now {states()})")

    def freshness(self, project, slave):
        feed = {entry["name"]: entry for entry in self.api.get("/api/v1/status").json()}
        return feed[project]["slaves"].get(slave, {})

    def sync(self, project):
        run = trigger(self.api, project)
        return wait_run_finished(self.master.url, self.master.admin_token, run["id"], 30)

    def start_generation_2(self, project):
        """Sync generation 1 everywhere, then trigger generation 2; returns (gen 1, gen 2, the run)."""
        gen1 = write_generation(self.upstream_tree, GEN1, 1_700_000_000)
        create_project(self.api, project, self.daemon.url("mirror"), publish="atomic", timeout=TIMEOUT)
        self.wait_online()
        first = self.sync(project)
        assert first["state"] == "success", first
        gen2 = write_generation(self.upstream_tree, GEN2, 1_700_000_100)
        return gen1, gen2, trigger(self.api, project)

    def catch_victim_pulling(self, project, run_id):
        """Wait until the slow slave is part way through data/big.bin of ``run_id``."""
        self.victim.wait_for_log(f"pulling {project} for run {run_id}", timeout=20)
        wait_rsync_under(self.victim.root)

        def writing_big_file():
            # rsync writes into a temporary ".big.bin.XXXXXX" and renames it once complete.
            return [path for path in self.victim.public_dir.rglob(".big.bin.*")
                    if path.is_file() and path.stat().st_size > 0]
        wait_for(writing_big_file, 20, message="mirror2 to be part way through data/big.bin")

    def stop(self):
        if self.api is not None:
            self.api.close()
        for service in (self.victim, self.steady, self.daemon):
            if service is not None:
                service.stop()


def _cluster(request, master_factory, tmp_path, master_env=None, steady=True):
    cluster = SlaveCluster(request, tmp_path)
    try:
        yield cluster.start(master_factory, master_env, steady)
    finally:
        cluster.stop()
    for name in ("mirror1", "mirror2"):
        kill_rsync_under(tmp_path / name)   # what a failed test may have left behind


@pytest.fixture
def slave_cluster(request, master_factory, tmp_path):
    yield from _cluster(request, master_factory, tmp_path)


@pytest.fixture
def lone_slave_cluster(request, master_factory, tmp_path):
    """The slow slave alone."""
    yield from _cluster(request, master_factory, tmp_path, steady=False)


@pytest.fixture
def cluster_without_catch_up(request, master_factory, tmp_path):
    """No catch-up order for a minute: a slave's entry stays as its report left it."""
    yield from _cluster(request, master_factory, tmp_path, {"MIRRORSYNC_CATCHUP_INTERVAL": "60"})


@pytest.fixture
def cluster_with_patient_orders(request, master_factory, tmp_path):
    """An order waits a minute for its answer, and a slave stays online two minutes without a heartbeat."""
    yield from _cluster(request, master_factory, tmp_path, {"MIRRORSYNC_DISPATCH_TIMEOUT": "60",
                                                            "MIRRORSYNC_HEARTBEAT_TIMEOUT": "120"})


def entry_of(run, slave):
    return {entry["slave"]: entry for entry in run["slaves"]}[slave]


def parse_time(stamp):
    return datetime.datetime.fromisoformat(stamp)


def assert_whole_generation(tree, gen1, gen2):
    """The tree a reader sees is exactly generation 1 or exactly generation 2; returns which."""
    seen = published_tree(tree)
    assert seen is not None, f"{tree} is missing"
    candidates = {"generation 1": tree_differences(gen1, seen), "generation 2": tree_differences(gen2, seen)}
    whole = [name for name, differences in candidates.items() if not differences]
    assert whole, f"{tree} is neither whole generation: {candidates}"
    return whole[0]


@pytest.mark.slow
def test_a_slave_killed_mid_pull_times_out_and_keeps_a_whole_tree(slave_cluster):
    cluster = slave_cluster
    gen1, gen2, run = cluster.start_generation_2("crash")
    cluster.catch_victim_pulling("crash", run["id"])

    cluster.victim.kill9()
    # A service manager ends the whole unit (its cgroup); rsync runs in a session of its own,
    # so that is killed on its own here. What a bare kill -9 leaves behind is the next test's subject.
    kill_rsync_under(cluster.victim.root)
    assert assert_whole_generation(cluster.victim.tree("crash"), gen1, gen2) == "generation 1"

    final = wait_run_finished(cluster.master.url, cluster.master.admin_token, run["id"], TIMEOUT + 10)
    assert final["state"] == "partial", final
    assert entry_of(final, "mirror1")["state"] == "success"
    victim = entry_of(final, "mirror2")
    assert victim["state"] in ("failed", "timeout"), victim
    overdue = parse_time(victim["finished_at"]) - parse_time(victim["dispatched_at"])
    assert overdue <= datetime.timedelta(seconds=TIMEOUT + 1 + 2), f"ended {overdue} after its order"
    assert "mirror2" in final["error"]
    assert_trees_equal(cluster.upstream_tree, cluster.steady.tree("crash").resolve())
    assert cluster.freshness("crash", "mirror2")["state"] != "fresh"

    cluster.restart_victim()
    snapshots = cluster.victim.public_dir / ".mirrorsync-snapshots" / "crash"
    wait_for(lambda: not [p for p in snapshots.iterdir() if p.name.endswith(".partial")], 10,
             message="the half-pulled snapshot to be removed at restart")
    assert assert_whole_generation(cluster.victim.tree("crash"), gen1, gen2) in ("generation 1", "generation 2")




@pytest.mark.slow
@pytest.mark.parametrize("fault", ["kill9", "sigterm"])
def test_a_slave_cut_short_mid_pull_catches_up_after_a_restart(lone_slave_cluster, fault):
    cluster = lone_slave_cluster
    _, _, run = cluster.start_generation_2("again")
    cluster.catch_victim_pulling("again", run["id"])
    if fault == "kill9":
        cluster.victim.kill9()
        kill_rsync_under(cluster.victim.root)
    else:
        assert cluster.victim.stop() == 0
    restarted_at = datetime.datetime.now(datetime.timezone.utc)
    cluster.restart_victim()

    def victim_entry():
        return entry_of(run_of(cluster.api, run["id"]), "mirror2")

    def order_taken_after_restart():
        entry = victim_entry()
        taken = entry["state"] in ("dispatched", "syncing", "success")
        return entry if taken and parse_time(entry["dispatched_at"]) >= restarted_at else None
    attempt = wait_for(order_taken_after_restart, 10, message="a catch-up order mirror2 accepts")["attempts"]

    def outcome():
        entry = victim_entry()
        # Another attempt means the accepted one came to nothing by its deadline.
        return entry if entry["attempts"] > attempt or entry["state"] in FINAL_SLAVE_STATES else None
    entry = wait_for(outcome, TIMEOUT + 10, message="the catch-up order mirror2 accepted to end")
    assert entry["state"] == "success", \
        f"the catch-up order mirror2 accepted (attempt {attempt}) never led to a pull: {entry}"
    wait_for(lambda: cluster.freshness("again", "mirror2").get("state") == "fresh", 5,
             message="mirror2 fresh in the status feed")
    assert cluster.freshness("again", "mirror2")["run_id"] == run["id"]
    assert_trees_equal(cluster.upstream_tree, cluster.victim.tree("again").resolve())


ORPHAN_BUG = ("slave/syncs.py and slave/__init__.py: a slave never records its rsync's pid (rsync runs in "
              "its own session), so after kill -9 of python -m slave the rsync keeps writing under "
              "PUBLIC_DIR and the restarted slave does not end it, unlike master/executor.end_orphaned_rsync")


def test_a_restarted_slave_ends_the_rsync_its_killed_predecessor_left(lone_slave_cluster):
    cluster = lone_slave_cluster
    _, _, run = cluster.start_generation_2("orphan")
    cluster.catch_victim_pulling("orphan", run["id"])
    cluster.victim.kill9()
    orphans = set(rsync_processes_under(cluster.victim.root))
    assert orphans, "the slave's rsync runs in its own session and outlives a kill -9 of the slave"
    cluster.restart_victim()
    # The orphan has most of 16 s of pulling ahead: gone within 8 s of the restart means it was ended.
    wait_gone(orphans, 8, "the rsync left by the killed slave")


def test_a_slave_killed_while_it_repairs_its_tree_ends_that_rsync_after_the_restart_and_repairs_it_again(
        lone_slave_cluster):
    """A repair (the tree edited behind the slave's back, pulled again from the run it holds) answers no
    run, so no record holds its rsync's pid: a marker does, and the restart ends that rsync."""
    cluster = lone_slave_cluster
    repairing = {"MIRRORSYNC_REPAIR_DELAY": "0.2"}
    slow = {"MIRRORSYNC_RSYNC_BINARY": cluster.victim.env["MIRRORSYNC_RSYNC_BINARY"], **repairing}
    port = cluster.victim.port
    cluster.victim.stop()
    cluster.victim = cluster._start("mirror2", port=port, extra_env=repairing)   # full speed to start with
    write_generation(cluster.upstream_tree, GEN2, 1_700_000_100)
    create_project(cluster.api, "fixed", cluster.daemon.url("mirror"), publish="atomic", timeout=TIMEOUT)
    cluster.wait_online()
    first = cluster.sync("fixed")
    assert first["state"] == "success", first
    cluster.victim.wait_for_log(f"pulled fixed for run {first['id']}")
    cluster.victim.stop()
    cluster.victim = cluster._start("mirror2", port=port, extra_env=slow)        # 16 s for data/big.bin
    cluster.victim.wait_for_log("listening on")
    (cluster.victim.tree("fixed") / "data" / "big.bin").unlink()

    cluster.victim.wait_for_log("pulling run 1 again to repair its tree", timeout=20)
    wait_rsync_under(cluster.victim.root)
    wait_for(lambda: [path for path in cluster.victim.public_dir.rglob(".big.bin.*")
                      if path.is_file() and path.stat().st_size > 0], 20,
             message="mirror2 to be part way through data/big.bin again")
    cluster.victim.kill9()
    orphans = set(rsync_processes_under(cluster.victim.root))
    assert orphans, "the repair's rsync runs in its own session and outlives a kill -9 of the slave"
    cluster.victim = cluster._start("mirror2", port=port, extra_env=repairing)
    # The orphan has most of 16 s of pulling ahead: gone within 8 s of the restart means it was ended.
    wait_gone(orphans, 8, "the repair's rsync left by the killed slave")
    cluster.victim.wait_for_log("the repair of fixed was cut short by a stop")
    cluster.victim.wait_for_log("fixed: repaired: its tree is run 1's again", timeout=20)
    assert_trees_equal(cluster.upstream_tree, cluster.victim.tree("fixed").resolve())


def test_sigterm_to_a_slave_mid_pull_reports_it_interrupted_and_leaves_no_rsync(cluster_without_catch_up):
    cluster = cluster_without_catch_up
    _, _, run = cluster.start_generation_2("polite")
    cluster.catch_victim_pulling("polite", run["id"])

    assert cluster.victim.stop() == 0, cluster.victim.log_tail()
    assert not rsync_processes_under(cluster.victim.root), "a stopped slave must leave no rsync running"
    if any((cluster.victim.state_dir / "outbox").iterdir()):
        cluster.restart_victim()   # the report did not leave before the exit: it goes after the restart
    final = wait_run_finished(cluster.master.url, cluster.master.admin_token, run["id"], 20)
    assert final["state"] == "partial", final
    victim = entry_of(final, "mirror2")
    assert victim["state"] == "failed", victim
    assert "interrupted" in victim["error"], victim
    assert entry_of(final, "mirror1")["state"] == "success"
    assert not [p for p in (cluster.victim.public_dir / ".mirrorsync-snapshots" / "polite").iterdir()
                if p.name.endswith(".partial")], "the interrupted pull's snapshot must be cleaned up"


def small_generation(number):
    return {"README": f"generation {number}\n".encode(),
            "data/a.bin": random.Random(number).randbytes(16 * 1024),
            f"only-in-{number}.txt": b"x\n"}


def test_a_stopped_slave_holding_its_order_holds_back_no_pull_of_the_project(cluster_with_patient_orders):
    """SIGSTOP: the slave's kernel takes the connection and the order, and nothing answers for as
    long as DISPATCH_TIMEOUT. The project's next pull and the steady slave's copy of it go ahead; once
    the slave runs again it answers both orders and ends holding the newer tree."""
    cluster = cluster_with_patient_orders
    api = cluster.api
    write_generation(cluster.upstream_tree, small_generation(1), 1_700_000_000)
    create_project(api, "stall", cluster.daemon.url("mirror"), publish="atomic")
    cluster.wait_online()
    assert cluster.sync("stall")["state"] == "success"

    def entry_state(run_id, slave):
        """The state of ``slave``'s part of the run; None before the run has parts."""
        entries = {entry["slave"]: entry for entry in run_of(api, run_id)["slaves"]}
        return entries[slave]["state"] if slave in entries else None

    os.kill(cluster.victim.pid, signal.SIGSTOP)
    try:
        write_generation(cluster.upstream_tree, small_generation(2), 1_700_000_100)
        first = trigger(api, "stall")["id"]
        wait_for(lambda: entry_state(first, "mirror1") == "success", 20,
                 message=lambda: f"mirror1 to get run {first} ({run_of(api, first)})")
        assert entry_state(first, "mirror2") == "pending", run_of(api, first)
        gen3 = write_generation(cluster.upstream_tree, small_generation(3), 1_700_000_200)
        second = trigger(api, "stall")["id"]
        # Well inside the minute that the order to the stopped slave may wait.
        wait_for(lambda: entry_state(second, "mirror1") == "success", 25,
                 message=lambda: f"run {second} to reach mirror1 while mirror2 holds run {first}'s order "
                                 f"({run_of(api, second)['state']})")
        assert_trees_equal(cluster.upstream_tree, cluster.steady.tree("stall").resolve())
        assert entry_state(first, "mirror2") == "pending", run_of(api, first)
    finally:
        os.kill(cluster.victim.pid, signal.SIGCONT)

    finals = {run_id: wait_run_finished(cluster.master.url, cluster.master.admin_token, run_id, 40)
              for run_id in (first, second)}
    assert {run_id: run["state"] for run_id, run in finals.items()} == {first: "success", second: "success"}, finals
    assert tree_differences(gen3, published_tree(cluster.victim.tree("stall"))) == []
    wait_for(lambda: cluster.freshness("stall", "mirror2").get("run_id") == second, 10,
             message=lambda: f"mirror2 to hold run {second} ({cluster.freshness('stall', 'mirror2')})")
    assert cluster.freshness("stall", "mirror2")["state"] == "fresh"
