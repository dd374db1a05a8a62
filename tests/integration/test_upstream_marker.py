"""upstream_marker with a real rsync daemon that logs every file it serves: an unchanged upstream costs one file."""

import os

import pytest

from tests.support.processes import wait_run_finished
from tests.support.rsyncd import RsyncDaemon
from tests.support.trees import write_file as write

MTIME = 1_700_000_000


@pytest.fixture
def arch(tmp_path):
    """An Arch-style tier-1 tree: lastupdate, lastsync and a few packages."""
    tree = tmp_path / "archlinux"
    write(tree, "lastupdate", "1700000000\n", MTIME)
    write(tree, "lastsync", "1700000000\n", MTIME)
    for number in range(20):
        write(tree, f"core/os/x86_64/pkg{number}-1-x86_64.pkg.tar.zst", f"package {number}\n" * 100, MTIME)
    with RsyncDaemon(tmp_path / "rsyncd", {"archlinux": tree}, transfer_logging=True) as daemon:
        yield tree, daemon


def sync(api, master):
    response = api.post("/api/v1/projects/archlinux/syncs")
    assert response.status_code == 202, response.text
    return wait_run_finished(master.url, master.admin_token, response.json()["id"], timeout=30)


def test_an_unchanged_lastupdate_skips_the_pull_and_copies_only_lastsync(api, master, arch):
    tree, daemon = arch
    created = api.post("/api/v1/projects", json={"name": "archlinux", "upstream": daemon.url("archlinux"),
                                                 "upstream_marker": "lastupdate"})
    assert created.status_code == 201, created.text
    first = sync(api, master)
    assert first["state"] == "success" and first["skipped"] is False
    assert len(daemon.sent_files()) >= 22, "the first pull takes everything"
    local = master.data_dir / "archlinux"

    # Tier 0 rewrites lastsync every minute; the packages and lastupdate stay as they were.
    write(tree, "lastsync", "1700000600\n", MTIME + 600)
    offset = len(daemon.read_log())
    skipped = sync(api, master)
    assert skipped["state"] == "success" and skipped["skipped"] is True, skipped
    served = daemon.sent_files(offset)
    # The marker fetched last time is kept: unchanged, it does not even travel again.
    assert sorted(os.path.basename(path) for path in served) == ["lastsync"], served
    assert (local / "lastsync").read_text() == "1700000600\n", "lastsync is copied as received, in any case"
    assert skipped["slaves"] == []
    assert skipped["stats"]["bytes_received"] is None
    log = api.get(f"/api/v1/runs/{skipped['id']}/log").text
    assert "lastupdate is unchanged since the last good pull: skipped (copied lastsync)" in log

    # A new package database: lastupdate changes and the full pull runs again.
    write(tree, "core/os/x86_64/pkg99-1-x86_64.pkg.tar.zst", "new package\n", MTIME + 900)
    write(tree, "lastupdate", "1700000900\n", MTIME + 900)
    offset = len(daemon.read_log())
    full = sync(api, master)
    assert full["state"] == "success" and full["skipped"] is False
    assert (local / "core/os/x86_64/pkg99-1-x86_64.pkg.tar.zst").exists()
    assert any(path.endswith("pkg99-1-x86_64.pkg.tar.zst") for path in daemon.sent_files(offset))
    project = api.get("/api/v1/projects/archlinux").json()
    assert project["status"] == "success"


def test_a_change_past_the_first_megabyte_of_a_large_marker_is_seen(api, master, tmp_path):
    """A file list used as the marker runs to megabytes; all of it counts, not only its start."""
    tree = tmp_path / "fedora"
    head = "".join(f"{MTIME}\tf\t100\tpath/{number:07d}.rpm\n" for number in range(40000))  # about 1.3 MB
    write(tree, "fullfiletimelist-fedora", head + "1700000000\tf\t1\tlast\n", MTIME)
    write(tree, "last", "1", MTIME)
    with RsyncDaemon(tmp_path / "rsyncd", {"fedora": tree}) as daemon:
        created = api.post("/api/v1/projects", json={"name": "fedora", "upstream": daemon.url("fedora"),
                                                     "upstream_marker": "fullfiletimelist-fedora"})
        assert created.status_code == 201, created.text
        response = api.post("/api/v1/projects/fedora/syncs")
        assert wait_run_finished(master.url, master.admin_token, response.json()["id"])["state"] == "success"
        write(tree, "fullfiletimelist-fedora", head + "1700000600\tf\t2\tlast\n", MTIME + 600)
        write(tree, "last", "22", MTIME + 600)
        response = api.post("/api/v1/projects/fedora/syncs")
        second = wait_run_finished(master.url, master.admin_token, response.json()["id"])
    assert second["state"] == "success" and second["skipped"] is False, second
    assert (master.data_dir / "fedora" / "last").read_text() == "22"


def test_a_marker_upstream_no_longer_has_is_not_taken_for_unchanged(api, master, arch):
    tree, daemon = arch
    api.post("/api/v1/projects", json={"name": "archlinux", "upstream": daemon.url("archlinux"),
                                       "upstream_marker": "lastupdate"})
    assert sync(api, master)["skipped"] is False
    os.unlink(tree / "lastupdate")
    again = sync(api, master)
    assert again["state"] == "success" and again["skipped"] is False, "no marker: a full pull"
    assert not (master.data_dir / "archlinux" / "lastupdate").exists()
