"""A slave's long pull, with real master and slave processes: its progress reports keep its part open."""

import datetime
import random

import pytest

from tests.integration.conftest import ApiClient
from tests.support.faults import throttled_rsync
from tests.support.processes import DEFAULT_JOIN_TOKEN, start_slave, wait_for, wait_run_finished
from tests.support.rsyncd import RsyncDaemon
from tests.support.trees import assert_trees_equal

# Seconds a slave may go without a word (SLAVE_START_TIMEOUT). rsync prints its progress about once
# a second, and the slave passes on at most one per PROGRESS_INTERVAL: reports come every 1-1.3 s.
START_TIMEOUT = 3
SIZE = 640 * 1024       # at 100 KiB/s, a pull of about 6.5 s: more than twice START_TIMEOUT


@pytest.mark.integration
@pytest.mark.slow
def test_a_pull_longer_than_the_start_timeout_stays_open_on_its_progress_reports_and_succeeds(
        master_factory, tmp_path):
    master = master_factory(tmp_path / "master", extra_env={
        "MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN, "MIRRORSYNC_SLAVE_START_TIMEOUT": str(START_TIMEOUT),
        "MIRRORSYNC_CATCHUP_INTERVAL": "0.2"})
    # Heartbeats once at start, then never during the test: only progress reports say it is alive.
    slave = start_slave(tmp_path / "mirror1", "mirror1", master.url, log_dir=tmp_path / "logs", extra_env={
        "MIRRORSYNC_HEARTBEAT_INTERVAL": "3600", "MIRRORSYNC_PROGRESS_INTERVAL": "0.3",
        "MIRRORSYNC_RSYNC_BINARY": str(throttled_rsync(tmp_path / "bin", 100))})
    try:
        api = ApiClient(master.url, master.admin_token)
        wait_for(lambda: [s["name"] for s in api.get("/api/v1/slaves").json()] == ["mirror1"], 20,
                 message="mirror1 enrolled")
        tree = tmp_path / "big-tree"
        tree.mkdir()
        (tree / "big.bin").write_bytes(random.Random(13).randbytes(SIZE))
        with RsyncDaemon(tmp_path / "big-rsyncd", {"big": tree}) as daemon:
            assert api.post("/api/v1/projects", json={"name": "big", "upstream": daemon.url("big")}
                            ).status_code == 201
            run_id = api.post("/api/v1/projects/big/syncs").json()["id"]

            states = []

            def part():
                entries = api.get(f"/api/v1/runs/{run_id}").json()["slaves"]
                states.append(entries[0]["state"] if entries else None)
                return entries[0] if entries else {}
            seen = wait_for(lambda: (p := part()).get("state") == "syncing" and p.get("progress") and p, 20,
                            message=lambda: f"mirror1's part to show its progress (now {part()})")
            assert set(seen["progress"]) >= {"bytes", "percent", "rate", "eta"}, seen
            # Past the start timeout, still pulling, and what it shows moves on.
            later = wait_for(lambda: ((p := part()).get("progress") or {}).get("bytes", 0) > seen["progress"]["bytes"]
                             and p, 20, message=lambda: f"mirror1's progress to move on (now {part()})")
            assert later["state"] == "syncing", later
            run = wait_run_finished(master.url, master.admin_token, run_id, timeout=60)
        # Never given up on: a part that timed out and then succeeded would make a late success (warning).
        assert run["state"] == "success" and run["warning"] is None, run
        assert "timeout" not in states, states
        [final] = run["slaves"]
        assert final["state"] == "success" and final["error"] is None, final
        pulled_for = _time(final["finished_at"]) - _time(final["started_at"])
        assert pulled_for > START_TIMEOUT, f"the pull took {pulled_for:.1f} s, not longer than the start timeout"
        assert_trees_equal(tree, slave.tree("big"))
    finally:
        slave.stop()


def _time(text):
    return datetime.datetime.fromisoformat(text).timestamp()
