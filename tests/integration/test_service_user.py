"""The whole pipeline as an ordinary service user, as the systemd samples run it.

A system user made for the test runs everything, from a root-owned install it
cannot write: the upstream (examples/local_upstream.py), the scheduler, the API
under gunicorn, the system rsync daemon on the scheduler's configuration, and
two slaves. A sync must reach both slaves.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import requests

from master.rsyncd import config_paths
from tests.integration.conftest import _track
from tests.support.processes import (DEFAULT_ADMIN_TOKEN, DEFAULT_JOIN_TOKEN, ServiceProcess, free_port,
                                     master_env, slave_env, wait_for, wait_run_finished)
from tests.support.service_user import (ServiceUser, ServiceUserError, install_copy, missing_tools,
                                        service_venv, uid_of)
from tests.support.trees import assert_trees_equal

pytestmark = pytest.mark.slow

READY_TIMEOUT = 30
SLAVES = ("mirror1", "mirror2")


@pytest.fixture
def service_user():
    if os.geteuid() != 0:
        pytest.skip("creating a service user (useradd) and switching to it (setpriv) needs root")
    if missing_tools():
        pytest.skip(f"needs {', '.join(missing_tools())} (Debian packages passwd, util-linux)")
    with ServiceUser() as user:
        yield user


@pytest.fixture
def deployment(service_user):
    """A base directory outside root's 0700 temp dirs: a root-owned install, and a writable srv/ for the user."""
    try:
        venv = service_venv()
    except ServiceUserError as error:
        pytest.fail(str(error), pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="mirror-sync-service-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        install = install_copy(base / "install", venv)
        srv = base / "srv"
        service_user.owns(srv)
        yield install, srv
    finally:
        service_user.end_processes()
        shutil.rmtree(base, ignore_errors=True)


def test_the_whole_pipeline_runs_as_an_unprivileged_service_user(service_user, deployment, tmp_path, request):
    install, srv = deployment
    python = install / ".venv" / "bin" / "python"
    logs = tmp_path / "logs"
    logs.mkdir()
    started = []

    def start(argv, env, name):
        env = dict(env, HOME=str(srv))
        service = ServiceProcess(service_user.command(argv), env, logs, name=name, cwd=install)
        started.append(_track(request, service))
        return service

    try:
        upstream_port = free_port()
        upstream = start([python, "examples/local_upstream.py", "--dir", srv / "upstream",
                          "--port", upstream_port, "--module", "tour"], os.environ, "upstream")
        upstream.wait_for_log("upstream ready", timeout=READY_TIMEOUT)

        data_dir = srv / "master"
        env = master_env(data_dir, extra_env={"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN,
                                              "MIRRORSYNC_CATCHUP_INTERVAL": "1"})
        master_url = f"http://127.0.0.1:{env['MIRRORSYNC_API_PORT']}"
        scheduler = start([python, "-m", "master.scheduler"], env, "scheduler")
        scheduler.wait_for_log("scheduler started", timeout=READY_TIMEOUT)
        api = start([python, "-m", "gunicorn", "--no-control-socket", "-w", "2",
                     "-b", f"127.0.0.1:{env['MIRRORSYNC_API_PORT']}", "master:create_app()"], env, "gunicorn")
        api.wait_healthy(master_url + "/healthz", timeout=READY_TIMEOUT)

        config_path, _ = config_paths(str(data_dir))
        wait_for(lambda: os.path.exists(config_path), READY_TIMEOUT, message="the scheduler's rsyncd.conf")
        rsyncd = start(["rsync", "--daemon", "--no-detach", f"--port={env['MIRRORSYNC_RSYNCD_PORT']}",
                        "--address=127.0.0.1", f"--config={config_path}"], env, "rsyncd")

        slaves = {}
        for name in SLAVES:
            port = free_port()
            slaves[name] = start([python, "-m", "slave"], slave_env(srv / name, name, master_url, port), name)
            slaves[name].wait_healthy(f"http://127.0.0.1:{port}/healthz", timeout=READY_TIMEOUT)

        for service in started:
            assert uid_of(service.pid) == service_user.uid, f"{service.name} does not run as the service user"
        assert "uid =" not in Path(config_path).read_text(), "rsync refuses uid/gid unless it is root"

        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {DEFAULT_ADMIN_TOKEN}"
        wait_for(lambda: {s["name"] for s in session.get(master_url + "/api/v1/slaves", timeout=5).json()
                          if s["state"] == "online"} == set(SLAVES), READY_TIMEOUT, message="both slaves online")
        created = session.post(master_url + "/api/v1/projects", timeout=5, json={
            "name": "tour", "upstream": f"rsync://127.0.0.1:{upstream_port}/tour/", "schedule": None})
        assert created.status_code == 201, created.text
        triggered = session.post(master_url + "/api/v1/projects/tour/syncs", timeout=5)
        assert triggered.status_code == 202, triggered.text
        run = wait_run_finished(master_url, DEFAULT_ADMIN_TOKEN, triggered.json()["id"], timeout=60)
        assert run["state"] == "success", run
        assert {part["slave"]: part["state"] for part in run["slaves"]} == {name: "success" for name in SLAVES}
        for name in SLAVES:
            assert_trees_equal(srv / "upstream" / "tree", srv / name / "public" / "tour")
        assert rsyncd.is_running(), rsyncd.log_tail()
        assert "setgroups failed" not in (data_dir / ".mirrorsync" / "rsyncd.log").read_text()
    finally:
        for service in reversed(started):
            service.stop()
