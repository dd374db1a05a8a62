"""Under gunicorn, every worker serves the same public documents and follows each change at once."""

import pytest
import requests

from tests.support.processes import start_gunicorn_master

pytestmark = pytest.mark.integration


def test_every_worker_answers_the_same_build_and_the_next_change(tmp_path):
    server = start_gunicorn_master(tmp_path / "data", workers=3, log_dir=tmp_path)
    try:
        admin = {"Authorization": f"Bearer {server.admin_token}"}
        for index in range(5):
            assert requests.post(f"{server.url}/api/v1/projects", headers=admin, timeout=30, json={
                "name": f"p{index}", "upstream": f"rsync://mirror.example.org/p{index}"}).status_code == 201
        # Enough requests that each worker answers some (each connection may reach any worker).
        first = [requests.get(f"{server.url}/jobs", timeout=30) for _ in range(15)]
        assert {answer.headers["ETag"] for answer in first} == {first[0].headers["ETag"]}
        assert all(answer.status_code == 200 and len(answer.json()) == 5 for answer in first)
        not_modified = [requests.get(f"{server.url}/jobs", headers={"If-None-Match": first[0].headers["ETag"]},
                                     timeout=30).status_code for _ in range(15)]
        assert set(not_modified) == {304}
        assert requests.patch(f"{server.url}/api/v1/projects/p2", headers=admin, json={"enabled": False},
                              timeout=30).status_code == 200
        after = [requests.get(f"{server.url}/jobs", timeout=30).json()[2]["status"] for _ in range(15)]
        assert set(after) == {"disabled"}, "no worker serves the build from before the change"
    finally:
        server.stop()
