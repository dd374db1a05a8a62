"""mirrorctl through click's CliRunner, with a fake transport in place of the master's HTTP API."""

import json
import re
from datetime import datetime, timezone
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from mirrorctl.cli import cli
from mirrorctl.context import Ctl
from mirrorctl.transport import ConnectionFailed, Reply
from mirrorctl.units import human_age, human_duration, human_size

NOW = datetime(2026, 5, 9, 12, 0, 0, tzinfo=timezone.utc)
URL = "http://master.test:5000"
TOKEN = "env-token"


class FakeTransport:
    """Canned answers per (method, path), recorded requests; a list of answers is served in order.

    An answer is a Reply, a callable taking the request's params, or an exception to raise.
    """

    def __init__(self):
        self.answers = {}
        self.requests = []

    def on(self, method, path, *answers):
        self.answers[(method, "/api/v1" + path)] = list(answers)
        return self

    def on_json(self, method, path, document, status=200):
        return self.on(method, path, json_reply(document, status))

    def send(self, method, url, headers, params=None, json=None):
        parts = urlsplit(url)
        self.requests.append({"method": method, "url": url, "path": parts.path, "headers": headers,
                              "params": params, "json": json})
        answers = self.answers.get((method, parts.path))
        if not answers:
            return json_reply({"error": "not_found", "message": "Not Found", "fields": {}}, 404)
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer(params) if callable(answer) else answer

    def last(self, method=None):
        return [request for request in self.requests if method in (None, request["method"])][-1]


def json_reply(document, status=200, headers=None):
    return Reply(status, json.dumps(document).encode(), {"content-type": "application/json", **(headers or {})})


def api_error(status, code, message, fields=None):
    return json_reply({"error": code, "message": message, "fields": fields or {}}, status)


@pytest.fixture
def fake():
    return FakeTransport()


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    (path / ".config").mkdir(parents=True)
    return path


@pytest.fixture
def mirrorctl(fake, home):
    """``mirrorctl(*args, env=..., input=...)`` -> click Result, with MIRRORSYNC_URL/TOKEN set by default."""

    def run(*args, env=None, input=None):
        environment = {"HOME": str(home), "XDG_CONFIG_HOME": None, "MIRRORSYNC_CONFIG": None,
                       "MIRRORSYNC_URL": URL, "MIRRORSYNC_TOKEN": TOKEN, **(env or {})}
        ctl = Ctl(transport=fake, now=lambda: NOW, sleep=lambda seconds: None)
        return CliRunner().invoke(cli, list(args), obj=ctl, env=environment, input=input,
                                  catch_exceptions=False)

    return run


def one_error_line(result):
    """The single line a failure prints on stderr (no traceback, nothing else)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


PROJECT = {
    "name": "debian", "upstream": "rsync://ftp.example.org/debian/", "schedule": "0 */6 * * *",
    "enabled": True, "status": "success", "last_success": "2026-05-09T11:57:00+00:00",
    "last_started": "2026-05-09T11:55:00+00:00", "last_ended": "2026-05-09T11:57:00+00:00",
    "next_run": "2026-05-09T14:00:00+00:00", "size": 1288490189, "timeout": 21600, "retries": 3,
    "splay": 0, "publish": "delay", "rsync_options": ["--bwlimit=1000"], "excludes": [],
    "has_password": False, "created_at": "2026-05-01T00:00:00+00:00", "updated_at": "2026-05-01T00:00:00+00:00",
}


def make_run(state, run_id=7, slaves=(), **fields):
    return {"id": run_id, "project": "debian", "trigger": "manual", "state": state, "coalesced": 0,
            "attempt": 1, "retry_of": None, "not_before": None, "created_at": "2026-05-09T11:59:00+00:00",
            "started_at": None, "finished_at": None, "duration": None, "exit_code": None, "error": None,
            "warning": None, "stats": None, "progress": None, "slaves": list(slaves), **fields}


def slave_entry(name, state, error=None):
    return {"slave": name, "state": state, "attempts": 1, "dispatched_at": None,
            "started_at": "2026-05-09T11:59:10+00:00", "finished_at": "2026-05-09T11:59:14+00:00",
            "exit_code": 0 if state == "success" else None, "error": error, "stats": {"files_transferred": 12}}


# Configuration


def write_config(path, text, mode=0o600):
    path.write_text(text)
    path.chmod(mode)
    return path


def test_url_and_token_come_from_the_config_file_when_the_environment_is_silent(mirrorctl, fake, home):
    write_config(home / ".config" / "mirrorctl.toml", 'url = "http://from-file:5000"\ntoken = "file-token"\n')
    fake.on_json("GET", "/projects", [])

    result = mirrorctl("projects", "list", env={"MIRRORSYNC_URL": None, "MIRRORSYNC_TOKEN": None})

    assert result.exit_code == 0, result.output
    assert fake.last()["url"] == "http://from-file:5000/api/v1/projects"
    assert fake.last()["headers"]["Authorization"] == "Bearer file-token"
    assert result.stderr == ""


def test_environment_beats_the_file_and_options_beat_both(mirrorctl, fake, tmp_path):
    config = write_config(tmp_path / "ctl.toml", 'url = "http://from-file:5000"\ntoken = "file-token"\n')
    fake.on_json("GET", "/projects", [])
    env = {"MIRRORSYNC_CONFIG": str(config), "MIRRORSYNC_URL": "http://from-env:5000", "MIRRORSYNC_TOKEN": None}

    mirrorctl("projects", "list", env=env)
    assert fake.last()["url"].startswith("http://from-env:5000/")
    assert fake.last()["headers"]["Authorization"] == "Bearer file-token"

    mirrorctl("--url", "http://from-option:5000", "--token", "option-token", "projects", "list", env=env)
    assert fake.last()["url"].startswith("http://from-option:5000/")
    assert fake.last()["headers"]["Authorization"] == "Bearer option-token"


def test_an_empty_environment_variable_does_not_hide_the_file(mirrorctl, fake, home):
    write_config(home / ".config" / "mirrorctl.toml", 'token = "file-token"\n')
    fake.on_json("GET", "/projects", [])

    mirrorctl("projects", "list", env={"MIRRORSYNC_TOKEN": ""})

    assert fake.last()["headers"]["Authorization"] == "Bearer file-token"


def test_a_config_file_other_users_can_read_gets_a_warning(mirrorctl, fake, home):
    config = write_config(home / ".config" / "mirrorctl.toml", 'token = "file-token"\n', mode=0o644)
    fake.on_json("GET", "/projects", [])

    result = mirrorctl("projects", "list")

    assert result.exit_code == 0
    assert f"Warning: {config} can be read by other users (mode 0644)" in result.stderr
    assert f"chmod 600 {config}" in result.stderr


def test_a_config_file_named_in_the_environment_must_exist(mirrorctl, tmp_path):
    result = mirrorctl("projects", "list", env={"MIRRORSYNC_CONFIG": str(tmp_path / "missing.toml")})

    assert result.exit_code == 1
    assert one_error_line(result) == f"Error: MIRRORSYNC_CONFIG names {tmp_path / 'missing.toml'}, which does not exist"


@pytest.mark.parametrize("text, expected", [
    ('tokn = "x"\n', "unknown key 'tokn'"),
    ("token = 5\n", "'token' must be a string"),
    ("token = \n", "is not valid TOML"),
])
def test_a_broken_config_file_is_named_in_one_line(mirrorctl, home, text, expected):
    write_config(home / ".config" / "mirrorctl.toml", text)

    result = mirrorctl("projects", "list")

    assert result.exit_code == 1
    line = one_error_line(result)
    assert str(home / ".config" / "mirrorctl.toml") in line and expected in line


def test_a_url_that_is_not_http_is_refused_naming_where_it_came_from(mirrorctl):
    result = mirrorctl("status", env={"MIRRORSYNC_URL": "master.example.org:5000"})

    assert result.exit_code == 1
    assert one_error_line(result) == ("Error: MIRRORSYNC_URL is not an http:// or https:// URL: "
                                      "'master.example.org:5000'")


def test_help_needs_no_configuration(mirrorctl, tmp_path):
    result = mirrorctl("projects", "--help", env={"MIRRORSYNC_CONFIG": str(tmp_path / "missing.toml")})

    assert result.exit_code == 0
    assert "sync" in result.stdout


# Errors


def test_an_unreachable_master_is_one_line_naming_the_url(mirrorctl, fake):
    fake.on("GET", "/projects", ConnectionFailed("connection refused"))

    result = mirrorctl("projects", "list")

    assert result.exit_code == 1
    assert one_error_line(result) == f"Error: cannot reach the master at {URL}: connection refused"


def test_a_refused_token_from_the_environment_names_the_variable(mirrorctl, fake):
    fake.on("GET", "/projects", api_error(401, "unauthorized", "The token is not valid."))

    result = mirrorctl("projects", "list")

    assert result.exit_code == 1
    assert one_error_line(result) == ("Error: the token from the environment variable MIRRORSYNC_TOKEN was "
                                      "refused: the token is not valid; set it to a valid token")


def test_a_refused_token_from_an_option_names_the_option(mirrorctl, fake):
    fake.on("GET", "/projects", api_error(401, "unauthorized", "The token has expired."))

    result = mirrorctl("--token", "old", "projects", "list")

    assert one_error_line(result) == "Error: the token given with --token was refused: the token has expired"


def test_a_refused_token_from_the_config_file_names_the_file(mirrorctl, fake, home):
    config = write_config(home / ".config" / "mirrorctl.toml", 'token = "file-token"\n')
    fake.on("GET", "/projects", api_error(401, "unauthorized", "The token is not valid."))

    result = mirrorctl("projects", "list", env={"MIRRORSYNC_TOKEN": None})

    line = one_error_line(result)
    assert line.startswith(f"Error: the token from {config} was refused: the token is not valid; ")
    assert "MIRRORSYNC_TOKEN was" not in line


def test_no_token_at_all_says_where_one_can_be_set(mirrorctl, fake, home):
    fake.on("GET", "/projects", api_error(401, "unauthorized", "Send 'Authorization: Bearer <token>'."))

    result = mirrorctl("projects", "list", env={"MIRRORSYNC_TOKEN": None})

    assert "Authorization" not in fake.last()["headers"]
    assert one_error_line(result) == ("Error: the master wants a token and none is set: pass --token, set "
                                      f"MIRRORSYNC_TOKEN or token = \"...\" in {home / '.config' / 'mirrorctl.toml'}")


def test_a_read_only_token_is_told_it_is_not_allowed(mirrorctl, fake):
    fake.on("DELETE", "/projects/debian",
            api_error(403, "forbidden", "This call needs an admin token; this token is read-only."))

    result = mirrorctl("projects", "rm", "debian")

    assert result.exit_code == 1
    assert one_error_line(result) == "Error: not allowed: this call needs an admin token; this token is read-only"


def test_a_missing_project_is_one_line(mirrorctl, fake):
    fake.on("GET", "/projects/nope", api_error(404, "not_found", "There is no project 'nope'."))

    result = mirrorctl("projects", "show", "nope")

    assert result.exit_code == 1
    assert one_error_line(result) == "Error: there is no project 'nope'"


def test_validation_errors_name_each_field_and_list_item(mirrorctl, fake):
    fake.on("POST", "/projects", api_error(422, "validation_error", "Invalid request: upstream: bad.", {
        "upstream": ["Must be an rsync:// URL."],
        "rsync_options": {"1": ["--rsh is refused: it names a program to run."]},
    }))

    result = mirrorctl("projects", "add", "debian", "--upstream", "http://x/", "--option", "-4",
                       "--option", "--rsh=ssh")

    assert result.exit_code == 1
    assert one_error_line(result) == ("Error: invalid upstream: Must be an rsync:// URL; "
                                      "invalid rsync_options[1]: --rsh is refused: it names a program to run")


def test_a_conflict_shows_the_masters_sentence(mirrorctl, fake):
    fake.on("POST", "/projects/debian/syncs",
            api_error(409, "conflict", "Project 'debian' is disabled; enable it before syncing."))

    result = mirrorctl("projects", "sync", "debian")

    assert one_error_line(result) == "Error: project 'debian' is disabled; enable it before syncing"


def test_an_answer_that_is_not_the_api_is_one_line(mirrorctl, fake):
    fake.on("GET", "/projects", Reply(502, b"<html><body>Bad Gateway</body></html>"))

    result = mirrorctl("projects", "list")

    assert result.exit_code == 1
    assert one_error_line(result) == (f"Error: the master at {URL} answered HTTP 502: "
                                      "<html><body>Bad Gateway</body></html>")


def test_a_success_that_is_not_json_is_one_line(mirrorctl, fake):
    fake.on("GET", "/projects", Reply(200, b"<html>a web page</html>"))

    result = mirrorctl("projects", "list")

    assert result.exit_code == 1
    assert "not JSON; is MIRRORSYNC_URL the master's address?" in one_error_line(result)


def test_an_unforeseen_failure_is_one_line_not_a_traceback(mirrorctl, fake):
    fake.on("GET", "/projects", RuntimeError("something odd"))

    result = mirrorctl("projects", "list")

    assert result.exit_code == 1
    assert one_error_line(result) == "Error: unexpected RuntimeError: something odd"


def test_usage_errors_exit_2(mirrorctl, fake):
    assert mirrorctl("projects", "add", "debian").exit_code == 2  # --upstream missing
    assert mirrorctl("projects", "edit", "debian").exit_code == 2  # nothing to change
    result = mirrorctl("projects", "edit", "debian", "--manual", "--schedule", "0 * * * *")
    assert result.exit_code == 2
    assert "--manual and --schedule exclude each other" in result.stderr
    assert fake.requests == []


# What commands send


def test_add_sends_every_option_and_repeats_rsync_options(mirrorctl, fake):
    fake.on_json("POST", "/projects", PROJECT, 201)

    result = mirrorctl("projects", "add", "debian", "--upstream", "rsync://ftp.example.org/debian/",
                       "--schedule", "0 */6 * * *", "--option", "--bwlimit=1000", "--option=-4",
                       "--exclude", "*.iso", "--timeout", "600", "--retries", "1", "--splay", "30",
                       "--publish", "atomic", "--disabled")

    assert result.exit_code == 0, result.output
    assert fake.last()["json"] == {
        "name": "debian", "upstream": "rsync://ftp.example.org/debian/", "schedule": "0 */6 * * *",
        "rsync_options": ["--bwlimit=1000", "-4"], "excludes": ["*.iso"], "timeout": 600, "retries": 1,
        "splay": 30, "publish": "atomic", "enabled": False,
    }
    assert result.stdout.startswith("created project debian\n")


def test_the_upstream_password_is_read_from_stdin_only(mirrorctl, fake):
    fake.on_json("POST", "/projects", {**PROJECT, "has_password": True}, 201)

    result = mirrorctl("projects", "add", "debian", "--upstream", "rsync://u@ftp.example.org/debian/",
                       "--password-stdin", input="s3cret\n")

    assert result.exit_code == 0, result.output
    assert fake.last()["json"]["upstream_password"] == "s3cret"
    assert "s3cret" not in result.output
    assert mirrorctl("projects", "add", "x", "--upstream", "rsync://h/m", "--password", "s3cret").exit_code == 2


def test_an_empty_password_on_stdin_is_refused(mirrorctl, fake):
    result = mirrorctl("projects", "edit", "debian", "--password-stdin", input="")

    assert result.exit_code == 2
    assert "stdin is empty" in result.stderr
    assert fake.requests == []


def test_edit_sends_only_what_changes_and_clears_on_request(mirrorctl, fake):
    fake.on_json("PATCH", "/projects/debian", PROJECT)

    result = mirrorctl("projects", "edit", "debian", "--manual", "--no-options", "--no-password", "--timeout", "60")

    assert result.exit_code == 0, result.output
    assert fake.last()["json"] == {"schedule": None, "rsync_options": [], "upstream_password": None, "timeout": 60}


@pytest.mark.parametrize("command, enabled", [("enable", True), ("disable", False)])
def test_enable_and_disable_patch_the_project(mirrorctl, fake, command, enabled):
    fake.on_json("PATCH", "/projects/debian", {**PROJECT, "enabled": enabled})

    result = mirrorctl("projects", command, "debian")

    assert fake.last()["json"] == {"enabled": enabled}
    assert result.stdout == f"{command}d project debian\n"


@pytest.mark.parametrize("command, enabled", [("enable", True), ("disable", False)])
def test_slaves_enable_and_disable_patch_the_slave(mirrorctl, fake, command, enabled):
    fake.on_json("PATCH", "/slaves/m1", {"name": "m1", "enabled": enabled})

    result = mirrorctl("slaves", command, "m1")

    assert result.exit_code == 0
    assert fake.last()["json"] == {"enabled": enabled}


def test_names_are_quoted_into_one_path_segment(mirrorctl, fake):
    mirrorctl("projects", "show", "../slaves")

    assert fake.last()["path"] == "/api/v1/projects/..%2Fslaves"


# What people read


def test_project_list_is_an_aligned_table_with_ages_and_sizes(mirrorctl, fake):
    fake.on_json("GET", "/projects", [PROJECT, {**PROJECT, "name": "arch", "schedule": None, "status": "none",
                                                "last_success": None, "next_run": None, "size": None}])

    result = mirrorctl("projects", "list")

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "SCHEDULE", "LAST", "SUCCESS", "NEXT", "RUN", "SIZE", "UPSTREAM"]
    assert "3m ago" in lines[1] and "in 2h" in lines[1] and "1.2 GiB" in lines[1]
    assert lines[2].split()[:3] == ["arch", "none", "manual"]
    columns = [line.index("rsync://") for line in lines[1:]]
    assert columns == [lines[0].index("UPSTREAM")] * 2


def test_an_empty_project_list_says_how_to_add_one(mirrorctl, fake):
    fake.on_json("GET", "/projects", [])

    assert "mirrorctl projects add NAME --upstream" in mirrorctl("projects", "list").stdout


def test_json_prints_the_api_document_as_it_is(mirrorctl, fake):
    fake.on_json("GET", "/projects", [PROJECT])

    result = mirrorctl("--json", "projects", "list")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == [PROJECT]


def test_project_show_lists_settings_readably(mirrorctl, fake):
    fake.on_json("GET", "/projects/debian", {**PROJECT, "schedule": None, "new_field": "kept"})

    out = mirrorctl("projects", "show", "debian").stdout

    assert out.startswith("project debian\n")
    assert "schedule:      manual only" in out
    assert "size:          1.2 GiB (1288490189 bytes)" in out
    assert "last success:  2026-05-09 11:57:00 UTC (3m ago)" in out
    assert "new_field:" in out and "kept" in out


def test_run_show_has_a_table_of_slaves(mirrorctl, fake):
    run = make_run("partial", duration=42.5, stats={"files_total": 100, "files_transferred": 12,
                                                    "bytes_received": 5 * 1024 * 1024},
                   slaves=[slave_entry("m1", "success"), slave_entry("m2", "failed", "rsync exit 23")])
    fake.on_json("GET", "/runs/7", run)

    out = mirrorctl("runs", "show", "7").stdout

    assert re.search(r"^  state:\s+partial$", out, re.MULTILINE), out
    assert "received:  5.0 MiB" in out
    table = out[out.index("SLAVE"):].splitlines()
    assert table[0].split() == ["SLAVE", "STATE", "ATTEMPTS", "STARTED", "FINISHED", "DURATION", "FILES", "EXIT",
                                "PROGRESS", "ERROR"]
    assert table[1].split()[:2] == ["m1", "success"] and "4.0s" in table[1]
    assert table[2].split()[:2] == ["m2", "failed"] and table[2].endswith("rsync exit 23")


def test_run_show_tells_how_far_each_slave_pull_has_come_while_it_runs(mirrorctl, fake):
    pulling = dict(slave_entry("m1", "syncing"), finished_at=None, stats=None,
                   progress={"bytes": 1024, "percent": 45, "rate": "12.34MB/s", "eta": "0:00:05"})
    done = dict(slave_entry("m2", "success"), progress={"bytes": 2048, "percent": 100, "rate": "1.00MB/s",
                                                        "eta": "0:00:00"})
    fake.on_json("GET", "/runs/7", make_run("distributing", slaves=[pulling, done]))

    table = mirrorctl("runs", "show", "7").stdout.split("SLAVE", 1)[1].splitlines()

    assert table[1].split()[:2] == ["m1", "syncing"] and "45% at 12.34MB/s" in table[1]
    assert "100%" not in table[2], "a part that has ended shows no progress"


def test_run_show_gives_a_slave_part_s_warning_where_there_is_no_error(mirrorctl, fake):
    repaired = dict(slave_entry("m1", "success"), warning="the published tree was changed outside mirror-sync, "
                    "first at: 'small.txt'; pulled in full")
    fake.on_json("GET", "/runs/7", make_run("success", slaves=[repaired]))

    table = mirrorctl("runs", "show", "7").stdout.split("SLAVE", 1)[1].splitlines()

    assert "warning: the published tree was changed" in table[1]


def test_runs_list_passes_limit_and_shows_slave_summary(mirrorctl, fake):
    fake.on_json("GET", "/projects/debian/runs", [make_run("success", slaves=[slave_entry("m1", "success")],
                                                           duration=75.0)])

    result = mirrorctl("runs", "list", "debian", "--limit", "5")

    assert fake.last()["params"] == {"limit": 5}
    row = result.stdout.splitlines()[1]
    assert row.split()[:4] == ["7", "success", "manual", "1m"] and "1m 15s" in row and "1/1 ok" in row


def test_runs_cancel_posts_the_cancel_and_shows_the_run(mirrorctl, fake):
    fake.on_json("POST", "/runs/7/cancel", make_run("cancelled", error="cancelled by an admin"))

    result = mirrorctl("runs", "cancel", "7")

    assert result.exit_code == 0 and fake.last()["method"] == "POST"
    assert result.stdout.startswith("cancelled run 7") and "cancelled by an admin" in result.stdout


def test_runs_cancel_of_a_finished_run_says_why_in_one_line(mirrorctl, fake):
    message = "Run 7 already ended (success); only a queued, syncing or distributing run can be cancelled."
    fake.on("POST", "/runs/7/cancel", api_error(409, "conflict", message))

    result = mirrorctl("runs", "cancel", "7")

    assert result.exit_code == 1 and "run 7 already ended (success)" in one_error_line(result)


def test_projects_rm_force_asks_the_master_to_cancel_first(mirrorctl, fake):
    fake.on("DELETE", "/projects/debian", Reply(204, b"", {}))

    assert mirrorctl("projects", "rm", "debian", "--force").exit_code == 0
    assert fake.last()["params"] == {"force": "true"}


def test_status_shows_each_slaves_freshness(mirrorctl, fake):
    fake.on_json("GET", "/status", [{
        "name": "debian", "status": "success", "last_success": "2026-05-09T11:00:00+00:00", "next_run": None,
        "upstream": "rsync://ftp.example.org/debian/", "size": 2048,
        "slaves": {"m1": {"state": "fresh", "run_id": 7, "since": "2026-05-09T11:01:00+00:00", "last_error": None},
                   "m2": {"state": "failed", "run_id": 5, "since": "2026-05-08T12:00:00+00:00",
                          "last_error": "connection refused"}},
    }])

    out = mirrorctl("status").stdout

    assert "1/2 fresh" in out and "2.0 KiB" in out and "1h ago" in out
    assert any(line.split()[:5] == ["debian", "m2", "failed", "1d", "ago"] for line in out.splitlines())


def test_slaves_list_shows_state_and_last_seen(mirrorctl, fake):
    fake.on_json("GET", "/slaves", [{"name": "m1", "url": "http://m1:7000", "enabled": True, "state": "online",
                                     "last_seen": "2026-05-09T11:59:55+00:00",
                                     "created_at": "2026-05-01T00:00:00+00:00", "rsync_user": "ms-m1"}])

    lines = mirrorctl("slaves", "list").stdout.splitlines()

    assert lines[1].split()[:4] == ["m1", "online", "5s", "ago"]


def test_slaves_show_says_the_last_edit_behind_the_slaves_back_and_its_repair(mirrorctl, fake):
    slave = {"name": "m1", "url": "http://m1:7000", "enabled": True, "state": "online",
             "last_seen": "2026-05-09T11:59:55+00:00", "created_at": "2026-05-01T00:00:00+00:00",
             "rsync_user": "ms-m1", "public_url": None,
             "last_edit": {"project": "debian", "path": "pool/a.deb", "seen_at": "2026-05-09T11:57:00+00:00",
                           "repaired_at": None}}
    fake.on_json("GET", "/slaves/m1", slave)
    out = mirrorctl("slaves", "show", "m1").stdout
    assert "debian, first at 'pool/a.deb', seen 2026-05-09 11:57:00 UTC (3m ago); not repaired yet" in out, out
    slave["last_edit"]["repaired_at"] = "2026-05-09T11:59:30+00:00"
    fake.on_json("GET", "/slaves/m1", slave)
    assert "; repaired 2026-05-09 11:59:30 UTC (30s ago)" in mirrorctl("slaves", "show", "m1").stdout
    assert "{" not in mirrorctl("slaves", "show", "m1").stdout, "not shown again as a raw field"


@pytest.mark.parametrize("value, text", [(None, "-"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                         (1288490189, "1.2 GiB"), (3 * 1024 ** 4, "3.0 TiB")])
def test_sizes_read_in_binary_units(value, text):
    assert human_size(value) == text


@pytest.mark.parametrize("value, text", [
    (None, "-"), ("2026-05-09T12:00:00+00:00", "just now"), ("2026-05-09T11:59:30Z", "30s ago"),
    ("2026-05-09T11:57:00+00:00", "3m ago"), ("2026-05-09T09:00:00+00:00", "3h ago"),
    ("2026-05-07T12:00:00+00:00", "2d ago"), ("2026-05-09T14:30:00+00:00", "in 2h"), ("garbage", "-"),
])
def test_times_read_relative_to_now(value, text):
    assert human_age(value, NOW) == text


@pytest.mark.parametrize("seconds, text", [(None, "-"), (4.25, "4.2s"), (75.3, "1m 15s"), (7322, "2h 02m"),
                                           (200000, "2d 07h")])
def test_durations_read_in_the_largest_units(seconds, text):
    assert human_duration(seconds) == text


# Following a run


def log_pages(*pages):
    """A log endpoint answering ``pages`` (bytes) one after another from the offsets asked for."""
    content = b"".join(pages)
    ends = []
    for page in pages:
        ends.append((ends[-1] if ends else 0) + len(page))

    def answer(params):
        offset = params["offset"]
        end = next((end for end in ends if end > offset), offset)
        return Reply(200, content[offset:end], {"x-next-offset": str(end)})

    return answer


def test_sync_follow_shows_states_slaves_and_log_lines_and_exits_0(mirrorctl, fake):
    fake.on_json("POST", "/projects/debian/syncs", make_run("queued"), 202)
    fake.on("GET", "/runs/7",
            json_reply(make_run("syncing")),
            json_reply(make_run("distributing", slaves=[slave_entry("m1", "dispatched")])),
            json_reply(make_run("distributing", slaves=[slave_entry("m1", "syncing")])),
            json_reply(make_run("success", duration=3.0, stats={"files_transferred": 12, "bytes_received": 2048},
                                slaves=[slave_entry("m1", "success")])))
    # A line split across two answers, and a character split across two answers, arrive whole.
    fake.on("GET", "/runs/7/log", log_pages(b"receiving file list\nsent 48 by", b"tes\ndone \xc3", b"\xa9\n"))

    result = mirrorctl("projects", "sync", "debian", "--follow")

    assert result.exit_code == 0, result.output
    lines = [line.split("] ", 1)[-1] for line in result.stdout.splitlines()]
    assert lines == [
        "run 7 of debian: queued", "syncing", "  | receiving file list", "  | sent 48 bytes", "  | done é",
        "distributing", "slave m1: dispatched", "slave m1: syncing", "slave m1: success", "success",
        "run 7 success in 3.0s; 12 files transferred, 2.0 KiB received; slaves 1/1 ok",
    ]


def test_sync_follow_exits_1_when_the_run_fails(mirrorctl, fake):
    fake.on_json("POST", "/projects/debian/syncs", make_run("queued"), 202)
    fake.on("GET", "/runs/7", json_reply(make_run("failed", error="rsync exited with code 10")))
    fake.on("GET", "/runs/7/log", log_pages(b"@ERROR: unknown module\n"))

    result = mirrorctl("projects", "sync", "debian", "--follow")

    assert result.exit_code == 1
    assert "  | @ERROR: unknown module" in result.stdout
    assert one_error_line(result) == "Error: run 7 of debian ended failed: rsync exited with code 10"


@pytest.mark.parametrize("state", ["partial", "interrupted", "cancelled"])
def test_sync_follow_exits_non_zero_unless_success(mirrorctl, fake, state):
    fake.on_json("POST", "/projects/debian/syncs", make_run("queued"), 202)
    fake.on("GET", "/runs/7", json_reply(make_run(state)))
    fake.on("GET", "/runs/7/log", log_pages(b""))

    assert mirrorctl("projects", "sync", "debian", "--follow").exit_code == 1


def test_sync_follow_waits_while_the_log_is_not_written_yet(mirrorctl, fake):
    fake.on_json("POST", "/projects/debian/syncs", make_run("queued"), 202)
    fake.on("GET", "/runs/7", json_reply(make_run("syncing")), json_reply(make_run("success")))
    fake.on("GET", "/runs/7/log", api_error(410, "gone", "The log of run 7 is no longer kept."),
            log_pages(b"done\n"))

    result = mirrorctl("projects", "sync", "debian", "--follow")

    assert result.exit_code == 0, result.output
    assert "  | done" in result.stdout


def test_sync_follow_with_json_prints_only_the_final_run(mirrorctl, fake):
    fake.on_json("POST", "/projects/debian/syncs", make_run("queued"), 202)
    fake.on("GET", "/runs/7", json_reply(make_run("syncing")), json_reply(make_run("success")))
    fake.on("GET", "/runs/7/log", log_pages(b"line\n"))

    result = mirrorctl("--json", "projects", "sync", "debian", "--follow")

    assert result.exit_code == 0
    assert json.loads(result.stdout)["state"] == "success"


def test_sync_without_follow_says_how_to_follow(mirrorctl, fake):
    fake.on_json("POST", "/projects/debian/syncs", make_run("queued", coalesced=1), 202)

    out = mirrorctl("projects", "sync", "debian").stdout

    assert "run 7 of debian was already queued; this sync joined it" in out
    assert "mirrorctl runs log 7 --follow" in out


def test_runs_log_pages_through_the_whole_log(mirrorctl, fake):
    fake.on("GET", "/runs/7/log", log_pages(b"first\n", b"second\n"))

    result = mirrorctl("runs", "log", "7")

    assert result.stdout == "first\nsecond\n"
    assert [request["params"]["offset"] for request in fake.requests] == [0, 6, 13]


def test_runs_log_follow_polls_from_the_next_offset_until_the_run_ends(mirrorctl, fake):
    fake.on("GET", "/runs/7", json_reply(make_run("syncing")), json_reply(make_run("syncing")),
            json_reply(make_run("success")))
    pages = iter([(b"one\n", 4), (b"", 4), (b"two\n", 8), (b"", 8), (b"", 8)])

    def answer(params):
        data, next_offset = next(pages)
        return Reply(200, data, {"x-next-offset": str(next_offset)})

    fake.on("GET", "/runs/7/log", answer)

    result = mirrorctl("runs", "log", "7", "--follow")

    assert result.exit_code == 0
    assert result.stdout == "one\ntwo\n"
    offsets = [request["params"]["offset"] for request in fake.requests if request["path"].endswith("/log")]
    assert offsets == [0, 4, 4, 8, 8]


def test_a_pruned_log_is_one_line(mirrorctl, fake):
    fake.on("GET", "/runs/7/log", api_error(410, "gone", "The log of run 7 is no longer kept (LOG_RETENTION)."))

    result = mirrorctl("runs", "log", "7")

    assert result.exit_code == 1
    assert one_error_line(result) == "Error: the log of run 7 is no longer kept (LOG_RETENTION)"


# --json anywhere, JSON errors, --version, completion, filters, force

@pytest.mark.parametrize("args", [
    ("--json", "projects", "list"),
    ("projects", "--json", "list"),
    ("projects", "list", "--json"),
])
def test_json_is_accepted_before_or_after_the_subcommand(mirrorctl, fake, args):
    fake.on_json("GET", "/projects", [PROJECT])

    result = mirrorctl(*args)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [PROJECT]


def test_json_after_a_double_dash_is_an_argument_not_the_flag(mirrorctl, fake):
    fake.on_json("GET", "/projects/--json", PROJECT)

    result = mirrorctl("projects", "show", "--", "--json")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("project debian")


def test_errors_under_json_are_one_json_line_on_stderr(mirrorctl, fake):
    fake.on("GET", "/projects/nope", api_error(404, "not_found", "There is no project 'nope'."))

    result = mirrorctl("projects", "show", "nope", "--json")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert json.loads(one_error_line(result)) == {
        "error": "not_found", "message": "there is no project 'nope'", "status": 404, "fields": {}, "exit_code": 1}


def test_usage_and_connection_errors_under_json_are_json_too(mirrorctl, fake):
    usage = mirrorctl("projects", "list", "--json", "--no-such-flag")
    assert usage.exit_code == 2
    document = json.loads(one_error_line(usage))
    assert document["error"] == "usage_error" and "--no-such-flag" in document["message"]

    fake.on("GET", "/projects", ConnectionFailed("connection refused"))
    unreachable = mirrorctl("--json", "projects", "list")
    assert unreachable.exit_code == 1
    assert json.loads(one_error_line(unreachable))["error"] == "master_unreachable"


def test_version_prints_the_installed_version(mirrorctl):
    from importlib import metadata

    result = mirrorctl("--version")

    assert result.exit_code == 0
    assert result.stdout.strip() == f"mirrorctl {metadata.version('mirror-sync')}"


@pytest.mark.parametrize("shell, marker", [
    ("bash", "complete -o nosort -F _mirrorctl_completion mirrorctl"),
    ("zsh", "compdef _mirrorctl_completion mirrorctl"),
    ("fish", "complete --no-files --command mirrorctl"),
])
def test_completion_prints_the_script_for_each_shell(mirrorctl, shell, marker):
    result = mirrorctl("completion", shell)

    assert result.exit_code == 0, result.output
    assert marker in result.stdout and "_MIRRORCTL_COMPLETE" in result.stdout


def test_completion_refuses_an_unknown_shell(mirrorctl):
    result = mirrorctl("completion", "tcsh")

    assert result.exit_code == 2
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in result.stderr


def test_list_status_keeps_only_projects_in_that_status(mirrorctl, fake):
    broken = dict(PROJECT, name="arch", status="failed")
    partial = dict(PROJECT, name="ubuntu", status="partial")
    fake.on_json("GET", "/projects", [PROJECT, broken, partial])

    failed = mirrorctl("projects", "list", "--status", "failed")
    assert [line.split()[0] for line in failed.stdout.splitlines()] == ["NAME", "arch"]

    both = mirrorctl("projects", "list", "--status", "failed", "--status", "partial", "--json")
    assert [project["name"] for project in json.loads(both.stdout)] == ["arch", "ubuntu"]

    none = mirrorctl("projects", "list", "--status", "syncing")
    assert none.stdout.strip() == "no project is syncing"


def test_list_status_refuses_a_status_that_does_not_exist(mirrorctl, fake):
    result = mirrorctl("projects", "list", "--status", "broken")

    assert result.exit_code == 2
    assert "'broken' is not one of" in result.stderr and not fake.requests


def test_sync_force_asks_the_master_to_pass_the_concurrency_cap(mirrorctl, fake):
    fake.on_json("POST", "/projects/debian/syncs", make_run("queued"), 202)

    mirrorctl("projects", "sync", "debian")
    assert fake.last()["params"] is None

    result = mirrorctl("projects", "sync", "debian", "--force")
    assert result.exit_code == 0, result.output
    assert fake.last()["params"] == {"force": "true"}


def test_texts_from_slaves_and_rsync_never_reach_the_terminal_raw(mirrorctl, fake):
    hostile = "bad\x1b[2J\x1b]0;owned\x07\u202eevil\nforged: line"
    run = make_run("partial", error=f"rsync said {hostile}",
                   slaves=[slave_entry("m1", "success"), slave_entry("m2", "failed", hostile)])
    fake.on_json("GET", "/runs/7", run)
    out = mirrorctl("runs", "show", "7").stdout
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in out
    assert "bad\\x1b[2J" in out
    fake.on("GET", "/runs/7/log", log_pages(b"file \x1b[31mred\x1b[0m\tok\n"))
    log = mirrorctl("runs", "log", "7").stdout
    assert log == "file \\x1b[31mred\\x1b[0m\tok\n"


def test_add_and_edit_set_the_visitor_fields(mirrorctl, fake):
    fake.on_json("POST", "/projects", dict(PROJECT, description="The universal OS"), 201)
    fake.on_json("PATCH", "/projects/debian", PROJECT)

    added = mirrorctl("projects", "add", "debian", "--upstream", "rsync://ftp.example.org/debian/",
                      "--description", "The universal OS", "--help-url", "https://example.org/help/debian/",
                      "--public-path", "/pub/debian/")
    assert added.exit_code == 0, added.output
    assert fake.last("POST")["json"] == {
        "name": "debian", "upstream": "rsync://ftp.example.org/debian/", "description": "The universal OS",
        "help_url": "https://example.org/help/debian/", "public_path": "/pub/debian/"}
    assert "description:" in added.stdout and "The universal OS" in added.stdout

    mirrorctl("projects", "edit", "debian", "--public-path", "/debian")
    assert fake.last("PATCH")["json"] == {"public_path": "/debian"}


def test_slaves_edit_sets_and_clears_the_public_url(mirrorctl, fake):
    slave = {"name": "m1", "url": "http://m1:7000", "enabled": True, "state": "online",
             "public_url": "https://m1.example.org"}
    fake.on_json("PATCH", "/slaves/m1", slave)

    result = mirrorctl("slaves", "edit", "m1", "--public-url", "https://m1.example.org")
    assert result.exit_code == 0, result.output
    assert fake.last()["json"] == {"public_url": "https://m1.example.org"}
    assert "public url:" in result.stdout and "https://m1.example.org" in result.stdout

    mirrorctl("slaves", "edit", "m1", "--no-public-url")
    assert fake.last()["json"] == {"public_url": None}
    assert mirrorctl("slaves", "edit", "m1").exit_code == 2
