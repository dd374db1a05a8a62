"""Every master process refuses a database that is behind, in one line, and serves once it is upgraded."""

import subprocess
import sys

import pytest
import requests

from master import schema
from tests.support.legacy_db import ADMIN_TOKEN, build_legacy_database
from tests.support.processes import REPO_ROOT, free_port, master_env, start_gunicorn_master, start_master

pytestmark = pytest.mark.integration

COMMANDS = {
    "python -m master": [sys.executable, "-m", "master"],
    "python -m master.scheduler": [sys.executable, "-m", "master.scheduler"],
    # One worker: when several stop at once, gunicorn 27's arbiter raises its own HaltServer again
    # while halting and prints that traceback after our line (README, Upgrading).
    "gunicorn": [sys.executable, "-m", "gunicorn", "--no-control-socket", "-w", "1", "-b", "127.0.0.1:{port}",
                 "master:create_app()"],
}


@pytest.fixture
def legacy_data_dir(tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / ".mirrorsync").mkdir(parents=True)
    build_legacy_database(f"sqlite:///{data_dir / '.mirrorsync' / 'mirrorsync.db'}")
    return data_dir


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_process_refuses_a_database_that_is_behind_with_one_line(legacy_data_dir, name):
    port = free_port()
    argv = [arg.format(port=port) for arg in COMMANDS[name]]
    result = subprocess.run(argv, env=master_env(legacy_data_dir, api_port=port), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    ours = {line for line in output.splitlines() if "db upgrade" in line}
    assert len(ours) == 1, output
    assert "is at revision none (made before migrations), behind" in ours.pop()


def test_after_db_upgrade_python_m_master_serves_the_old_rows(legacy_data_dir, tmp_path):
    upgrade = subprocess.run([sys.executable, "-m", "master", "db", "upgrade"], cwd=REPO_ROOT,
                             env=master_env(legacy_data_dir), capture_output=True, text=True, timeout=60)
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"upgraded from none to {schema.head_revision()}" in upgrade.stdout
    with start_master(legacy_data_dir, admin_token=None, log_dir=tmp_path) as master:
        answer = requests.get(f"{master.url}/api/v1/projects", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                              timeout=10)
        assert answer.status_code == 200
        assert {project["name"] for project in answer.json()} == {"debian", "archlinux"}


def test_several_gunicorn_workers_create_a_new_database_once(tmp_path):
    with start_gunicorn_master(tmp_path / "data", workers=3, log_dir=tmp_path) as master:
        answer = requests.get(f"{master.url}/api/v1/projects",
                              headers={"Authorization": f"Bearer {master.admin_token}"}, timeout=10)
        assert answer.status_code == 200 and answer.json() == []
        current = subprocess.run([sys.executable, "-m", "master", "db", "current"], cwd=REPO_ROOT,
                                 env=master_env(tmp_path / "data"), capture_output=True, text=True, timeout=60)
        assert f"{schema.head_revision()} (the newest)" in current.stdout, current.stdout + current.stderr
        assert "Traceback" not in master.log_text()
