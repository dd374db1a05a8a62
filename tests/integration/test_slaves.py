"""A master, two slaves and an upstream rsync daemon, all real processes on loopback."""

import json
import os
import time

import pytest
import requests

from common.rsync import daemon_command
from common.signing import signature_headers
from tests.integration.conftest import ApiClient
from tests.support.processes import (DEFAULT_JOIN_TOKEN, ServiceProcess, free_port, start_gunicorn_master,
                                     start_scheduler, start_slave, wait_for, wait_run_finished)
from tests.support.trees import assert_same_with_rsync, assert_trees_equal, mutate_tree

MASTER_ENV = {"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN, "MIRRORSYNC_CATCHUP_INTERVAL": "0.3",
              "MIRRORSYNC_HEARTBEAT_TIMEOUT": "1.5", "MIRRORSYNC_DISPATCH_TIMEOUT": "2"}


class Cluster:
    def __init__(self, master, api, slaves, tmp_path):
        self.master, self.api, self.slaves, self.tmp_path = master, api, slaves, tmp_path

    def slave_states(self):
        return {s["name"]: s["state"] for s in self.api.get("/api/v1/slaves").json()}

    def wait_online(self, *names):
        names = names or tuple(self.slaves)
        wait_for(lambda: all(self.slave_states().get(name) == "online" for name in names), 20,
                 message=lambda: f"slaves {names} online (now {self.slave_states()})")

    def sync(self, project, timeout=30):
        run = self.api.post(f"/api/v1/projects/{project}/syncs")
        assert run.status_code == 202, run.text
        return wait_run_finished(self.master.url, self.master.admin_token, run.json()["id"], timeout)

    def restart_slave(self, name):
        old = self.slaves[name]
        self.slaves[name] = start_slave(old.root, name, self.master.url, port=old.port,
                                        log_dir=self.tmp_path / "logs")
        return self.slaves[name]


@pytest.fixture
def cluster(master_factory, tmp_path):
    master = master_factory(tmp_path / "master", extra_env=MASTER_ENV)
    api = ApiClient(master.url, master.admin_token)
    slaves = {}
    for name in ("mirror1", "mirror2"):
        slaves[name] = start_slave(tmp_path / name, name, master.url, log_dir=tmp_path / "logs")
    cluster = Cluster(master, api, slaves, tmp_path)
    yield cluster
    for slave in cluster.slaves.values():
        slave.stop()


def by_slave(run):
    return {entry["slave"]: entry for entry in run["slaves"]}


def test_after_a_run_every_slave_holds_the_upstream_tree(cluster, upstream):
    cluster.wait_online()
    assert cluster.api.post("/api/v1/projects", json={"name": "tricky", "upstream": upstream.url}).status_code == 201
    run = cluster.sync("tricky")
    assert run["state"] == "success", run
    assert {name: entry["state"] for name, entry in by_slave(run).items()} == {
        "mirror1": "success", "mirror2": "success"}
    for slave in cluster.slaves.values():
        assert_trees_equal(upstream.tree, slave.tree("tricky"))
        assert_same_with_rsync(upstream.tree, slave.tree("tricky"))
        assert by_slave(run)[slave.slave_name]["stats"]["total_size"] == run["stats"]["total_size"]

    mutate_tree(upstream.tree)
    second = cluster.sync("tricky")
    assert second["state"] == "success", second
    for slave in cluster.slaves.values():
        assert_same_with_rsync(upstream.tree, slave.tree("tricky"))
    feed = {entry["name"]: entry for entry in cluster.api.get("/api/v1/status").json()}["tricky"]
    assert {name: (f["state"], f["run_id"]) for name, f in feed["slaves"].items()} == {
        "mirror1": ("fresh", second["id"]), "mirror2": ("fresh", second["id"])}


def test_a_slave_down_during_fan_out_is_unreachable_then_catches_up(cluster, upstream):
    cluster.wait_online()
    cluster.api.post("/api/v1/projects", json={"name": "catchup", "upstream": upstream.url})
    cluster.slaves["mirror2"].stop()
    run = cluster.sync("catchup")
    assert run["state"] == "partial", run
    assert by_slave(run)["mirror2"]["state"] == "unreachable"
    assert by_slave(run)["mirror1"]["state"] == "success"
    assert not cluster.slaves["mirror2"].tree("catchup").exists()
    wait_for(lambda: cluster.slave_states()["mirror2"] == "offline", 10, message="mirror2 marked offline")

    cluster.restart_slave("mirror2")

    def caught_up():
        feed = {e["name"]: e for e in cluster.api.get("/api/v1/status").json()}["catchup"]["slaves"]
        return feed["mirror2"]["state"] == "fresh" and feed["mirror2"]["run_id"] == run["id"]
    wait_for(caught_up, 30, message="mirror2 to catch up")
    assert_trees_equal(upstream.tree, cluster.slaves["mirror2"].tree("catchup"))
    entry = by_slave(cluster.api.get(f"/api/v1/runs/{run['id']}").json())["mirror2"]
    assert entry["state"] == "success" and entry["attempts"] >= 2


def test_disabling_a_slave_stops_orders_to_it(cluster, upstream):
    cluster.wait_online()
    cluster.api.post("/api/v1/projects", json={"name": "partly", "upstream": upstream.url})
    assert cluster.api.patch("/api/v1/slaves/mirror2", json={"enabled": False}).status_code == 200
    run = cluster.sync("partly")
    assert run["state"] == "success"
    assert set(by_slave(run)) == {"mirror1"}
    assert not cluster.slaves["mirror2"].tree("partly").exists()
    assert "partly" not in cluster.slaves["mirror2"].log_text(), "a disabled slave got an order"
    secrets = (cluster.master.data_dir / ".mirrorsync" / "rsyncd.secrets").read_text()
    assert "ms-mirror2:" not in secrets, "a disabled slave must not be able to pull from the daemon"


def credentials_of(slave):
    with open(slave.state_dir / "credentials.json") as file:
        return json.load(file)


@pytest.mark.parametrize("forgery", ["unsigned", "wrong-key", "stale", "replayed"])
def test_forged_stale_and_replayed_orders_are_refused_and_no_rsync_starts(cluster, forgery):
    cluster.wait_online()
    slave = cluster.slaves["mirror1"]
    key = credentials_of(slave)["signing_key"]
    order = {"run_id": 4242, "project": "forged", "rsyncd_host": "127.0.0.1",
             "rsyncd_port": cluster.master.rsyncd_port, "timeout": 60}
    body = json.dumps(order).encode()
    headers = signature_headers("mirror1", key, "POST", "/api/v1/syncs", body)
    if forgery == "unsigned":
        headers = {}
    elif forgery == "wrong-key":
        headers = signature_headers("mirror1", "guessed-key", "POST", "/api/v1/syncs", body)
    elif forgery == "stale":
        headers = signature_headers("mirror1", key, "POST", "/api/v1/syncs", body, now=time.time() - 600)
    elif forgery == "replayed":
        # A genuine order, captured and sent again: the first is taken, the copy is refused.
        first = requests.post(slave.url + "/api/v1/syncs", data=body, timeout=5,
                              headers=dict(headers, **{"Content-Type": "application/json"}))
        assert first.status_code == 202
        order = dict(order, run_id=4243)
    response = requests.post(slave.url + "/api/v1/syncs", data=body, timeout=5,
                             headers=dict(headers, **{"Content-Type": "application/json"}))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    if forgery != "replayed":
        assert not slave.tree("forged").exists(), "a refused order must start no rsync"
        path = "/api/v1/syncs/4242"
        record = requests.get(slave.url + path, timeout=5,
                              headers=signature_headers("mirror1", key, "GET", path, b""))
        assert record.status_code == 404


def test_a_report_is_delivered_after_the_master_api_was_briefly_down(tmp_path, upstream):
    """Production shape: gunicorn API, one scheduler, a system rsync daemon on the rendered config."""
    logs = tmp_path / "logs"
    data_dir = tmp_path / "master"
    # Every master-side process must agree on where the rsync daemon listens.
    env = dict(MASTER_ENV, MIRRORSYNC_HEARTBEAT_TIMEOUT="30", MIRRORSYNC_RSYNCD_PORT=str(free_port()))
    api_server = start_gunicorn_master(data_dir, workers=2, extra_env=env, log_dir=logs)
    scheduler = start_scheduler(data_dir, extra_env=env, log_dir=logs)
    config_path = data_dir / ".mirrorsync" / "rsyncd.conf"
    rsyncd = ServiceProcess(daemon_command(config_path, api_server.rsyncd_port, "127.0.0.1"),
                            os.environ.copy(), logs, name="rsyncd")
    slave = None
    try:
        wait_for(lambda: config_path.exists(), 10, message="the rendered rsyncd.conf")
        slave = start_slave(tmp_path / "mirror1", "mirror1", api_server.url, log_dir=logs)
        api = ApiClient(api_server.url, api_server.admin_token)
        wait_for(lambda: api.get("/api/v1/slaves").json()[:1] and
                 api.get("/api/v1/slaves").json()[0]["state"] == "online", 20, message="mirror1 online")
        big = tmp_path / "slow-tree"
        big.mkdir()
        (big / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
        from tests.support.rsyncd import RsyncDaemon
        with RsyncDaemon(tmp_path / "slow-rsyncd", {"slow": big}) as slow:
            api.post("/api/v1/projects", json={"name": "outage", "upstream": slow.url("slow"),
                                               "rsync_options": ["--bwlimit=1500"]})
            run = api.post("/api/v1/projects/outage/syncs").json()
            wait_for(lambda: api.get(f"/api/v1/runs/{run['id']}").json()["state"] == "syncing", 10,
                     message="the upstream pull to start")
            api_server.stop()  # the API goes away; the scheduler, rsyncd and slave stay up
            wait_for(lambda: "pulled outage for run" in slave.log_text(), 30,
                     message="the slave to finish its pull while the API is down")
            records = slave.state_dir / "outbox"
            assert any(records.iterdir()), "the undelivered report must wait in the outbox"
            api_server = start_gunicorn_master(data_dir, workers=2, port=api_server.port, extra_env=env,
                                               log_dir=logs)
            final = wait_run_finished(api_server.url, api_server.admin_token, run["id"], timeout=30)
        assert final["state"] == "success", final
        assert by_slave(final)["mirror1"]["state"] == "success"
        assert (slave.tree("outage") / "big.bin").stat().st_size == 3 * 1024 * 1024
        wait_for(lambda: not any((slave.state_dir / "outbox").iterdir()), 10, message="an empty outbox")
    finally:
        if slave is not None:
            slave.stop()
        rsyncd.stop()
        scheduler.stop()
        api_server.stop()


def order_directly(slave, cluster, run_id, project):
    """A signed order straight to ``slave``, as a master that handed out ``run_id`` for ``project`` sends it."""
    order = {"run_id": run_id, "project": project, "rsyncd_host": "127.0.0.1",
             "rsyncd_port": cluster.master.rsyncd_port, "timeout": 60}
    body = json.dumps(order).encode()
    headers = signature_headers(slave.slave_name, credentials_of(slave)["signing_key"], "POST", "/api/v1/syncs",
                                body)
    response = requests.post(slave.url + "/api/v1/syncs", data=body, timeout=5,
                             headers=dict(headers, **{"Content-Type": "application/json"}))
    assert response.status_code == 202, response.text


def test_a_project_deleted_and_another_added_reaches_both_slaves_though_its_run_ids_were_ordered_before(
        cluster, upstream):
    cluster.wait_online()
    assert cluster.api.post("/api/v1/projects", json={"name": "tour", "upstream": upstream.url}).status_code == 201
    tour = cluster.sync("tour")
    assert tour["state"] == "success", tour
    assert cluster.api.delete("/api/v1/projects/tour").status_code == 204
    # The slaves remember the run ids they were ordered for 'tour'. A master that hands such an id out
    # again (SQLite without AUTOINCREMENT did, and so does a master rebuilt on a fresh database) must
    # still be obeyed: make sure the next few ids are ones the slaves hold for 'tour'.
    for slave in cluster.slaves.values():
        for run_id in range(tour["id"] + 1, tour["id"] + 4):
            order_directly(slave, cluster, run_id, "tour")
    assert cluster.api.post("/api/v1/projects", json={"name": "debian", "upstream": upstream.url}).status_code == 201
    debian = cluster.sync("debian")
    assert debian["id"] <= tour["id"] + 3, "the test must reuse a run id the slaves hold for 'tour'"
    assert debian["state"] == "success", debian
    assert {name: entry["state"] for name, entry in by_slave(debian).items()} == {
        "mirror1": "success", "mirror2": "success"}
    for slave in cluster.slaves.values():
        assert_same_with_rsync(upstream.tree, slave.tree("debian"))
    feed = {entry["name"]: entry for entry in cluster.api.get("/api/v1/status").json()}["debian"]
    assert {name: f["state"] for name, f in feed["slaves"].items()} == {"mirror1": "fresh", "mirror2": "fresh"}


FORGOTTEN = "no longer knows this slave"


def test_a_deleted_slave_enrolls_again_by_itself_and_the_master_keeps_its_history(cluster, upstream):
    cluster.wait_online()
    assert cluster.api.post("/api/v1/projects", json={"name": "tricky", "upstream": upstream.url}).status_code == 201
    first = cluster.sync("tricky")
    assert first["state"] == "success", first
    slave = cluster.slaves["mirror1"]
    old_key = credentials_of(slave)["signing_key"]
    assert cluster.api.delete("/api/v1/slaves/mirror1").status_code == 204
    issued = slave.state_dir / "credentials.json"
    wait_for(lambda: issued.exists() and credentials_of(slave)["signing_key"] != old_key, 20,
             message=lambda: f"mirror1 to enroll again; its log:\n{slave.log_text()[-2000:]}")
    cluster.wait_online("mirror1")
    assert slave.log_text().count(FORGOTTEN) == 1
    # The old name's history stays with its runs (catch-up may have added the new mirror1's own part
    # to that run, the project's newest, by now: the old part is the first of that name).
    parts = [entry for entry in cluster.api.get(f"/api/v1/runs/{first['id']}").json()["slaves"]
             if entry["slave"] == "mirror1"]
    assert parts[0]["state"] == "success", parts
    mutate_tree(upstream.tree)
    second = cluster.sync("tricky")
    assert second["state"] == "success", second
    assert by_slave(second)["mirror1"]["state"] == "success"
    assert_same_with_rsync(upstream.tree, slave.tree("tricky"))


def test_a_deleted_slave_without_a_join_token_says_once_what_the_admin_must_do(cluster):
    cluster.wait_online()
    old = cluster.slaves["mirror2"]
    old.stop()
    slave = cluster.slaves["mirror2"] = start_slave(old.root, "mirror2", cluster.master.url, port=old.port,
                                                    join_token="", log_dir=cluster.tmp_path / "logs")
    cluster.wait_online("mirror2")
    assert cluster.api.delete("/api/v1/slaves/mirror2").status_code == 204
    wait_for(lambda: FORGOTTEN in slave.log_text(), 20, message="mirror2 to say the master forgot it")
    [line] = [line for line in slave.log_text().splitlines() if FORGOTTEN in line]
    assert "set MIRRORSYNC_JOIN_TOKEN" in line and "restart this slave" in line
    # Several heartbeat intervals later it has said nothing more and enrolled nothing.
    seen = cluster.api.get("/api/v1/slaves/mirror1").json()["last_seen"]
    for _ in range(3):
        wait_for(lambda: cluster.api.get("/api/v1/slaves/mirror1").json()["last_seen"] != seen, 10,
                 message="heartbeats of mirror1")
        seen = cluster.api.get("/api/v1/slaves/mirror1").json()["last_seen"]
    assert slave.log_text().count(FORGOTTEN) == 1
    assert "mirror2" not in cluster.slave_states()


def test_cancelling_a_distributing_run_stops_the_slaves_pull(cluster, tmp_path):
    import random

    from tests.support.faults import rsync_processes_under, throttled_rsync, wait_gone
    from tests.support.rsyncd import RsyncDaemon

    cluster.wait_online()
    old = cluster.slaves["mirror2"]
    old.stop()
    slow = throttled_rsync(tmp_path / "bin", 100)
    slave = cluster.slaves["mirror2"] = start_slave(old.root, "mirror2", cluster.master.url, port=old.port,
                                                    extra_env={"MIRRORSYNC_RSYNC_BINARY": str(slow)},
                                                    log_dir=tmp_path / "logs")
    cluster.wait_online("mirror2")
    tree = tmp_path / "big-tree"
    tree.mkdir()
    (tree / "big.bin").write_bytes(random.Random(4).randbytes(3 * 1024 * 1024))
    with RsyncDaemon(tmp_path / "big-rsyncd", {"big": tree}) as daemon:
        assert cluster.api.post("/api/v1/projects", json={"name": "big", "upstream": daemon.url("big")}
                                ).status_code == 201
        run = cluster.api.post("/api/v1/projects/big/syncs").json()
        pids = wait_for(lambda: set(rsync_processes_under(slave.public_dir)), 30,
                        message="mirror2's slow pull")
        cancelled = cluster.api.post(f"/api/v1/runs/{run['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
        assert by_slave(cancelled.json())["mirror2"]["state"] == "cancelled"
        wait_gone(pids, 15, what="mirror2's cancelled rsync")
    path = f"/api/v1/syncs/{run['id']}?project=big"

    def record():
        return requests.get(slave.url + path, timeout=5, headers=signature_headers(
            "mirror2", credentials_of(slave)["signing_key"], "GET", path, b"")).json()
    wait_for(lambda: record()["state"] == "failed", 10, message=lambda: f"mirror2's record to end ({record()})")
    assert record()["error"] == "cancelled by the master"
    final = cluster.api.get(f"/api/v1/runs/{run['id']}").json()
    assert final["state"] == "cancelled" and by_slave(final)["mirror2"]["state"] == "cancelled"


def test_a_master_rebuilt_on_a_new_database_has_its_runs_pulled_though_their_ids_were_ordered_before(
        master_factory, upstream, tmp_path):
    """The new master's run ids start again, and the slave, forgotten there, enrolls again: its records
    of the old master's runs must not answer the new master's orders (they would, without a pull,
    with the old tree's digest)."""
    logs = tmp_path / "logs"
    old = master_factory(tmp_path / "old-master", extra_env=MASTER_ENV)
    slave = start_slave(tmp_path / "mirror1", "mirror1", old.url, log_dir=logs)
    try:
        cluster = Cluster(old, ApiClient(old.url, old.admin_token), {"mirror1": slave}, tmp_path)
        cluster.wait_online()
        assert cluster.api.post("/api/v1/projects", json={"name": "debian", "upstream": upstream.url}).status_code == 201
        first = cluster.sync("debian")
        assert first["state"] == "success", first
        old.stop()

        mutate_tree(upstream.tree)
        new = master_factory(tmp_path / "new-master", port=old.port, extra_env=MASTER_ENV)
        cluster = Cluster(new, ApiClient(new.url, new.admin_token), {"mirror1": slave}, tmp_path)
        wait_for(lambda: FORGOTTEN in slave.log_text(), 20, message="mirror1 to hear the new master forgot it")
        cluster.wait_online()
        assert cluster.api.post("/api/v1/projects", json={"name": "debian", "upstream": upstream.url}).status_code == 201
        again = cluster.sync("debian")
        assert again["id"] == first["id"], "the test needs the new master to hand out the same run id"
        assert again["state"] == "success", again
        assert by_slave(again)["mirror1"]["state"] == "success"
        assert_same_with_rsync(upstream.tree, slave.tree("debian"))
    finally:
        slave.stop()
