"""``python -m mirrorctl`` as a user runs it, against a live master, upstream rsync daemon and slave."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.integration.test_master_sync import slow_upstream
from tests.support.processes import DEFAULT_JOIN_TOKEN, REPO_ROOT, start_slave, wait_for

COMMAND_TIMEOUT = 60


@pytest.fixture
def mirrorctl(tmp_path):
    """``mirrorctl(*args, master=, token=, url=, input=, config=, extra_env=)`` -> CompletedProcess.

    No config file is read unless ``config`` names one.
    """
    home = tmp_path / "ctl-home"
    home.mkdir()

    def run(*args, master=None, url=None, token=None, input=None, config=None, extra_env=None):
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("MIRRORSYNC_") and key != "XDG_CONFIG_HOME"}
        env.update(HOME=str(home), PYTHONUNBUFFERED="1")
        if master is not None:
            env.update(MIRRORSYNC_URL=master.url, MIRRORSYNC_TOKEN=master.admin_token)
        if url is not None:
            env["MIRRORSYNC_URL"] = url
        if token is not None:
            env["MIRRORSYNC_TOKEN"] = token
        if config is not None:
            env["MIRRORSYNC_CONFIG"] = str(config)
        env.update(extra_env or {})
        return subprocess.run([sys.executable, "-m", "mirrorctl", *args], env=env, cwd=REPO_ROOT,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)

    return run


def ok(result):
    """Assert the command succeeded, showing its output if not, and return its stdout."""
    assert result.returncode == 0, f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result.stdout


def failed(result):
    """Assert the command failed with one line on stderr and no traceback; return that line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def row(table, name):
    """The line of a table whose first column is ``name``, or None."""
    return next((line for line in table.splitlines() if line.split()[:1] == [name]), None)


@pytest.mark.slow
def test_a_project_is_added_listed_shown_edited_disabled_enabled_and_removed(master, upstream, mirrorctl, api):
    out = ok(mirrorctl("projects", "add", "alpha", "--upstream", upstream.url, "--option", "--bwlimit=1000",
                       "--option=--contimeout=30", "--exclude", "*.iso", master=master))
    assert out.startswith("created project alpha")
    assert api.get("/api/v1/projects/alpha").json()["rsync_options"] == ["--bwlimit=1000", "--contimeout=30"]

    listing = ok(mirrorctl("projects", "list", master=master))
    assert row(listing, "alpha").split()[:3] == ["alpha", "none", "manual"]
    assert upstream.url in row(listing, "alpha")

    shown = ok(mirrorctl("projects", "show", "alpha", master=master))
    # The value column is as wide as the longest field name a master sends.
    assert re.search(r"^  rsync options: +--bwlimit=1000 --contimeout=30$", shown, re.MULTILINE), shown
    assert re.search(r"^  schedule: +manual only$", shown, re.MULTILINE), shown

    ok(mirrorctl("projects", "edit", "alpha", "--schedule", "30 4 * * 1", "--timeout", "600", master=master))
    shown = ok(mirrorctl("projects", "show", "alpha", master=master))
    assert re.search(r"^  schedule: +30 4 \* \* 1$", shown, re.MULTILINE), shown
    assert re.search(r"^  timeout: +10m 00s \(600s\)$", shown, re.MULTILINE), shown
    assert "30 4 * * 1" in row(ok(mirrorctl("projects", "list", master=master)), "alpha")

    ok(mirrorctl("projects", "disable", "alpha", master=master))
    assert row(ok(mirrorctl("projects", "list", master=master)), "alpha").split()[1] == "disabled"
    assert "is disabled" in failed(mirrorctl("projects", "sync", "alpha", master=master))
    ok(mirrorctl("projects", "enable", "alpha", master=master))
    assert api.get("/api/v1/projects/alpha").json()["enabled"] is True

    ok(mirrorctl("projects", "rm", "alpha", master=master))
    assert "no projects yet" in ok(mirrorctl("projects", "list", master=master))
    assert failed(mirrorctl("projects", "show", "alpha", master=master)) == "Error: there is no project 'alpha'"


def test_sync_follow_waits_for_success_then_runs_and_status_show_it(master, upstream, mirrorctl):
    ok(mirrorctl("projects", "add", "beta", "--upstream", upstream.url, master=master))

    out = ok(mirrorctl("projects", "sync", "beta", "--follow", master=master))
    # The first state seen depends on how fast the executor claims the run.
    run_id = re.search(r"^run (\d+) of beta: (queued|syncing|distributing|success)$", out, re.MULTILINE).group(1)
    assert re.search(r"^\[\s*[\d.]+s\] success$", out, re.MULTILINE), out  # a pull this small may skip "syncing"
    assert "  | Number of files:" in out  # the rsync log, line by line
    assert re.search(rf"^run {run_id} success in ", out, re.MULTILINE), out

    runs = ok(mirrorctl("runs", "list", "beta", "--limit", "5", master=master))
    assert row(runs, run_id).split()[:3] == [run_id, "success", "manual"]
    shown = ok(mirrorctl("runs", "show", run_id, master=master))
    assert re.search(r"^  state:\s+success$", shown, re.MULTILINE) and "no slaves took part in this run" in shown
    log = ok(mirrorctl("runs", "log", run_id, master=master))
    assert "Number of files:" in log and log.endswith("\n")
    assert ok(mirrorctl("runs", "log", run_id, "--follow", master=master)) == log

    status = ok(mirrorctl("status", url=master.url))  # the public feed needs no token
    assert row(status, "beta").split()[1] == "success"


def test_json_output_is_the_api_document(master, upstream, mirrorctl, api):
    ok(mirrorctl("projects", "add", "gamma", "--upstream", upstream.url, master=master))

    listed = json.loads(ok(mirrorctl("--json", "projects", "list", master=master)))

    assert listed == api.get("/api/v1/projects").json()
    assert [project["name"] for project in listed] == ["gamma"]


def test_the_upstream_password_goes_through_stdin(master, upstream, mirrorctl, api):
    ok(mirrorctl("projects", "add", "delta", "--upstream", upstream.url, "--password-stdin",
                 master=master, input="s3cret\n"))

    assert api.get("/api/v1/projects/delta").json()["has_password"] is True


def test_a_bad_upstream_fails_naming_the_field(master, mirrorctl, api):
    # Each field is checked first; whether the upstream suits the method comes once they are valid.
    line = failed(mirrorctl("projects", "add", "bad", "--upstream", "http://example.org/x", "--option",
                            "--rsh=ssh", master=master))
    assert line.startswith("Error: invalid rsync_options[0]: --rsh is refused")

    line = failed(mirrorctl("projects", "add", "bad", "--upstream", "http://example.org/x", master=master))
    assert line.startswith("Error: invalid upstream: ") and "rsync://" in line
    assert api.get("/api/v1/projects").json() == []


def test_a_wrong_token_fails_with_one_clear_line(master, mirrorctl):
    result = mirrorctl("projects", "list", url=master.url, token="not-the-token")

    assert result.returncode == 1
    assert failed(result) == ("Error: the token from the environment variable MIRRORSYNC_TOKEN was refused: "
                              "the token is not valid; set it to a valid token")


def test_a_refused_token_from_the_config_file_names_the_file_and_json_errors_are_json(master, mirrorctl,
                                                                                      tmp_path):
    config = tmp_path / "ctl.toml"
    config.write_text('token = "not-the-token"\n')
    config.chmod(0o600)

    result = mirrorctl("projects", "list", "--json", url=master.url, config=config)

    document = json.loads(failed(result))
    assert document["status"] == 401 and document["error"] == "unauthorized"
    assert document["message"].startswith(f"the token from {config} was refused: ")


def test_json_goes_after_the_subcommand_and_version_prints(master, upstream, mirrorctl, api):
    ok(mirrorctl("projects", "add", "epsilon", "--upstream", upstream.url, master=master))

    assert json.loads(ok(mirrorctl("projects", "list", "--json", master=master))) == \
        api.get("/api/v1/projects").json()
    assert re.fullmatch(r"mirrorctl \S+\n", ok(mirrorctl("--version")))


def test_an_option_with_a_space_gets_the_masters_hint(master, upstream, mirrorctl, api):
    line = failed(mirrorctl("projects", "add", "zeta", "--upstream", upstream.url, "--option", "--bwlimit 1000",
                            master=master))

    assert line == ("Error: invalid rsync_options[0]: '--bwlimit 1000' has a space where '=' belongs; "
                    "did you mean --bwlimit=1000?")
    assert api.get("/api/v1/projects").json() == []


def test_bash_completion_completes_subcommands(mirrorctl):
    script = ok(mirrorctl("completion", "bash"))
    assert "_MIRRORCTL_COMPLETE=bash_complete" in script

    answer = ok(mirrorctl(extra_env={"_MIRRORCTL_COMPLETE": "bash_complete", "COMP_WORDS": "mirrorctl pro",
                               "COMP_CWORD": "1"}))
    assert answer.split() == ["plain,projects"]


def test_a_stopped_master_cannot_be_reached(master, mirrorctl):
    master.stop()

    line = failed(mirrorctl("projects", "list", master=master))

    assert line == f"Error: cannot reach the master at {master.url}: connection refused"


@pytest.fixture
def master_with_slave(master_factory, tmp_path):
    master = master_factory(tmp_path / "master", extra_env={"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN})
    slave = start_slave(tmp_path / "m1", "m1", master.url, log_dir=tmp_path / "logs")
    yield master, slave
    slave.stop()


@pytest.mark.slow
def test_slaves_are_listed_shown_disabled_enabled_and_removed(master_with_slave, upstream, mirrorctl):
    master, slave = master_with_slave

    def m1_state():
        slaves = json.loads(ok(mirrorctl("--json", "slaves", "list", master=master)))
        return next((entry["state"] for entry in slaves if entry["name"] == "m1"), None)

    wait_for(lambda: m1_state() == "online", 20, interval=0.2, message="slave m1 online")
    assert row(ok(mirrorctl("slaves", "list", master=master)), "m1").split()[:2] == ["m1", "online"]
    shown = ok(mirrorctl("slaves", "show", "m1", master=master))
    assert shown.startswith("slave m1\n") and re.search(rf"^  url: +{re.escape(slave.url)}$", shown, re.MULTILINE)

    ok(mirrorctl("projects", "add", "eps", "--upstream", upstream.url, master=master))
    out = ok(mirrorctl("projects", "sync", "eps", "--follow", master=master))
    assert re.search(r"^\[\s*[\d.]+s\] slave m1: success$", out, re.MULTILINE), out
    assert "slaves 1/1 ok" in out
    status = ok(mirrorctl("status", master=master))
    assert row(status, "eps") and "1/1 fresh" in row(status, "eps")

    ok(mirrorctl("slaves", "disable", "m1", master=master))
    assert m1_state() == "disabled"
    ok(mirrorctl("slaves", "enable", "m1", master=master))
    assert m1_state() != "disabled"

    slave.stop()  # a running slave the master forgot enrolls again with its join token
    ok(mirrorctl("slaves", "rm", "m1", master=master))
    assert row(ok(mirrorctl("slaves", "list", master=master)), "m1") is None
    assert failed(mirrorctl("slaves", "show", "m1", master=master)) == "Error: there is no slave 'm1'"


@pytest.mark.slow
def test_sync_force_starts_past_the_concurrency_cap(master_factory, upstream, mirrorctl, tmp_path):
    from tests.integration.conftest import ApiClient
    master = master_factory(tmp_path / "capped", extra_env={"MIRRORSYNC_MAX_CONCURRENT_SYNCS": "1"})
    api = ApiClient(master.url, master.admin_token)
    with slow_upstream(tmp_path) as daemon:
        ok(mirrorctl("projects", "add", "slow", "--upstream", daemon.url("slow"), "--option=--bwlimit=200",
                     master=master))
        for name in ("waiting", "urgent"):
            ok(mirrorctl("projects", "add", name, "--upstream", upstream.url, master=master))
        slow = json.loads(ok(mirrorctl("projects", "sync", "slow", "--json", master=master)))
        wait_for(lambda: api.get(f"/api/v1/runs/{slow['id']}").json()["state"] == "syncing", 20,
                 message="the slow pull holds the only slot")
        waiting = json.loads(ok(mirrorctl("projects", "sync", "waiting", "--json", master=master)))

        forced = json.loads(ok(mirrorctl("projects", "sync", "urgent", "--force", "--follow", "--json",
                                         master=master)))

        assert forced["state"] == "success" and forced["force"] is True
        assert api.get(f"/api/v1/runs/{slow['id']}").json()["state"] == "syncing"
        assert api.get(f"/api/v1/runs/{waiting['id']}").json()["state"] == "queued", \
            "a sync without --force must still wait for a slot"
