"""The example scripts, run as a user would run them, against a live master and upstream."""

import os
import re
import subprocess
import sys

import pytest
import requests

from tests.support.processes import REPO_ROOT, free_port

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
