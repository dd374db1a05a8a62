"""What an upgraded database must show through the API: every row an earlier release left in it."""

from tests.support.legacy_db import ADMIN_TOKEN, LEGACY_ROWS


def upgrade_database(url, data_dir):
    """Run ``python -m master db upgrade`` in this process, as an admin would; returns its output."""
    from click.testing import CliRunner
    from master.__main__ import cli
    result = CliRunner().invoke(cli, ["db", "upgrade"], env={"MIRRORSYNC_DATABASE_URL": url,
                                                             "MIRRORSYNC_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0, result.output
    return result.output


def assert_every_legacy_row_reads_back(client):
    """Projects, runs with their slave parts, slaves, tokens and freshness, as the API shows them."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    projects = {p["name"]: p for p in client.get("/api/v1/projects", headers=admin).json}
    assert set(projects) == {row["name"] for row in LEGACY_ROWS["projects"]}
    debian = projects["debian"]
    assert debian["upstream"] == "rsync://ftp.example.org/debian/"
    assert debian["rsync_options"] == ["--bwlimit=1000"] and debian["excludes"] == ["*.iso"]
    assert debian["has_password"] is True and "upstream_password" not in debian
    assert debian["publish"] == "atomic" and debian["timeout"] == 3600
    assert debian["status"] == "partial" and debian["size"] == 123456
    assert debian["last_success"].startswith("2026-11-30T06:10:00")
    assert projects["archlinux"]["status"] == "disabled"

    history = client.get("/api/v1/projects/debian/runs", headers=admin).json
    assert [run["id"] for run in history] == [2, 1]
    run = client.get("/api/v1/runs/2", headers=admin).json
    assert run["state"] == "partial" and run["coalesced"] == 2 and run["trigger"] == "schedule"
    assert run["stats"]["total_size"] == 123456
    parts = {part["slave"]: part for part in run["slaves"]}
    assert parts["mirror1"]["state"] == "success"
    assert parts["mirror2"]["state"] == "failed" and parts["mirror2"]["exit_code"] == 11

    slaves = {s["name"]: s for s in client.get("/api/v1/slaves", headers=admin).json}
    assert set(slaves) == {"mirror1", "mirror2"}
    assert slaves["mirror2"]["state"] == "disabled"
    assert slaves["mirror1"]["last_seen"].startswith("2026-11-30T06:09:00")

    tokens = {t["name"]: t for t in client.get("/api/v1/tokens", headers=admin).json}
    assert set(tokens) == {"legacy-admin", "grafana"}
    assert tokens["grafana"]["revoked_at"] is not None

    feed = client.get("/api/v1/status").json
    status = {entry["name"]: entry for entry in feed}
    freshness = status["debian"]["slaves"]
    # The feed shows enabled slaves only; mirror2 is disabled.
    assert set(freshness) == {"mirror1"}
    assert freshness["mirror1"]["state"] == "fresh" and freshness["mirror1"]["run_id"] == 2
