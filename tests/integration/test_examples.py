"""The example scripts, run as a user would run them, against a live master and upstream."""

import os
import re
import subprocess
import sys

import pytest
import requests

from tests.integration.conftest import ApiClient
from tests.support.processes import (
    DEFAULT_JOIN_TOKEN, REPO_ROOT, free_port, start_slave, wait_for, wait_run_finished,
)

EXAMPLES = REPO_ROOT / "examples"
SCRIPT_TIMEOUT = 60


def run_example(script, *args, master=None, url=None, token=None, timeout=SCRIPT_TIMEOUT):
    """Run ``examples/<script>`` with MIRRORSYNC_URL/TOKEN pointing at ``master``; returns the result."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MIRRORSYNC_")}
    env["PYTHONUNBUFFERED"] = "1"
    if master is not None:
        env["MIRRORSYNC_URL"] = master.url
        env["MIRRORSYNC_TOKEN"] = master.admin_token
    if url is not None:
        env["MIRRORSYNC_URL"] = url
    if token is not None:
        env["MIRRORSYNC_TOKEN"] = token
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def ok(result):
    """Assert the script succeeded, showing its output if not, and return its stdout."""
    assert result.returncode == 0, (
        f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result.stdout


def add_project(master, name, upstream_url, *args):
    return ok(run_example("add_project.py", name, upstream_url, *args, master=master))


def test_added_project_shows_in_list_and_api(master, upstream, api):
    out = add_project(master, "alpha", upstream.url, "--schedule", "0 */6 * * *",
                      "--option=--bwlimit=1000", "--exclude", "*.iso", "--timeout", "600")
    assert "created project alpha" in out

    listing = ok(run_example("list_projects.py", master=master))
    assert re.search(r"^alpha\s", listing, re.MULTILINE), listing
    assert upstream.url in listing

    project = api.get("/api/v1/projects/alpha").json()
    assert project["upstream"] == upstream.url
    assert project["schedule"] == "0 */6 * * *"
    assert project["rsync_options"] == ["--bwlimit=1000"]
    assert project["excludes"] == ["*.iso"]
    assert project["timeout"] == 600


def test_list_without_projects_says_so(master):
    assert "no projects yet" in ok(run_example("list_projects.py", master=master))


def test_update_changes_are_visible_through_the_api(master, upstream, api):
    add_project(master, "beta", upstream.url, "--schedule", "0 1 * * *")

    out = ok(run_example("update_project.py", "beta", "--schedule", "30 4 * * 1", "--disable",
                         master=master))
    assert "updated project beta" in out
    project = api.get("/api/v1/projects/beta").json()
    assert project["schedule"] == "30 4 * * 1"
    assert project["enabled"] is False

    ok(run_example("update_project.py", "beta", "--manual", "--enable", master=master))
    project = api.get("/api/v1/projects/beta").json()
    assert project["schedule"] is None
    assert project["enabled"] is True


def test_update_with_nothing_to_change_is_refused_before_calling_the_master(master):
    result = run_example("update_project.py", "beta", master=master)
    assert result.returncode == 2
    assert "nothing to change" in result.stderr


def test_sync_wait_mirrors_the_tree_and_show_run_reports_it(master, upstream, api):
    add_project(master, "gamma", upstream.url)

    out = ok(run_example("sync_project.py", "gamma", "--wait", "--timeout", "60", master=master))
    assert "state:     success" in out

    mirrored = master.data_dir / "gamma"
    assert (mirrored / "small.txt").read_bytes() == (upstream.tree / "small.txt").read_bytes()
    assert (mirrored / "big.bin").stat().st_size == (upstream.tree / "big.bin").stat().st_size
    assert (mirrored / "dir with space" / "inner -file").is_file()

    runs = api.get("/api/v1/projects/gamma/runs").json()
    run_id = str(runs[0]["id"])
    shown = ok(run_example("show_run.py", run_id, "--log", master=master))
    assert f"run {run_id} of project gamma" in shown
    assert "state:     success" in shown
    assert "--- log ---" in shown


def test_sync_of_unknown_project_fails_with_the_api_message(master):
    result = run_example("sync_project.py", "no-such-project", master=master)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "404" in result.stderr


def test_removed_project_is_gone(master, upstream, api):
    add_project(master, "delta", upstream.url)

    assert "removed project delta" in ok(run_example("remove_project.py", "delta", master=master))
    assert api.get("/api/v1/projects/delta").status_code == 404

    again = run_example("remove_project.py", "delta", master=master)
    assert again.returncode == 1
    assert "404" in again.stderr


def test_bad_upstream_fails_and_names_the_field(master):
    result = run_example("add_project.py", "epsilon", "http://example.invalid/pub", master=master)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "upstream" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_token_is_explained(master):
    result = run_example("list_projects.py", url=master.url, token="")
    assert result.returncode == 1
    assert "MIRRORSYNC_TOKEN" in result.stderr


def test_unreachable_master_is_one_clear_line():
    result = run_example("list_projects.py", url=f"http://127.0.0.1:{free_port()}", token="x")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the mirror-sync master")
    assert len(result.stderr.strip().splitlines()) == 1


def failed(result, code=1):
    """Assert the script failed with ``code`` and one clean error message; return its stderr."""
    assert result.returncode == code, (
        f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr
    return result.stderr


def table_rows(out):
    """The rows of a fixed-width table under its header, each split into words."""
    return [line.split() for line in out.strip().splitlines()[1:]]


def test_disable_and_enable_project_are_visible_through_the_api(master, upstream, api):
    add_project(master, "zeta", upstream.url)

    out = ok(run_example("disable_project.py", "zeta", master=master))
    assert out.startswith("disabled project zeta")
    project = api.get("/api/v1/projects/zeta").json()
    assert (project["enabled"], project["status"]) == (False, "disabled")
    refused = failed(run_example("sync_project.py", "zeta", master=master))
    assert "409" in refused

    assert ok(run_example("enable_project.py", "zeta", master=master)).startswith("enabled project zeta")
    assert api.get("/api/v1/projects/zeta").json()["enabled"] is True
    ok(run_example("sync_project.py", "zeta", master=master))


def test_enable_of_unknown_project_fails_with_the_api_message(master):
    stderr = failed(run_example("enable_project.py", "no-such-project", master=master))
    assert stderr.startswith("error: ") and "404" in stderr


def test_list_runs_shows_history_newest_first_and_honours_limit(master, upstream, api):
    add_project(master, "eta", upstream.url)
    assert "no runs of project eta yet" in ok(run_example("list_runs.py", "eta", master=master))
    ok(run_example("sync_project.py", "eta", "--wait", master=master))
    ok(run_example("sync_project.py", "eta", "--wait", master=master))
    ids = [run["id"] for run in api.get("/api/v1/projects/eta/runs").json()]

    rows = table_rows(ok(run_example("list_runs.py", "eta", master=master)))
    assert [int(row[0]) for row in rows] == ids and len(ids) == 2
    assert all(row[1:4] == ["manual", "success", "1"] for row in rows), rows

    rows = table_rows(ok(run_example("list_runs.py", "eta", "--limit", "1", master=master)))
    assert [int(row[0]) for row in rows] == ids[:1]


def test_list_runs_links_a_retry_to_the_run_it_retries(master_factory, tmp_path):
    master = master_factory(tmp_path / "data", extra_env={
        "MIRRORSYNC_RETRY_BASE_DELAY": "0.5", "MIRRORSYNC_RETRY_MAX_DELAY": "1"})
    api = ApiClient(master.url, master.admin_token)
    # Nothing listens there: connection refused is transient, so the run is tried again.
    add_project(master, "theta", f"rsync://127.0.0.1:{free_port()}/mirror/")
    assert api.patch("/api/v1/projects/theta", json={"retries": 1}).status_code == 200
    first = api.post("/api/v1/projects/theta/syncs").json()
    first = wait_run_finished(master.url, master.admin_token, first["id"])
    retry_id = wait_for(lambda: api.get(f"/api/v1/runs/{first['id']}").json()["retried_by"], 20,
                        message="the retry to be queued")
    wait_run_finished(master.url, master.admin_token, retry_id)

    out = ok(run_example("list_runs.py", "theta", master=master))
    lines = out.strip().splitlines()
    assert re.match(rf"^{retry_id}\s+retry\s+failed\s+2\s.*\bretry of {first['id']}\b", lines[1]), out
    assert re.match(rf"^{first['id']}\s+manual\s+failed\s+1\s.*\bretried by {retry_id}\b", lines[2]), out
    api.close()


def test_list_runs_with_a_bad_limit_names_the_field(master, upstream):
    add_project(master, "iota", upstream.url)
    stderr = failed(run_example("list_runs.py", "iota", "--limit", "0", master=master))
    assert stderr.startswith("error: ") and "limit" in stderr


def test_follow_log_prints_the_whole_log_of_a_running_sync_and_its_end(master, upstream, api):
    add_project(master, "kappa", upstream.url)
    run_id = api.post("/api/v1/projects/kappa/syncs").json()["id"]

    out = ok(run_example("follow_log.py", str(run_id), master=master))

    assert out.endswith(f"--- run {run_id} of project kappa ended: success\n"), out
    log = api.get(f"/api/v1/runs/{run_id}/log").text
    assert "Number of files" in log
    assert out[:-len(f"--- run {run_id} of project kappa ended: success\n")] == log.rstrip("\n") + "\n"


def test_follow_log_of_an_unknown_run_fails_with_the_api_message(master):
    stderr = failed(run_example("follow_log.py", "999999", master=master))
    assert stderr.startswith("error: ") and "404" in stderr


@pytest.fixture
def master_with_slave(master_factory, tmp_path):
    """A master that enrolls slaves, and slave ``m1`` online with it."""
    master = master_factory(tmp_path / "master", extra_env={"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN})
    slave = start_slave(tmp_path / "m1", "m1", master.url, log_dir=tmp_path / "logs")
    api = ApiClient(master.url, master.admin_token)
    wait_for(lambda: [entry["state"] for entry in api.get("/api/v1/slaves").json()] == ["online"], 20,
             interval=0.2, message="slave m1 online")
    yield master, slave, api
    api.close()
    slave.stop()


def test_slave_scripts_list_disable_enable_and_remove_a_slave(master_with_slave):
    master, slave, api = master_with_slave

    rows = table_rows(ok(run_example("list_slaves.py", master=master)))
    assert [row[:3] for row in rows] == [["m1", "online", "yes"]]
    assert slave.url in rows[0]

    assert ok(run_example("disable_slave.py", "m1", master=master)).startswith("disabled slave m1")
    shown = api.get("/api/v1/slaves/m1").json()
    assert (shown["enabled"], shown["state"]) == (False, "disabled")
    assert table_rows(ok(run_example("list_slaves.py", master=master)))[0][:3] == ["m1", "disabled", "no"]

    assert ok(run_example("enable_slave.py", "m1", master=master)).startswith("enabled slave m1")
    assert api.get("/api/v1/slaves/m1").json()["enabled"] is True

    slave.stop()  # a running slave the master forgot enrolls again with its join token
    assert ok(run_example("remove_slave.py", "m1", master=master)).startswith("removed slave m1")
    assert api.get("/api/v1/slaves/m1").status_code == 404
    stderr = failed(run_example("remove_slave.py", "m1", master=master))
    assert stderr.startswith("error: ") and "404" in stderr
    stderr = failed(run_example("disable_slave.py", "m1", master=master))
    assert "404" in stderr


def test_list_slaves_without_slaves_says_so(master):
    assert "no slaves yet" in ok(run_example("list_slaves.py", master=master))


def test_status_without_a_token_shows_each_slave_fresh_at_the_last_run(master_with_slave, upstream):
    master, _, api = master_with_slave
    add_project(master, "lambda", upstream.url)
    ok(run_example("sync_project.py", "lambda", "--wait", master=master))
    run_id = api.get("/api/v1/projects/lambda/runs").json()[0]["id"]

    out = ok(run_example("status.py", url=master.url, token=""))

    assert out.startswith("lambda: success\n"), out
    assert re.search(rf"^  slave m1: fresh at run {run_id} since \S+$", out, re.MULTILINE), out


def test_status_of_a_project_without_slaves_says_so(master, upstream):
    add_project(master, "mu", upstream.url)
    out = ok(run_example("status.py", url=master.url, token=""))
    assert out.startswith("mu: none\n"), out
    assert "  slaves:       none" in out


def test_a_created_token_works_with_its_role_until_it_is_revoked(master):
    out = ok(run_example("create_token.py", "grafana", "--expires-in", "3600", master=master))
    created = re.match(r"^created readonly token (\d+) for grafana \(expires \S+\)\ntoken: (\S+)\n", out)
    assert created, out
    token_id, token = created.groups()
    reader = ApiClient(master.url, token)
    assert reader.get("/api/v1/projects").status_code == 200
    assert reader.post("/api/v1/projects", json={"name": "nu", "upstream": "rsync://h/m/"}).status_code == 403

    listed = {row[0]: row for row in table_rows(ok(run_example("list_tokens.py", master=master)))}
    assert listed[token_id][1:3] == ["grafana", "readonly"]
    assert token not in ok(run_example("list_tokens.py", "--json", master=master))

    out = ok(run_example("revoke_token.py", token_id, master=master))
    assert out.startswith(f"revoked token {token_id} (grafana, readonly)")
    assert reader.get("/api/v1/projects").status_code == 401
    assert listed[token_id][-1] == "-"
    relisted = {row[0]: row for row in table_rows(ok(run_example("list_tokens.py", master=master)))}
    assert relisted[token_id][-1] != "-", "a revoked token shows when it was revoked"
    reader.close()


def test_an_admin_token_can_create_tokens_itself(master):
    out = ok(run_example("create_token.py", "alice", "--role", "admin", master=master))
    assert "created admin token" in out and "never expires" in out
    token = re.search(r"^token: (\S+)$", out, re.MULTILINE).group(1)
    assert "created readonly token" in ok(run_example("create_token.py", "bob", token=token, url=master.url))


def test_token_scripts_fail_with_the_api_message(master):
    stderr = failed(run_example("create_token.py", "short", "--expires-in", "5", master=master))
    assert stderr.startswith("error: ") and "expires_in" in stderr
    stderr = failed(run_example("revoke_token.py", "999999", master=master))
    assert stderr.startswith("error: ") and "404" in stderr
    stderr = failed(run_example("create_token.py", "x", "--role", "root", master=master), code=2)
    assert "invalid choice" in stderr


def processes_mentioning(text):
    """Pids of live processes whose command line or environment contains ``text`` (Linux /proc)."""
    needle = text.encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                argv = cmdline.read()
            with open(f"/proc/{entry.name}/environ", "rb") as environ:
                env = environ.read()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if needle in argv or needle in env:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_demo_once_shows_an_upstream_change_reaching_both_slaves_and_cleans_up(tmp_path):
    demo_dir = tmp_path / "demo"
    out = ok(run_example("demo.py", "--once", "--dir", str(demo_dir), timeout=90))

    slaves = ("mirror1", "mirror2")
    for name in slaves:
        assert re.search(rf"^  {name}: online, ", out, re.MULTILINE), out
    runs = re.findall(r"^run (\d+) of project demo .*\n  state:     (\w+)$", out, re.MULTILINE)
    assert [state for _, state in runs] == ["success", "success"], out
    second_run = runs[1][0]
    for name in slaves:
        # One row per run in the per-slave results tables.
        assert len(re.findall(rf"^  {name}\s+success\s+\d\d:\d\d:\d\d\s", out, re.MULTILINE)) == 2, out
        assert f"    => the change reached {name}\n" in out
        assert f"  {name}: fresh at run {second_run} " in out

    news = re.search(r"^changed the upstream: added (NEWS-\S+\.txt), deleted (\S+), modified", out, re.MULTILINE)
    for name in slaves:
        tree = demo_dir / name / "public" / "demo"
        assert f"  {name:<8} {tree}\n" in out
        assert (tree / news.group(1)).is_file()
        assert not (tree / news.group(2)).exists()
    assert f"  master   {demo_dir / 'data' / 'demo'}\n" in out

    urls = re.findall(r"(?:master|slave \w+) is up at (http://\S+)", out)
    assert len(urls) == 3, out
    for url in urls:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/healthz", timeout=2)
    assert processes_mentioning(str(demo_dir)) == [], "the demo left processes behind"
