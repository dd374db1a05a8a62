"""The sync scripts shipped in examples/sync-scripts, run by a real master as ``method: command``."""

import os
import subprocess

from tests.integration.conftest import ApiClient
from tests.support.processes import REPO_ROOT, wait_run_finished

SCRIPTS = REPO_ROOT / "examples" / "sync-scripts"


def git(*args, cwd=None):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def commit(work, name, text):
    (work / name).write_text(text)
    git("add", name, cwd=work)
    git("commit", "-q", "-m", f"add {name}", cwd=work)
    git("push", "-q", "origin", "HEAD:main", "--tags", cwd=work)


def test_the_git_mirror_script_mirrors_a_bare_repository_and_follows_it(master_factory, tmp_path):
    upstream = tmp_path / "upstream.git"
    git("init", "-q", "--bare", "-b", "main", str(upstream))
    work = tmp_path / "work"
    git("clone", "-q", str(upstream), str(work))
    commit(work, "README", "hello\n")
    git("tag", "v1.0", cwd=work)
    git("push", "-q", "origin", "v1.0", cwd=work)

    master = master_factory(tmp_path / "master", extra_env={"MIRRORSYNC_SYNC_SCRIPTS_DIR": str(SCRIPTS)})
    api = ApiClient(master.url, master.admin_token)
    created = api.post("/api/v1/projects", json={
        "name": "project-git", "upstream": "https://git.example.org/project.git", "method": "command",
        "command": "git-mirror", "command_args": [str(upstream)], "transient_exit_codes": [128]})
    assert created.status_code == 201, created.text

    def sync():
        run = api.post("/api/v1/projects/project-git/syncs").json()
        return wait_run_finished(master.url, master.admin_token, run["id"], timeout=30)

    first = sync()
    assert first["state"] == "success", first
    mirror = master.data_dir / "project-git"
    assert git("--git-dir", str(mirror), "log", "--format=%s", "main").split("\n")[0] == "add README"
    assert "v1.0" in git("--git-dir", str(mirror), "tag")
    assert first["stats"]["total_size"] > 0 and first["stats"]["files_total"] > 0
    log = api.get(f"/api/v1/runs/{first['id']}/log").text
    assert f"fetching {upstream}" in log and "$ " in log

    commit(work, "NEWS", "second\n")
    second = sync()
    assert second["state"] == "success", second
    clone = tmp_path / "clone"
    git("clone", "-q", str(mirror), str(clone))
    assert (clone / "NEWS").read_text() == "second\n", "a clone of the mirror has upstream's newest commit"
    assert api.get("/api/v1/projects/project-git").json()["size"] == second["stats"]["total_size"]

    # An upstream that is gone: git exits 128, which this project marks transient, so a retry is queued.
    api.patch("/api/v1/projects/project-git", json={"command_args": [str(tmp_path / "gone.git")], "retries": 1})
    failed = sync()
    assert failed["state"] == "failed" and failed["exit_code"] == 128 and failed["retried_by"], failed
    api.close()
