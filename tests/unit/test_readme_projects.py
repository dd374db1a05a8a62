"""The project JSON README gives for Debian, Ubuntu, Arch and Fedora is accepted as it stands."""

import json
import re

from tests.unit.test_docs_in_step import readme_section


def test_every_distribution_project_in_the_readme_is_accepted_as_written(client, admin):
    section = readme_section("Mirroring Debian, Ubuntu, Arch, Fedora")
    blocks = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]
    assert [block["name"] for block in blocks] == ["debian", "ubuntu", "archlinux", "fedora"]
    for block in blocks:
        response = client.post("/api/v1/projects", json=block, headers=admin)
        assert response.status_code == 201, (block["name"], response.json)
    debian = client.get("/api/v1/projects/debian", headers=admin).json
    assert (debian["method"], debian["stage1_profile"], debian["trace"], debian["has_push_token"]) == (
        "two-stage", "debian", "debian", True)
    assert client.get("/api/v1/projects/archlinux", headers=admin).json["upstream_marker"] == "lastupdate"
