"""A real master process pulling from a real rsync daemon, driven over HTTP."""

import os
import random
import signal

import pytest

from tests.support.processes import wait_for, wait_run_finished
from tests.support.rsyncd import RsyncDaemon
from tests.support.trees import (UNSAFE_SYMLINKS, add_unsafe_symlinks, assert_same_with_rsync,
                                 assert_trees_equal, mutate_tree)

SECRET = "upstream-S3cret-5a1f0c"


def create_project(api, name, upstream, **fields):
    response = api.post("/api/v1/projects", json={"name": name, "upstream": upstream, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def sync(api, master, name, timeout=30):
    response = api.post(f"/api/v1/projects/{name}/syncs")
    assert response.status_code == 202, response.text
    return wait_run_finished(master.url, master.admin_token, response.json()["id"], timeout=timeout)


def rsync_processes():
    """pid -> argv of every rsync client process on the machine (daemons left out)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]).startswith(b"rsync") and b"--daemon" not in argv:
            found[int(pid)] = argv
    return found


def rsync_of(data_dir):
    """Whether an rsync process writing into ``data_dir`` still runs (other tests run rsync too)."""
    marker = str(data_dir).encode()
    return any(marker in b" ".join(argv) for argv in rsync_processes().values())


def slow_upstream(tmp_path, users=None):
    tree = tmp_path / "slow-tree"
    tree.mkdir()
    (tree / "big.bin").write_bytes(random.Random(1).randbytes(4 * 1024 * 1024))
    return RsyncDaemon(tmp_path / "slow-rsyncd", {"slow": tree}, users=users)


def test_pull_mirrors_a_tricky_tree_and_follows_upstream_changes(master, api, upstream):
    create_project(api, "tricky", upstream.url)
    run = sync(api, master, "tricky")
    assert run["state"] == "success", run
    tree = master.data_dir / "tricky"
    assert_trees_equal(upstream.tree, tree)
    assert_same_with_rsync(upstream.tree, tree)
    assert run["stats"]["files_transferred"] > 0 and run["stats"]["total_size"] > 0

    mutate_tree(upstream.tree)
    second = sync(api, master, "tricky")
    assert second["state"] == "success", second
    assert second["stats"]["files_deleted"] > 0
    assert_trees_equal(upstream.tree, tree)
    assert_same_with_rsync(upstream.tree, tree)

    project = api.get("/api/v1/projects/tricky").json()
    assert project["status"] == "success"
    assert project["last_success"] == second["finished_at"]
    assert project["size"] == second["stats"]["total_size"]
    log = api.get(f"/api/v1/runs/{second['id']}/log")
    assert log.status_code == 200 and "Number of deleted files" in log.text
    [feed] = api.get("/api/v1/status").json()
    assert feed["name"] == "tricky" and feed["status"] == "success" and feed["size"] == project["size"]


def test_unsafe_symlinks_upstream_are_not_mirrored(master, api, upstream):
    add_unsafe_symlinks(upstream.tree)
    create_project(api, "links", upstream.url)
    assert sync(api, master, "links")["state"] == "success"
    for relpath in UNSAFE_SYMLINKS:
        assert not os.path.lexists(master.data_dir / "links" / relpath), relpath
    assert_trees_equal(upstream.tree, master.data_dir / "links", ignore=tuple(UNSAFE_SYMLINKS))


def test_upstream_password_reaches_rsync_but_no_command_line_log_or_response(master, api, tmp_path):
    with slow_upstream(tmp_path, users={"mirror": SECRET}) as daemon:
        create_project(api, "private", daemon.url("slow", user="mirror"), upstream_password=SECRET,
                       rsync_options=["--bwlimit=4000"])
        started = api.post("/api/v1/projects/private/syncs").json()
        seen = {}

        def rsync_running_for_us():
            seen.update({pid: argv for pid, argv in rsync_processes().items()
                         if any(str(master.data_dir).encode() in arg for arg in argv)})
            return len(seen) >= 2  # rsync forks: check the parent and its child
        wait_for(rsync_running_for_us, 20, message="rsync processes of the run")
        for argv in seen.values():
            assert SECRET.encode() not in b"\0".join(argv)
        run = wait_run_finished(master.url, master.admin_token, started["id"], timeout=30)
    assert run["state"] == "success", run
    assert (master.data_dir / "private" / "big.bin").stat().st_size == 4 * 1024 * 1024
    responses = [api.get(path).text for path in (
        "/api/v1/projects", "/api/v1/projects/private", "/api/v1/status", f"/api/v1/runs/{run['id']}",
        f"/api/v1/runs/{run['id']}/log", "/api/v1/projects/private/runs")]
    assert all(SECRET not in text for text in responses)
    assert api.get("/api/v1/projects/private").json()["has_password"] is True
    assert SECRET not in master.log_text()


def test_wrong_upstream_password_fails_with_a_readable_error(master, api, tmp_path):
    with slow_upstream(tmp_path, users={"mirror": SECRET}) as daemon:
        create_project(api, "badauth", daemon.url("slow", user="mirror"), upstream_password="wrong")
        run = sync(api, master, "badauth")
    assert run["state"] == "failed"
    assert run["exit_code"] == 5
    assert "auth" in run["error"].lower()


def test_wall_clock_timeout_kills_rsync_and_fails_the_run(master, api, tmp_path):
    with slow_upstream(tmp_path) as daemon:
        create_project(api, "slowpoke", daemon.url("slow"), timeout=1, rsync_options=["--bwlimit=100"])
        run = sync(api, master, "slowpoke")
    assert run["state"] == "failed"
    assert "timed out" in run["error"]
    assert 1 <= run["duration"] < 10
    wait_for(lambda: not rsync_of(master.data_dir), 10, message="the timed-out rsync processes to be gone")


def test_cancelling_a_syncing_run_ends_its_rsync_and_the_next_sync_works(master, api, tmp_path):
    with slow_upstream(tmp_path) as daemon:
        create_project(api, "slowpoke", daemon.url("slow"), rsync_options=["--bwlimit=100"])
        started = api.post("/api/v1/projects/slowpoke/syncs").json()
        wait_for(lambda: rsync_of(master.data_dir), 20, message="the rsync of the run")
        cancelled = api.post(f"/api/v1/runs/{started['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
        wait_for(lambda: not rsync_of(master.data_dir), 10, message="the cancelled rsync processes to be gone")
        again = api.post(f"/api/v1/runs/{started['id']}/cancel")
        assert again.status_code == 409 and "already ended (cancelled)" in again.json()["message"]
        assert api.patch("/api/v1/projects/slowpoke", json={"rsync_options": []}).status_code == 200
        run = sync(api, master, "slowpoke")
    assert run["state"] == "success", run
    history = api.get("/api/v1/projects/slowpoke/runs").json()
    assert [r["state"] for r in history] == ["success", "cancelled"], "a cancel queues no recovery run"


def test_failed_pull_keeps_the_previous_tree_and_last_success(master, api, upstream):
    create_project(api, "flaky", upstream.url)
    good = sync(api, master, "flaky")
    assert good["state"] == "success"
    bad_url = upstream.url.replace(f"/{upstream.module}/", "/no-such-module/")
    assert api.patch("/api/v1/projects/flaky", json={"upstream": bad_url}).status_code == 200
    bad = sync(api, master, "flaky")
    assert bad["state"] == "failed"
    assert "unknown module" in bad["error"].lower()
    project = api.get("/api/v1/projects/flaky").json()
    assert project["status"] == "failed" and project["last_success"] == good["finished_at"]
    assert_trees_equal(upstream.tree, master.data_dir / "flaky")


def test_sigterm_interrupts_the_pull_and_a_restart_resumes_it(master_factory, tmp_path):
    from tests.integration.conftest import ApiClient
    data_dir = tmp_path / "data"
    master = master_factory(data_dir)
    api = ApiClient(master.url, master.admin_token)
    with slow_upstream(tmp_path) as daemon:
        create_project(api, "resume", daemon.url("slow"), rsync_options=["--bwlimit=500"])
        run = api.post("/api/v1/projects/resume/syncs").json()
        wait_for(lambda: api.get(f"/api/v1/runs/{run['id']}").json()["state"] == "syncing", 10,
                 message="the run to start syncing")
        # A long pull shows how far it got.
        wait_for(lambda: (api.get(f"/api/v1/runs/{run['id']}").json()["progress"] or {}).get("bytes", 0) > 0,
                 10, message="progress of the running pull")
        os.kill(master.pid, signal.SIGTERM)
        wait_for(lambda: not master.is_running(), 20, message="the master to exit after SIGTERM")
        wait_for(lambda: not rsync_of(data_dir), 10, message="the interrupted rsync to be gone")

        master = master_factory(data_dir)
        api = ApiClient(master.url, master.admin_token)
        interrupted = api.get(f"/api/v1/runs/{run['id']}").json()
        assert interrupted["state"] == "interrupted"
        api.patch("/api/v1/projects/resume", json={"rsync_options": []})
        history = api.get("/api/v1/projects/resume/runs").json()
        assert history[0]["trigger"] == "recovery", "the interrupted pull must be queued again"
        resumed = wait_run_finished(master.url, master.admin_token, history[0]["id"], timeout=30)
    assert resumed["state"] == "success"


@pytest.mark.parametrize("count", [3])
def test_runs_of_several_projects_each_sync_their_own_tree(master, api, upstream, count):
    for index in range(count):
        create_project(api, f"copy{index}", upstream.url)
    started = [api.post(f"/api/v1/projects/copy{index}/syncs").json() for index in range(count)]
    for run in started:
        assert wait_run_finished(master.url, master.admin_token, run["id"])["state"] == "success"
    for index in range(count):
        assert_trees_equal(upstream.tree, master.data_dir / f"copy{index}")
