"""Fan-out with real processes: a silent slave holds nothing hostage, and each slave gets exactly its run's tree."""

import os
import re
import shutil

import pytest
import requests

from common import digests
from slave import watch
from tests.integration.conftest import ApiClient
from tests.support import btrfs as btrfs_mount
from tests.support.hostile_http import json_answer, scripted_server
from tests.support.processes import DEFAULT_JOIN_TOKEN, start_slave, wait_for, wait_run_finished
from tests.support.trees import assert_same_with_rsync, assert_trees_equal, describe_tree, mutate_tree

MASTER_ENV = {"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN, "MIRRORSYNC_CATCHUP_INTERVAL": "0.3",
              "MIRRORSYNC_HEARTBEAT_TIMEOUT": "3", "MIRRORSYNC_DISPATCH_TIMEOUT": "2",
              # The silent slave's part must stay open for the whole test: no start timeout either.
              "MIRRORSYNC_SLAVE_START_TIMEOUT": "3600"}


def part_of(api, run_id, slave):
    return {entry["slave"]: entry for entry in api.get(f"/api/v1/runs/{run_id}").json()["slaves"]}.get(slave)


def wait_part(api, run_id, slave, state, timeout=30):
    return wait_for(lambda: (part := part_of(api, run_id, slave)) and part["state"] == state and part, timeout,
                    message=lambda: f"{slave}'s part of run {run_id} to be {state} (now {part_of(api, run_id, slave)})")


@pytest.fixture
def silent_slave(master):
    """An enrolled slave that accepts every order with 202 and never reports nor heartbeats."""
    with scripted_server(json_answer(202, '{"state": "accepted"}')) as server:
        answer = requests.post(master.url + "/api/v1/slaves/register", timeout=5,
                               json={"name": "silent", "url": server.url},
                               headers={"Authorization": f"Bearer {DEFAULT_JOIN_TOKEN}"})
        assert answer.status_code == 201, answer.text
        yield server


@pytest.fixture
def master(master_factory, tmp_path):
    return master_factory(tmp_path / "master", extra_env=MASTER_ENV)


@pytest.fixture
def mirror1(request, master, tmp_path):
    slave = start_slave(tmp_path / "mirror1", "mirror1", master.url, log_dir=tmp_path / "logs")
    request.addfinalizer(slave.stop)
    return slave


def trigger(api, name):
    answer = api.post(f"/api/v1/projects/{name}/syncs")
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def test_a_silent_slave_holds_back_no_upstream_pull_no_other_project_and_no_other_slave(
        master, silent_slave, mirror1, upstream, tmp_path):
    api = ApiClient(master.url, master.admin_token)
    for name in ("alpha", "beta"):
        assert api.post("/api/v1/projects", json={"name": name, "upstream": upstream.url}).status_code == 201
    first = trigger(api, "alpha")
    wait_part(api, first, "mirror1", "success")
    assert api.get(f"/api/v1/runs/{first}").json()["state"] == "distributing", "silent has not reported"

    # The next pull of the same project starts at once, and mirror1 gets the new tree.
    mutate_tree(upstream.tree)
    second = trigger(api, "alpha")
    wait_part(api, second, "mirror1", "success")
    assert_trees_equal(upstream.tree, mirror1.tree("alpha"))
    assert_trees_equal(upstream.tree, master.data_dir / "alpha")
    runs = {run["id"]: run["state"] for run in api.get("/api/v1/projects/alpha/runs").json()}
    assert runs == {first: "distributing", second: "distributing"}
    # Run 1's snapshot stays while the silent slave may still pull it; it is still run 1's tree.
    assert (master.data_dir / ".snapshots" / "alpha" / str(first)).is_dir()

    # Another project is not held back either.
    other = trigger(api, "beta")
    wait_part(api, other, "mirror1", "success")
    assert_trees_equal(upstream.tree, mirror1.tree("beta"))
    orders = [body for method, path, _, body in silent_slave.requests if path == "/api/v1/syncs"]
    assert len(orders) == 3, "the silent slave was ordered every run"


def test_a_dead_slave_is_given_up_after_the_start_timeout_and_its_snapshot_is_pruned(
        master_factory, tmp_path, upstream):
    env = dict(MASTER_ENV, MIRRORSYNC_SLAVE_START_TIMEOUT="1")
    master = master_factory(tmp_path / "master", extra_env=env)
    api = ApiClient(master.url, master.admin_token)
    with scripted_server(json_answer(202, '{"state": "accepted"}')) as server:
        requests.post(master.url + "/api/v1/slaves/register", timeout=5, json={"name": "dead", "url": server.url},
                      headers={"Authorization": f"Bearer {DEFAULT_JOIN_TOKEN}"}).raise_for_status()
        assert api.post("/api/v1/projects", json={"name": "alpha", "upstream": upstream.url}).status_code == 201
        first = wait_run_finished(master.url, master.admin_token, trigger(api, "alpha"), timeout=30)
        assert first["state"] == "failed" and "SLAVE_START_TIMEOUT" in first["slaves"][0]["error"], first
        mutate_tree(upstream.tree)
        second = wait_run_finished(master.url, master.admin_token, trigger(api, "alpha"), timeout=30)
        (upstream.tree / "third.txt").write_text("third\n")
        third = wait_run_finished(master.url, master.admin_token, trigger(api, "alpha"), timeout=30)
    # Left: the newest tree, and the one before, which the next pull starts from. The dead slave's
    # run 1 went, though its part failed: by the sweep, or made into the tree of run 3.
    snapshots = master.data_dir / ".snapshots" / "alpha"
    wait_for(lambda: sorted(p.name for p in snapshots.iterdir() if not p.name.startswith(".")) ==
             sorted([str(second["id"]), str(third["id"])]), 20,
             message=lambda: f"only the two newest snapshots left ({list(snapshots.iterdir())})")
    assert_trees_equal(upstream.tree, master.data_dir / "alpha")


def more_awkward_changes(root):
    """What mutate_tree leaves out: a rename, a directory replaced by a symlink, a new hard link, and a
    hard-link group left with one file by deletions alone (rsync names the deleted paths, not the file
    left, which upstream is no hard link any more)."""
    os.rename(root / "small.txt", root / "small-renamed.txt")
    shutil.rmtree(root / "a" / "new-dir")
    os.symlink("big.bin", root / "a" / "new-dir")
    os.link(root / "new-file.txt", root / "new-file-link.txt")
    os.remove(root / "a" / "b" / "hl-y")   # the group's name
    os.remove(root / "hl-z")               # a/hl-x is left alone


@pytest.fixture(params=["delay", "atomic"])
def synced(request, master, mirror1, upstream):
    """mirror1 holds run 1 of project ``tricky``, pulled in full, published in place or atomically."""
    return pulled_once(master, mirror1, upstream, request.param)


def pulled_once(master, slave, upstream, publish):
    """``slave``, the master's only one, holds run 1 of a new project ``tricky``: (api, run 1)."""
    api = ApiClient(master.url, master.admin_token)
    wait_for(lambda: [s["state"] for s in api.get("/api/v1/slaves").json()] == ["online"], 20,
             message=f"{slave.slave_name} online")
    assert api.post("/api/v1/projects", json={"name": "tricky", "upstream": upstream.url,
                                              "publish": publish}).status_code == 201
    first = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert first["state"] == "success", first
    assert first["digest"] and first["slaves"][0]["digest"] == first["digest"]
    slave.wait_for_log(f"pulled tricky for run {first['id']}")   # its tree noted and watched, after the report
    return api, first


def test_a_change_list_pull_gives_the_same_tree_as_a_full_pull_for_awkward_changes(
        synced, master, mirror1, upstream, tmp_path):
    api, first = synced
    atomic = os.path.islink(mirror1.tree("tricky"))
    before = os.path.realpath(mirror1.tree("tricky"))
    published_before = describe_tree(before)
    mutate_tree(upstream.tree)
    more_awkward_changes(upstream.tree)
    second = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert second["state"] == "success", second
    assert "(change list)" in mirror1.log_text(), "the second pull moved the change list only"
    assert "verified by the paths it moved, no walk" in mirror1.log_text()
    assert second["slaves"][0]["digest"] == second["digest"] != first["digest"]
    assert_trees_equal(upstream.tree, mirror1.tree("tricky"))
    assert_same_with_rsync(upstream.tree, mirror1.tree("tricky"))
    # The same as the master's snapshot, which a full pull copies.
    assert_trees_equal(master.data_dir / "tricky", mirror1.tree("tricky"))
    if atomic:
        # A new snapshot went public, and the one readers may still be in is exactly as it was,
        # though it shares its unchanged files (and a file whose mode alone changed) with the new one.
        assert os.path.realpath(mirror1.tree("tricky")) != before
        assert describe_tree(before) == published_before

        # A run that changes nothing publishes nothing new, and copies nothing.
        snapshots = sorted(os.listdir(os.path.dirname(before)))
        third = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
        assert third["state"] == "success" and third["slaves"][0]["digest"] == third["digest"], third
        assert sorted(os.listdir(os.path.dirname(before))) == snapshots
        assert_trees_equal(upstream.tree, mirror1.tree("tricky"))


def test_a_name_added_to_a_big_directory_moves_that_name_only(synced, master, mirror1, upstream):
    """The directory is in the change list (its time moved), but a changes-only pull does not walk it:
    the slave's rsync looks at the listed entries, not at the directory's other hundred files."""
    api, first = synced
    big = upstream.tree / "big"
    big.mkdir()
    for number in range(100):
        (big / f"file-{number:03d}").write_text(f"{number}\n")
    os.utime(big, (1_600_000_000, 1_600_000_000))   # a name added now moves its time, to the second
    second = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert second["state"] == "success", second
    (big / "one-more").write_text("new\n")
    third = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert third["state"] == "success" and third["slaves"][0]["digest"] == third["digest"], third
    assert "(change list)" in mirror1.log_text()
    stats = third["slaves"][0]["stats"]
    assert stats["files_total"] <= 3, f"the pull looked at {stats['files_total']} entries (big/ walked whole?)"
    argv = pull_argv(mirror1, "tricky", third)
    assert "--no-recursive" in argv and "--delete-delay" not in argv, "deletions come from the list, after"
    assert_trees_equal(upstream.tree, mirror1.tree("tricky"))


def pull_argv(slave, project, run):
    """The rsync command line of ``run``'s pull: its log's first line of the rsync's own (``$ ...``); a line
    of the slave's (``# ...``), such as why it pulled in full, can come before it."""
    said = (slave.state_dir / "logs" / project / f"{run['id']}.log").read_text().splitlines()
    return next(line for line in said if line.startswith("$ ")).split()


def test_a_changes_only_pull_sends_small_files_whole_and_keeps_the_delta_for_a_big_one(
        synced, master, mirror1, upstream):
    """rsync's delta algorithm can only reuse what the slave holds at the changed paths: for a few small
    files its checksum exchange costs more than it saves, so they go whole; a big file rewritten in
    one place still moves as the difference."""
    api, first = synced
    big = upstream.tree / "big.img"
    big.write_bytes(bytes(range(256)) * (8 << 10))   # 2 MiB
    os.utime(big, (1_600_000_000, 1_600_000_000))
    second = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert second["state"] == "success" and second["slaves"][0]["digest"] == second["digest"], second
    assert "(change list)" in mirror1.log_text()
    assert "--whole-file" in pull_argv(mirror1, "tricky", second), "nothing held at the path: whole files"

    with open(big, "r+b") as out:
        out.seek(1 << 20)
        out.write(b"changed in the middle")
    os.utime(big, (1_600_000_100, 1_600_000_100))
    third = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert third["state"] == "success" and third["slaves"][0]["digest"] == third["digest"], third
    assert "--whole-file" not in pull_argv(mirror1, "tricky", third), "2 MiB held at the path: the delta"
    received = third["slaves"][0]["stats"]["bytes_received"]
    assert received < 256 << 10, f"the slave received {received} bytes for a 21-byte change of a 2 MiB file"
    assert_trees_equal(upstream.tree, mirror1.tree("tricky"))


def test_a_slave_restarted_between_changes_only_pulls_reads_its_manifest_and_edits_back(
        synced, master, mirror1, upstream, tmp_path):
    """A changes-only pull appends what it changed to the saved manifest instead of writing it whole;
    a restarted slave reads both back, and its next pull is changes-only again, verified without a walk."""
    api, first = synced
    published = mirror1.state_dir / "published"
    whole = os.stat(published / "tricky.manifest.gz")
    (upstream.tree / "added-1.txt").write_text("one\n")
    second = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert second["state"] == "success" and second["slaves"][0]["digest"] == second["digest"], second
    mirror1.wait_for_log(f"pulled tricky for run {second['id']}")   # noted after the report went
    assert (published / "tricky.manifest.edits").is_file()
    assert os.stat(published / "tricky.manifest.gz").st_mtime_ns == whole.st_mtime_ns, "not written whole again"
    mirror1.stop()
    restarted = start_slave(mirror1.root, "mirror1", master.url, port=mirror1.port, log_dir=tmp_path / "logs")
    try:
        wait_for(lambda: [s["state"] for s in api.get("/api/v1/slaves").json()] == ["online"], 20,
                 message="mirror1 online again")
        (upstream.tree / "added-2.txt").write_text("two\n")
        third = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
        assert third["state"] == "success" and third["slaves"][0]["digest"] == third["digest"], third
        log = restarted.log_text()
        assert re.search(rf"run {third['id']} of tricky: \d+ paths changed, \d+ deleted \(change list\)", log), log
        assert f"run {third['id']} of tricky: verified by the paths it moved, no walk" in log, log
        # Its own links and snapshots pruned before the stop did not count as edits while it was down.
        assert "changed while this slave was not running" not in log and "repaired" not in log, log
        assert_trees_equal(upstream.tree, restarted.tree("tricky"))
    finally:
        restarted.stop()


def test_a_slave_tree_changed_behind_its_back_is_noticed_and_pulled_in_full(synced, master, mirror1, upstream):
    """A name removed (or made, or renamed) anywhere moves a directory's time: the next pull sees it
    before moving the change list, names the paths from a walk, and pulls in full, which repairs them."""
    api, first = synced
    public = mirror1.tree("tricky")
    os.unlink(public / "empty")        # files no change list of the next run will name
    os.chmod(public / "small.txt", 0o600)
    (upstream.tree / "new-upstream.txt").write_text("one more file\n")
    second = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert second["state"] == "success", second
    assert "changed outside mirror-sync, first at: 'empty', 'small.txt'; pulled in full" in mirror1.log_text()
    assert "changed outside mirror-sync" in second["slaves"][0]["warning"], "the master's part says so too"
    assert second["slaves"][0]["digest"] == second["digest"]
    assert_trees_equal(upstream.tree, public)


def test_directories_holding_directories_replaced_by_a_file_and_a_symlink_reach_the_slave(
        synced, master, mirror1, upstream):
    """rsync names what it deleted under such a directory, and the parent of a deleted path is then
    below a file: the tree is still described without a walk, on the master and on the slave."""
    api, first = synced
    for name in ("nested", "linked"):
        (upstream.tree / name / "inner").mkdir(parents=True)
        (upstream.tree / name / "inner" / "leaf.txt").write_text(f"{name}\n")
    second = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert second["state"] == "success", second
    for name in ("nested", "linked"):
        shutil.rmtree(upstream.tree / name)
    (upstream.tree / "nested").write_text("a file now\n")
    os.symlink("a/b", upstream.tree / "linked")
    third = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert third["state"] == "success", third
    assert third["slaves"][0]["digest"] == third["digest"], third
    assert f"run {third['id']}'s tree described from the" in master.log_text()
    for tree in (master.data_dir / "tricky", mirror1.tree("tricky")):
        assert_trees_equal(upstream.tree, tree)


def rewrite_keeping_size_and_time(path, content):
    """Rewrite ``path`` with ``content`` of its size and put its times back, as a careful intruder would."""
    before = path.stat()
    assert len(content) == before.st_size
    path.write_bytes(content)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_file_rewritten_in_place_between_walks_is_seen_and_the_next_pull_repairs_it(
        synced, master, mirror1, upstream):
    """No walk is due (VERIFY_INTERVAL is an hour) and no directory's time moves: the slave's watch on
    its published tree saw the edits, so the next pull names them and pulls in full."""
    api, first = synced
    public = mirror1.tree("tricky")
    (public / "a" / "b" / "sibling.txt").write_bytes(b"rewritten behind the slave's back\n")
    os.chmod(public / "run.sh", 0o600)
    (upstream.tree / "new-upstream.txt").write_text("one more file\n")
    second = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert second["state"] == "success", second
    assert "changed outside mirror-sync, first at: 'a/b/sibling.txt', 'run.sh'; pulled in full" \
        in mirror1.log_text(), mirror1.log_tail()
    assert "changed outside mirror-sync" in second["slaves"][0]["warning"]
    assert second["slaves"][0]["digest"] == second["digest"]
    assert_trees_equal(upstream.tree, public)

    # The repaired tree is watched again, and the slave's own pull did not count as an edit.
    (upstream.tree / "one-more.txt").write_text("and another\n")
    third = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert third["state"] == "success" and not third["slaves"][0]["warning"], third
    assert f"run {third['id']} of tricky: verified by the paths it moved, no walk" in mirror1.log_text()
    mirror1.wait_for_log(f"pulled tricky for run {third['id']}")   # watched again once its report went

    # Rewritten with its size and time put back: rsync's quick check alone would keep it.
    rewrite_keeping_size_and_time(public / "a" / "b" / "c" / "deep.txt", b"DEEP\n")
    fourth = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert fourth["state"] == "success", fourth
    assert "changed outside mirror-sync, first at: 'a/b/c/deep.txt'" in (fourth["slaves"][0]["warning"] or ""), \
        fourth
    assert_trees_equal(upstream.tree, public)


def test_more_edits_behind_the_slaves_back_than_it_notes_make_the_next_pull_compare_contents(
        synced, master, mirror1, upstream):
    """Past the paths the watch keeps, the full pull compares every file's content (--checksum): a file
    rewritten with its size and time put back among a thousand new ones is repaired too."""
    api, first = synced
    public = mirror1.tree("tricky")
    for number in range(watch.KEPT_PATHS + 1):
        (public / "dir with space" / f"dropped-{number}").write_bytes(b"")
    rewrite_keeping_size_and_time(public / "a" / "b" / "c" / "deep.txt", b"DEEP\n")
    second = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert second["state"] == "success", second
    assert "changed outside mirror-sync" in second["slaves"][0]["warning"], second
    assert "this pull compares every file's content (--checksum)" in mirror1.log_text()
    assert "--checksum" in pull_argv(mirror1, "tricky", second)
    assert_trees_equal(upstream.tree, public)


REPAIRING = {"MIRRORSYNC_REPAIR_DELAY": "0.3"}


@pytest.fixture(params=["delay", "atomic"])
def repairing(request, master, upstream, tmp_path):
    """A slave that pulls an edited tree again 0.3 s after the last edit, holding run 1 of ``tricky``."""
    slave = start_slave(tmp_path / "fixer", "fixer", master.url, log_dir=tmp_path / "logs", extra_env=REPAIRING)
    request.addfinalizer(lambda: slave.stop())
    return (*pulled_once(master, slave, upstream, request.param), slave)


def test_an_edited_tree_left_alone_is_pulled_again_from_the_run_it_holds_without_a_new_run(
        repairing, master, upstream):
    api, first, slave = repairing
    public = slave.tree("tricky")
    rewrite_keeping_size_and_time(public / "a" / "b" / "c" / "deep.txt", b"DEEP\n")
    os.chmod(public / "run.sh", 0o600)
    (public / "dir with space" / "planted.txt").write_text("not from upstream\n")
    slave.wait_for_log(f"tricky: repaired: its tree is run {first['id']}'s again")
    assert "tricky: its published tree was edited outside mirror-sync, first at 'a/b/c/deep.txt'" in slave.log_text()
    assert_trees_equal(upstream.tree, public)
    assert [run["id"] for run in api.get("/api/v1/projects/tricky/runs").json()] == [first["id"]]
    assert api.get(f"/api/v1/runs/{first['id']}").json()["slaves"] == first["slaves"], "the master is not asked"

    def last_edit():
        return api.get("/api/v1/slaves/fixer").json()["last_edit"] or {}
    wait_for(lambda: last_edit().get("repaired_at"), 10, message="the master told of the edit and its repair")
    assert (last_edit()["project"], last_edit()["path"]) == ("tricky", "a/b/c/deep.txt"), last_edit()
    assert last_edit()["seen_at"] <= last_edit()["repaired_at"]
    assert "slave fixer: its published tree of tricky was edited outside mirror-sync" in master.log_text()

    # The repaired tree is watched again, and the repair's own writes did not count.
    (public / "a" / "b" / "sibling.txt").write_bytes(b"again\n")
    wait_for(lambda: slave.log_text().count("tricky: repaired:") == 2, 20, message="repaired again")
    assert_trees_equal(upstream.tree, public)


def test_a_tree_changed_while_its_slave_was_down_is_repaired_after_the_start(repairing, master, upstream, tmp_path):
    api, first, slave = repairing
    slave.stop()
    public = slave.tree("tricky")
    rewrite_keeping_size_and_time(public / "a" / "b" / "c" / "deep.txt", b"DEEP\n")   # only its ctime moves
    restarted = start_slave(slave.root, "fixer", master.url, port=slave.port, log_dir=tmp_path / "logs",
                            extra_env=REPAIRING)
    try:
        restarted.wait_for_log(f"tricky: repaired: its tree is run {first['id']}'s again")
        assert "tricky: its published tree was changed while this slave was not running, first at: " \
               "'a/b/c/deep.txt'" in restarted.log_text()
        assert_trees_equal(upstream.tree, public)
        assert (public / "a" / "b" / "c" / "deep.txt").read_bytes() == (upstream.tree / "a/b/c/deep.txt").read_bytes()
        # Watched from the start on: an edit now is repaired too, with no pull in between.
        (public / "top-level.txt").write_text("planted after the start\n")
        wait_for(lambda: restarted.log_text().count("tricky: repaired:") == 2, 20, message="repaired again")
        assert_trees_equal(upstream.tree, public)
    finally:
        restarted.stop()


def test_a_file_changed_in_place_is_found_by_the_walk_and_repaired_by_catch_up(master, upstream, tmp_path):
    """What leaves every directory as it was (a mode, a time, a size rewritten in place) where no watch
    sees it (WATCH_TREES off, the slave stopped) shows when the slave walks its tree: at every pull with
    VERIFY_INTERVAL=0. Its part fails naming the path, and catch-up pulls in full."""
    env = {"MIRRORSYNC_VERIFY_INTERVAL": "0", "MIRRORSYNC_WATCH_TREES": "false"}
    slave = start_slave(tmp_path / "walker", "walker", master.url, log_dir=tmp_path / "logs", extra_env=env)
    try:
        api = ApiClient(master.url, master.admin_token)

        def online():
            wait_for(lambda: [s["state"] for s in api.get("/api/v1/slaves").json()] == ["online"], 20,
                     message="walker online")
        online()
        assert api.post("/api/v1/projects", json={"name": "tricky", "upstream": upstream.url}).status_code == 201
        assert wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))["state"] == "success"
        slave.stop()
        public = slave.tree("tricky")
        os.chmod(public / "small.txt", 0o600)
        slave = start_slave(tmp_path / "walker", "walker", master.url, port=slave.port,
                            log_dir=tmp_path / "logs", extra_env=env)
        online()
        (upstream.tree / "new-upstream.txt").write_text("one more file\n")
        second = trigger(api, "tricky")
        wait_for(lambda: f"differs from run {second}'s, first at: 'small.txt'" in slave.log_text(), 30,
                 message="the slave to find its tree differs from the run's")
        repaired = wait_for(lambda: (run := api.get(f"/api/v1/runs/{second}").json())["state"] == "success"
                            and run, 30, message="catch-up to repair the slave's tree")
        assert "after the run ended" in repaired["warning"], repaired
        assert repaired["slaves"][0]["digest"] == repaired["digest"]
        assert repaired["slaves"][0]["attempts"] == 2
        assert_trees_equal(upstream.tree, public)
    finally:
        slave.stop()


def test_a_pull_starts_from_a_snapshot_no_slave_needs_and_still_gives_the_upstream_tree(
        synced, master, mirror1, upstream):
    """Run 3 starts from run 1's tree made into run 2's (the replay of run 2's changes), not from a
    copy, though the sweep runs every 0.3 s: it keeps that tree for the next pull. After awkward
    changes on both runs, the master's tree and the slave's are upstream's."""
    api, first = synced
    mutate_tree(upstream.tree)
    second = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert second["state"] == "success", second
    more_awkward_changes(upstream.tree)
    third = wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))
    assert third["state"] == "success", third
    assert f"snapshot {first['id']}, which no slave needs any more, starts run {third['id']}'s tree" \
        in master.log_text()
    snapshots = master.data_dir / ".snapshots" / "tricky"
    assert not (snapshots / str(first["id"])).exists()
    assert (snapshots / str(second["id"])).is_dir(), "kept: the next pull starts from it"
    for tree in (master.data_dir / "tricky", mirror1.tree("tricky")):
        assert_trees_equal(upstream.tree, tree)
        assert_same_with_rsync(upstream.tree, tree)
    assert third["slaves"][0]["digest"] == third["digest"]


def three_awkward_runs(master, upstream):
    """Project ``tricky`` pulled three times, every awkward change between them; each run succeeds."""
    api = ApiClient(master.url, master.admin_token)
    wait_for(lambda: [s["state"] for s in api.get("/api/v1/slaves").json()] == ["online"], 20,
             message="mirror1 online")
    assert api.post("/api/v1/projects", json={"name": "tricky", "upstream": upstream.url}).status_code == 201
    runs = [wait_run_finished(master.url, master.admin_token, trigger(api, "tricky"))]
    for change in (mutate_tree, more_awkward_changes):
        change(upstream.tree)
        runs.append(wait_run_finished(master.url, master.admin_token, trigger(api, "tricky")))
    assert [run["state"] for run in runs] == ["success"] * 3, runs
    return runs


@pytest.mark.parametrize("verify_interval, deletions", [("0", "listed"), ("3600", "listed"), ("3600", "rsync")])
def test_the_master_describes_a_pull_from_what_rsync_itemized_as_a_walk_would(
        master_factory, upstream, tmp_path, verify_interval, deletions):
    """Between walks (VERIFY_INTERVAL) the master's new tree is described from the previous one and
    the paths rsync itemized. With 0 it walks every time and compares the two: after every awkward
    kind of change they agree, and the slave gets upstream's tree either way, whether rsync deletes
    what upstream no longer has or the master does (UPSTREAM_DELETIONS)."""
    master = master_factory(tmp_path / "master", extra_env=dict(
        MASTER_ENV, MIRRORSYNC_VERIFY_INTERVAL=verify_interval, MIRRORSYNC_UPSTREAM_DELETIONS=deletions))
    slave = start_slave(tmp_path / "mirror1", "mirror1", master.url, log_dir=tmp_path / "logs")
    try:
        runs = three_awkward_runs(master, upstream)
        text = master.log_text()
        assert "differs from a walk" not in text
        said = "a walk of run {}'s tree agrees" if verify_interval == "0" else "run {}'s tree described from the"
        for run in runs[1:]:
            assert said.format(run["id"]) in text
        # listed: after the first tree, rsync names every entry and the master deletes what it did not
        # name, instead of rsync looking at every directory a second time; the unchanged names stay out
        # of the log. rsync (the default): --delete-delay, as ever.
        api = ApiClient(master.url, master.admin_token)
        for run in runs[1:]:
            pull_log = api.get(f"/api/v1/runs/{run['id']}/log").text
            listed = f"upstream no longer has deleted from run {run['id']}'s tree" in text
            if deletions == "listed":
                assert "--info=name2" in pull_log and "--delete-delay" not in pull_log, pull_log
                assert ".f          small" not in pull_log and "hf          " not in pull_log, pull_log
                assert listed
            else:
                assert "--delete-delay" in pull_log and "--info=name2" not in pull_log and not listed, pull_log
        assert "cannot say what upstream deleted" not in text
        for tree in (master.data_dir / "tricky", slave.tree("tricky")):
            assert_trees_equal(upstream.tree, tree)
            assert_same_with_rsync(upstream.tree, tree)
        assert runs[-1]["slaves"][0]["digest"] == runs[-1]["digest"]
        walked = digests.manifest(master.data_dir / "tricky")
        assert digests.digest(walked) == runs[-1]["digest"], \
            digests.first_differences(digests.load(master.data_dir / ".snapshots" / "tricky" /
                                                   f".manifest-{runs[-1]['id']}"), walked)
    finally:
        slave.stop()


@pytest.fixture
def btrfs_data_dir(tmp_path):
    with btrfs_mount.mounted(str(tmp_path)) as point:
        yield point


def test_on_btrfs_each_pull_is_a_snapshot_of_the_last_and_slaves_get_upstreams_tree(
        btrfs_data_dir, master_factory, upstream, tmp_path):
    """DATA_DIR on btrfs: every tree is a subvolume, each pull starting as a btrfs snapshot of the one
    before. rsync's itemized changes still describe it as a walk would (VERIFY_INTERVAL=0 compares the
    two at every pull), the slave gets upstream's tree after every awkward change, and the sweep
    deletes the snapshots no slave needs."""
    data_dir = os.path.join(btrfs_data_dir, "master")
    master = master_factory(data_dir, extra_env=dict(MASTER_ENV, MIRRORSYNC_VERIFY_INTERVAL="0",
                                                     MIRRORSYNC_SNAPSHOT_METHOD="btrfs"))
    slave = start_slave(tmp_path / "mirror1", "mirror1", master.url, log_dir=tmp_path / "logs")
    try:
        runs = three_awkward_runs(master, upstream)
        text = master.log_text()
        for before, run in zip(runs, runs[1:]):
            assert f"run {run['id']}'s tree starts as a btrfs snapshot of {before['id']}" in text
            assert f"a walk of run {run['id']}'s tree agrees" in text
        assert "differs from a walk" not in text
        for tree in (master.data_dir / "tricky", slave.tree("tricky")):
            assert_trees_equal(upstream.tree, tree)
            assert_same_with_rsync(upstream.tree, tree)
        assert runs[-1]["slaves"][0]["digest"] == runs[-1]["digest"]
        wait_for(lambda: btrfs_mount.subvolumes(btrfs_data_dir, data_dir) == [f".snapshots/tricky/{runs[-1]['id']}"],
                 20, message=lambda: f"only the live snapshot left ({btrfs_mount.subvolumes(btrfs_data_dir, data_dir)})")
    finally:
        slave.stop()
        master.stop()
