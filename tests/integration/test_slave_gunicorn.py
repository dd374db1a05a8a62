"""Production shape of a slave: gunicorn with several workers over one STATE_DIR."""

import sys

from tests.integration.conftest import ApiClient
from tests.support.processes import (DEFAULT_JOIN_TOKEN, ServiceProcess, free_port, slave_env, wait_for,
                                     wait_run_finished)
from tests.support.trees import assert_trees_equal


def test_a_slave_under_gunicorn_enrolls_once_and_pulls_each_order_once(master_factory, tmp_path, upstream):
    master = master_factory(tmp_path / "master", extra_env={
        "MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN, "MIRRORSYNC_CATCHUP_INTERVAL": "0.3"})
    api = ApiClient(master.url, master.admin_token)
    port = free_port()
    env = slave_env(tmp_path / "mirror1", "mirror1", master.url, port)
    server = ServiceProcess([sys.executable, "-m", "gunicorn", "--no-control-socket", "-w", "3",
                             "-b", f"127.0.0.1:{port}",
                             "slave:create_app()"], env, tmp_path / "logs", name="gunicorn-slave")
    try:
        server.wait_healthy(f"http://127.0.0.1:{port}/healthz", timeout=30)
        wait_for(lambda: [s["state"] for s in api.get("/api/v1/slaves").json()] == ["online"], 20,
                 message="one enrolled, online slave")
        api.post("/api/v1/projects", json={"name": "served", "upstream": upstream.url})
        runs = []
        for _ in range(3):
            run = api.post("/api/v1/projects/served/syncs").json()
            runs.append(wait_run_finished(master.url, master.admin_token, run["id"]))
        assert [run["state"] for run in runs] == ["success"] * 3, runs
        assert_trees_equal(upstream.tree, tmp_path / "mirror1" / "public" / "served")
        log = server.log_text()
        for run in runs:
            assert log.count(f"pulling served for run {run['id']}") == 1, "each order is pulled exactly once"
        assert log.count("INFO slave.heartbeat: enrolled with the master at") == 1, "one enrollment for all workers"
    finally:
        server.stop()
