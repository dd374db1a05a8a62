"""Projects' sync methods, hooks, traces and their orders, with a fake rsync and real little scripts."""

import os
import stat

import pytest

from master.db import db
from master.models import SlaveRun
from master.services import distribution, syncs
from tests.conftest import JOIN_TOKEN

# A plain order: what every order has, the run's snapshot and digest included, and no method fields.
PLAIN_ORDER_KEYS = {"run_id", "project", "rsyncd_host", "rsyncd_port", "timeout", "catchup", "publish",
                    "snapshot", "digest", "changes"}


def script(directory, name, body):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w") as stream:
        stream.write("#!/bin/sh\n" + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def make_slave(client):
    def enroll(name):
        response = client.post("/api/v1/slaves/register", json={"name": name, "url": f"http://{name}:7000"},
                               headers={"Authorization": f"Bearer {JOIN_TOKEN}"})
        assert response.status_code == 201, response.json
    return enroll


@pytest.fixture
def dirs(app, tmp_path):
    hooks_dir, scripts_dir = str(tmp_path / "hooks"), str(tmp_path / "scripts")
    os.makedirs(hooks_dir)
    os.makedirs(scripts_dir)
    app.config.update(HOOKS_DIR=hooks_dir, SYNC_SCRIPTS_DIR=scripts_dir, MIRROR_NAME="mirror.example.org")
    return {"hooks": hooks_dir, "scripts": scripts_dir}


def create(client, admin, **fields):
    body = {"name": "debian", "upstream": "rsync://mirror.example.org/debian", **fields}
    return client.post("/api/v1/projects", json=body, headers=admin)


def run_once(app, client, admin, name="debian"):
    assert client.post(f"/api/v1/projects/{name}/syncs", headers=admin).status_code == 202
    with app.app_context():
        [run_id] = syncs.run_ids_to_execute(1)
        syncs.start_upstream_sync(run_id)
    return client.get(f"/api/v1/runs/{run_id}", headers=admin).json


def log_of(client, admin, run):
    return client.get(f"/api/v1/runs/{run['id']}/log", headers=admin).get_data(as_text=True)


@pytest.mark.parametrize("fields, field, words", [
    ({"method": "two-stage"}, "stage1_profile", "needs a stage1_profile"),
    ({"method": "two-stage", "stage1_profile": "gentoo"}, "stage1_profile", "Must be one of"),
    ({"method": "command"}, "command", "SYNC_SCRIPTS_DIR"),
    ({"method": "command", "command": "missing"}, "command", "no executable 'missing'"),
    ({"method": "command", "command": "../bin/sh"}, "command", "not a path"),
    ({"method": "sideways"}, "method", "Must be one of"),
    ({"upstream": "https://example.org/debian"}, "upstream", "rsync:// URL"),
    ({"hooks": {"pre_sync": "sub/notify"}}, "hooks.pre_sync", "not a path"),
    ({"hooks": {"post_success": "missing"}}, "hooks.post_success", "no executable 'missing' in HOOKS_DIR"),
    ({"hooks": {"post_failure": "/bin/true"}}, "hooks.post_failure", "not a path"),
    ({"hooks": {"on_coffee": "x"}}, "hooks.on_coffee", "Unknown field"),
    ({"trace": "ubuntu"}, "trace", "Must be one of"),
    ({"upstream_marker": "../lastupdate"}, "upstream_marker", "not allowed"),
    ({"upstream_marker": "/lastupdate"}, "upstream_marker", "relative path"),
    ({"transient_exit_codes": [0]}, "transient_exit_codes", "greater than or equal to 1"),
    ({"command_args": ["a\nb"]}, "command_args", "control characters"),
    ({"push_token": "short"}, "push_token", "16-256"),
])
def test_bad_method_fields_are_refused_naming_the_field(client, admin, dirs, fields, field, words):
    response = create(client, admin, **fields)
    assert response.status_code == 422, response.json
    body = response.json
    assert f": {field}" in body["message"] and words in str(body["fields"]) + body["message"]
    top, _, inner = field.partition(".")
    assert top in body["fields"] and (not inner or inner in body["fields"][top])
    assert client.get("/api/v1/projects", headers=admin).json == []


def test_a_patch_is_checked_against_the_fields_it_leaves_alone(client, admin, dirs):
    assert create(client, admin).status_code == 201
    response = client.patch("/api/v1/projects/debian", json={"method": "two-stage"}, headers=admin)
    assert response.status_code == 422 and "stage1_profile" in response.json["fields"]
    response = client.patch("/api/v1/projects/debian", json={"method": "two-stage", "stage1_profile": "debian"},
                            headers=admin)
    assert response.status_code == 200 and response.json["method"] == "two-stage"


def test_plain_projects_send_plain_orders_and_two_stage_traced_ones_say_so(app, client, admin, dirs,
                                                                           fake_slaves, make_slave):
    make_slave("mirror1")
    assert create(client, admin).status_code == 201
    assert create(client, admin, name="ubuntu", method="two-stage", stage1_profile="debian",
                  trace="debian").status_code == 201
    run_once(app, client, admin, "debian")
    run_once(app, client, admin, "ubuntu")
    plain, staged = [order for _, order in fake_slaves.orders]
    assert set(plain) == PLAIN_ORDER_KEYS, "a plain project sends no method or trace fields"
    assert (staged["method"], staged["stage1_profile"], staged["trace"], staged["upstream_name"]) == (
        "two-stage", "debian", "debian", "mirror.example.org")


def test_a_two_stage_project_pulls_the_indices_last_and_writes_its_trace(app, client, admin, dirs, fake_rsync,
                                                                         tmp_path):
    assert create(client, admin, method="two-stage", stage1_profile="debian", trace="debian").status_code == 201
    run = run_once(app, client, admin)
    assert run["state"] == "success", run
    stage1, stage2 = fake_rsync.jobs
    assert not stage1.delete and "--exclude=Packages*" in stage1.options and "--exclude=InRelease" in stage1.options
    assert stage2.delete and "--exclude=Packages*" not in stage2.options
    protect = "--filter=protect /project/trace/mirror.example.org"
    assert protect in stage1.options and protect in stage2.options, "our trace survives rsync's deletions"
    assert run["stats"]["bytes_received"] == 200, "stats add up both stages"
    trace = tmp_path / "data" / "debian" / "project" / "trace" / "mirror.example.org"
    lines = trace.read_text().splitlines()
    assert "Trigger: manual" in lines and "Upstream-mirror: mirror.example.org" in lines
    assert any(line.startswith("Total time spent in stage2 rsync: ") for line in lines)


def test_no_trace_after_a_failed_pull(app, client, admin, dirs, fake_rsync, tmp_path):
    fake_rsync.exit_codes = [23]
    assert create(client, admin, trace="debian", retries=0).status_code == 201
    assert run_once(app, client, admin)["state"] == "failed"
    assert not (tmp_path / "data" / "debian" / "project" / "trace").exists()


def test_a_failing_pre_sync_hook_fails_the_run_before_any_pull(app, client, admin, dirs, fake_rsync):
    script(dirs["hooks"], "check-disk", 'echo "disk full on $MIRRORSYNC_DIR"; exit 1\n')
    assert create(client, admin, hooks={"pre_sync": "check-disk"}).status_code == 201
    run = run_once(app, client, admin)
    assert run["state"] == "failed" and run["error"] == "hook pre_sync (check-disk) failed: exit code 1"
    assert fake_rsync.jobs == []
    assert "disk full on " in log_of(client, admin, run)


def test_post_hooks_run_with_the_outcome_and_a_failing_one_is_a_warning(app, client, admin, dirs, fake_rsync):
    script(dirs["hooks"], "announce", 'echo "$MIRRORSYNC_PROJECT run $MIRRORSYNC_RUN_ID $MIRRORSYNC_STATE"; '
                                      'exit 2\n')
    script(dirs["hooks"], "page-me", 'echo "paging for $1 $2 $3 $4"\n')
    assert create(client, admin, retries=0, hooks={"post_success": "announce",
                                                    "post_failure": "page-me"}).status_code == 201
    run = run_once(app, client, admin)
    assert run["state"] == "success"
    assert run["warning"] == "hook post_success (announce) failed: exit code 2"
    assert f"debian run {run['id']} success" in log_of(client, admin, run)
    fake_rsync.exit_codes = [23]
    failed = run_once(app, client, admin)
    assert failed["state"] == "failed" and failed["warning"] is None
    assert f"paging for post_failure debian {failed['id']} failed" in log_of(client, admin, failed)


def test_a_hook_removed_from_hooks_dir_after_the_project_was_saved_fails_clearly(app, client, admin, dirs):
    path = script(dirs["hooks"], "check", "exit 0\n")
    assert create(client, admin, hooks={"pre_sync": "check"}).status_code == 201
    os.unlink(path)
    run = run_once(app, client, admin)
    assert run["state"] == "failed" and "no executable 'check'" in run["error"]


def test_a_command_project_runs_its_script_and_retries_the_codes_it_marks_transient(app, client, admin, dirs,
                                                                                     tmp_path, fake_slaves,
                                                                                     make_slave):
    make_slave("mirror1")
    script(dirs["scripts"], "fetch", 'echo "fetching $MIRRORSYNC_UPSTREAM for $1"\n'
                                     'printf 0123456789 > "$MIRRORSYNC_DIR/file"\n'
                                     '[ -e "$MIRRORSYNC_DIR/fail-next" ] && exit 75; exit 0\n')
    assert create(client, admin, method="command", command="fetch", command_args=["--branch", "main"],
                  upstream="https://git.example.org/project.git", transient_exit_codes=[75]).status_code == 201
    run = run_once(app, client, admin)
    assert run["state"] == "distributing" and run["stats"]["total_size"] == 10
    assert "fetching https://git.example.org/project.git for --branch" in log_of(client, admin, run)
    assert set(fake_slaves.orders[-1][1]) == PLAIN_ORDER_KEYS, "slaves pull the result with plain rsync"
    assert client.get("/api/v1/projects/debian", headers=admin).json["upstream"] == (
        "https://git.example.org/project.git")
    (tmp_path / "data" / "debian" / "fail-next").write_text("")
    with app.app_context():   # the slave's part ends, so the next run may start
        for entry in db.session.query(SlaveRun).all():
            entry.state = "success"
        db.session.commit()
        distribution.finish_run_if_complete(run["id"])
    failed = run_once(app, client, admin)
    assert failed["state"] == "failed" and failed["exit_code"] == 75 and failed["retried_by"] is not None
    assert failed["error"] == ("sync script 'fetch': exit code 75: "
                               "fetching https://git.example.org/project.git for --branch")
