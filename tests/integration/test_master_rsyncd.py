"""The master's own rsync daemon: serves enrolled slaves only, and comes back when it dies."""

import os
import signal
import socket

import requests

from common.rsync import RsyncJob, RsyncRunner
from tests.support import processes, rsyncd
from tests.support.processes import DEFAULT_JOIN_TOKEN, wait_for, wait_run_finished
from tests.support.trees import assert_trees_equal


def daemon_children(parent_pid):
    """pids of rsync daemons whose parent is ``parent_pid``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent_pid and b"--daemon" in argv:
            found.append(int(pid))
    return found


def pull_from_master(master, credentials, project, snapshot, destination, password=None):
    """Pull run ``snapshot``'s tree of ``project``, as a slave does."""
    job = RsyncJob(source=f"rsync://{credentials['rsync_user']}@127.0.0.1:{master.rsyncd_port}/{project}/{snapshot}/",
                   destination=str(destination), password=password or credentials["rsync_password"], timeout=30)
    return RsyncRunner(kill_grace=1).run(job, str(destination) + ".log")


def test_the_daemon_serves_enrolled_slaves_only_and_is_restarted_when_it_dies(master_factory, tmp_path, upstream):
    from tests.integration.conftest import ApiClient
    master = master_factory(tmp_path / "data", extra_env={"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN})
    api = ApiClient(master.url, master.admin_token)
    credentials = requests.post(master.url + "/api/v1/slaves/register", timeout=5,
                                json={"name": "probe", "url": "http://127.0.0.1:9"},
                                headers={"Authorization": f"Bearer {DEFAULT_JOIN_TOKEN}"}).json()
    api.post("/api/v1/projects", json={"name": "served", "upstream": upstream.url})
    run = wait_run_finished(master.url, master.admin_token, api.post("/api/v1/projects/served/syncs").json()["id"])
    assert run["state"] == "failed" and "probe (unreachable)" in run["error"]

    assert pull_from_master(master, credentials, "served", run["id"], tmp_path / "copy").ok
    assert_trees_equal(upstream.tree, tmp_path / "copy")
    wrong = pull_from_master(master, credentials, "served", run["id"], tmp_path / "wrong", password="guess")
    assert not wrong.ok and "auth failed" in wrong.error

    [daemon] = wait_for(lambda: daemon_children(master.pid), 10, message="the managed rsync daemon")
    os.kill(daemon, signal.SIGKILL)
    restarted = wait_for(lambda: [pid for pid in daemon_children(master.pid) if pid != daemon], 15,
                         message="the rsync daemon to be restarted")
    assert restarted
    result = wait_for(lambda: (r := pull_from_master(master, credentials, "served", run["id"], tmp_path / "again")).ok and r,
                      10, interval=0.2, message="a pull from the restarted daemon")
    assert result.ok
    assert "restarting it" in master.log_text()

    api.delete("/api/v1/slaves/probe")
    wait_for(lambda: not pull_from_master(master, credentials, "served", run["id"], tmp_path / "gone").ok, 10,
             interval=0.2, message="a deleted slave to be locked out of the daemon")


def test_a_master_killed_with_sigkill_leaves_no_daemon_in_the_way_of_its_restart(master_factory, tmp_path, upstream):
    from tests.integration.conftest import ApiClient
    from tests.support.processes import free_port
    env = {"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN, "MIRRORSYNC_RSYNCD_PORT": str(free_port())}
    master = master_factory(tmp_path / "data", extra_env=env)
    credentials = requests.post(master.url + "/api/v1/slaves/register", timeout=5,
                                json={"name": "probe", "url": "http://127.0.0.1:9"},
                                headers={"Authorization": f"Bearer {DEFAULT_JOIN_TOKEN}"}).json()
    api = ApiClient(master.url, master.admin_token)
    api.post("/api/v1/projects", json={"name": "served", "upstream": upstream.url})
    run = wait_run_finished(master.url, master.admin_token, api.post("/api/v1/projects/served/syncs").json()["id"])
    [old_daemon] = wait_for(lambda: daemon_children(master.pid), 10, message="the managed rsync daemon")
    master.kill9(whole_session=False)  # only the master: its daemon lives on, holding the port
    assert os.path.exists(f"/proc/{old_daemon}")

    master = master_factory(tmp_path / "data", extra_env=env)
    wait_for(lambda: not os.path.exists(f"/proc/{old_daemon}") or
             open(f"/proc/{old_daemon}/stat").read().split()[2] == "Z", 15,
             message="the leftover daemon to be ended")
    wait_for(lambda: (r := pull_from_master(master, credentials, "served", run["id"], tmp_path / "after")).ok and r,
                      15, interval=0.2, message="a pull from the restarted master's daemon")
    assert_trees_equal(upstream.tree, tmp_path / "after")
    assert "a previous master left running" in master.log_text()


def test_a_taken_rsyncd_port_is_named_when_the_daemon_exits(master_factory, tmp_path):
    """An admin whose RSYNCD_PORT another service holds reads why the daemon keeps ending."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        master = master_factory(tmp_path / "master", extra_env={"MIRRORSYNC_RSYNCD_PORT": str(port)})
        master.wait_for_log(f"rsync daemon exited with 10 (bind() failed: Address already in use", timeout=10)


def test_a_master_whose_picked_rsyncd_port_was_taken_starts_again_on_another(tmp_path, monkeypatch):
    """The tests' own start: a port picked free and taken before the daemon binds it (seen in CI, by
    another test's API server) means another master on other ports, not a slave pull that fails."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        picked = processes.free_port
        ports = iter([picked(), taken.getsockname()[1]])   # the API's port, then the daemon's
        monkeypatch.setattr(processes, "free_port", lambda: next(ports, None) or picked())
        master = processes.start_master(tmp_path / "master", log_dir=tmp_path / "logs")
        try:
            assert master.rsyncd_port != taken.getsockname()[1]
            assert next(ports, None) is None, "the daemon was given the taken port first"
            assert rsyncd.greets(master.rsyncd_port)
        finally:
            master.stop()
