"""Our live feeds read by their real consumers' logic: mirror-web and mirrorz (in node), Prometheus."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.support.processes import free_port, wait_for, wait_run_finished

pytestmark = pytest.mark.integration

CONSUMERS = Path(__file__).resolve().parents[1] / "support" / "js" / "tunasync_consumers.js"
INSTALL_TIMEOUT = 600


def sync(api, master, name):
    response = api.post(f"/api/v1/projects/{name}/syncs")
    assert response.status_code == 202, response.text
    return wait_run_finished(master.url, master.admin_token, response.json()["id"], timeout=60)


@pytest.fixture
def feeds_world(master, api, upstream):
    api.post("/api/v1/projects", json={"name": "good", "upstream": upstream.url, "schedule": "0 * * * *"})
    api.post("/api/v1/projects", json={"name": "broken", "retries": 0,
                                       "upstream": upstream.url.replace(upstream.module, "no-such-module")})
    api.post("/api/v1/projects", json={"name": "off", "upstream": upstream.url, "enabled": False})
    assert sync(api, master, "good")["state"] == "success"
    assert sync(api, master, "broken")["state"] == "failed"
    return master


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_mirror_web_and_mirrorz_read_our_live_jobs(feeds_world, api):
    jobs = {job["name"]: job for job in requests.get(f"{feeds_world.url}/jobs", timeout=10).json()}
    done = subprocess.run(["node", str(CONSUMERS), f"{feeds_world.url}/jobs"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    shown = {row["name"]: row for row in seen["mirror_web"]}
    assert set(shown) == {"good", "broken"}, "mirror-web hides disabled jobs"
    assert shown["good"]["label"] == "label-success" and shown["good"]["last_attempt"] is None
    assert shown["broken"]["label"] == "label-warning"
    assert shown["broken"]["last_attempt"] is not None, "a failure after no success shows its attempt"
    assert re.fullmatch(r"\d+(\.\d\d[KMGTPE])?", shown["good"]["size"]), shown["good"]["size"]
    good = jobs["good"]
    assert seen["mirrorz"]["good"]["status"] == f"S{good['last_update_ts']}X{good['next_schedule_ts']}"
    assert re.fullmatch(r"F\d+", seen["mirrorz"]["broken"]["status"])
    assert seen["mirrorz"]["off"]["status"] == "U", "disabled maps to unknown in tunasync's parser"

    # A queued follow-up keeps "success" (mirrorz S, not U) until its pull starts.
    api.post("/api/v1/projects/good/syncs")
    again = json.loads(subprocess.run(["node", str(CONSUMERS), f"{feeds_world.url}/jobs"], capture_output=True,
                                      text=True, timeout=60, check=True).stdout)
    assert again["mirrorz"]["good"]["status"][0] in "SY", again["mirrorz"]["good"]


def _ensure_prometheus():
    """promtool and prometheus from Debian's package; returns the reason they are missing, or None."""
    if shutil.which("promtool"):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "prometheus is not installed and apt-get cannot run here"
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]
    try:
        if subprocess.run(command, env=environment, capture_output=True, timeout=INSTALL_TIMEOUT).returncode:
            subprocess.run(["apt-get", "update", "-qq"], env=environment, capture_output=True,
                           timeout=INSTALL_TIMEOUT)
            subprocess.run(command, env=environment, capture_output=True, timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"apt-get install prometheus took more than {INSTALL_TIMEOUT} s"
    return None if shutil.which("promtool") else "apt-get could not install prometheus"


def test_promtool_accepts_our_metrics(feeds_world):
    missing = _ensure_prometheus()
    if missing:
        pytest.skip(missing)
    text = requests.get(f"{feeds_world.url}/metrics", timeout=10).content
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()


@pytest.mark.slow
def test_a_real_prometheus_scrapes_us_without_falling_back(feeds_world, tmp_path):
    missing = _ensure_prometheus()
    if missing or shutil.which("prometheus") is None:
        pytest.skip(missing or "the prometheus server is not installed")
    target = feeds_world.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mirror-sync\n"
                      f"    static_configs:\n      - targets: ['{target}']\n")
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        def scraped():
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/api/v1/query",
                                      params={"query": 'mirrorsync_project_state{project="good",state="success"}'},
                                      timeout=2).json()
            except (requests.RequestException, ValueError):
                return False
            return any(result["value"][1] == "1" for result in answer.get("data", {}).get("result", []))
        wait_for(scraped, timeout=90, interval=0.5, message="Prometheus to store our samples")
        targets = requests.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()
        [active] = targets["data"]["activeTargets"]
        assert active["health"] == "up" and active["lastError"] == ""
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "Invalid content type" not in log_path.read_text(errors="replace"), "Prometheus fell back"
