"""Publishing on a slave: atomic snapshots swapped in by one rename, migration both ways, pruning, leftovers.

Most tests play rsync by writing files into the snapshot being built; the last
ones go through the slave's API and sync worker with a runner that does the same.
"""

import json
import os

import pytest

from common.clock import FakeClock
from common.rsync import result_from_exit
from common.signing import signature_headers
from slave import create_app
from slave import publishing
from slave.credentials import Credentials, CredentialStore
from slave.publishing import SNAPSHOTS_DIR, Publisher, PublishError
from slave.syncs import SyncRecords

PROJECT = "debian"


def write_tree(root, files):
    for relpath, content in files.items():
        path = os.path.join(root, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as stream:
            stream.write(content)


def read_tree(root):
    tree = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path) as stream:
                tree[os.path.relpath(path, root)] = stream.read()
    return tree


@pytest.fixture
def public(tmp_path):
    path = tmp_path / "public"
    path.mkdir()
    return path


@pytest.fixture
def publisher(public):
    return Publisher(str(public), FakeClock())


@pytest.fixture
def no_exchange(monkeypatch):
    """A file system where two paths cannot be exchanged in one step."""
    monkeypatch.setattr(publishing, "_exchange", lambda first, second: False)


def snapshots(public):
    return sorted(os.listdir(public / SNAPSHOTS_DIR / PROJECT))


def publish(publisher, run_id, files, mode="atomic"):
    """One good pull: prepare, "rsync" ``files``, commit, prune; returns the Publication."""
    publication = publisher.prepare(PROJECT, run_id, mode)
    write_tree(publication.destination, files)
    publisher.prune(PROJECT, publisher.commit(publication))
    return publication


def test_the_first_atomic_publish_makes_the_project_a_relative_link_to_its_snapshot(public, publisher):
    publication = publish(publisher, 1, {"INDEX": "one\n", "pool/a.deb": "a1"})
    tree = public / PROJECT
    assert tree.is_symlink()
    assert os.readlink(tree) == f"{SNAPSHOTS_DIR}/{PROJECT}/1"
    assert read_tree(tree) == {"INDEX": "one\n", "pool/a.deb": "a1"}
    assert snapshots(public) == ["1"]
    # Nothing to link against yet, and the runner's --delay-updates is switched off for snapshots.
    assert publication.options == ("--no-delay-updates",)


def test_the_tree_keeps_working_when_public_dir_moves(tmp_path, public, publisher):
    publish(publisher, 1, {"INDEX": "one\n"})
    moved = tmp_path / "moved"
    os.rename(public, moved)
    assert (moved / PROJECT / "INDEX").read_text() == "one\n"


def test_a_second_publish_swaps_the_link_and_keeps_the_old_tree_as_previous(public, publisher):
    publish(publisher, 1, {"INDEX": "one\n", "old-only": "x"})
    second = publisher.prepare(PROJECT, 2, "atomic")
    live = str(public / SNAPSHOTS_DIR / PROJECT / "1")
    assert second.options == ("--no-delay-updates", f"--link-dest={live}")
    write_tree(second.destination, {"INDEX": "two\n", "new-only": "y"})
    # While the pull runs, readers still get the old tree whole.
    assert read_tree(public / PROJECT) == {"INDEX": "one\n", "old-only": "x"}
    publisher.prune(PROJECT, publisher.commit(second))
    assert os.readlink(public / PROJECT) == f"{SNAPSHOTS_DIR}/{PROJECT}/2"
    assert read_tree(public / PROJECT) == {"INDEX": "two\n", "new-only": "y"}
    assert snapshots(public) == ["1", "2"]


def test_a_changes_only_pull_starts_from_hard_links_of_the_live_tree_and_leaves_it_as_it_was(public, publisher):
    publish(publisher, 1, {"INDEX": "one\n", "pool/a.deb": "a1", "pool/b.deb": "b1"})
    live = public / SNAPSHOTS_DIR / PROJECT / "1"
    os.chmod(live / "pool", 0o555)  # mirrored directories may be read-only
    before = {name: os.lstat(live / name) for name in ("INDEX", "pool/a.deb", "pool/b.deb", "pool")}
    staged = publisher.fill(publisher.prepare(PROJECT, 2, "atomic"), ("INDEX", "pool/b.deb", "pool/new.deb"))
    assert staged.options == ("--no-delay-updates",), "no --link-dest: the tree is there already"
    new = staged.destination
    assert read_tree(new) == {"INDEX": "one\n", "pool/a.deb": "a1", "pool/b.deb": "b1"}
    assert os.lstat(os.path.join(new, "pool/a.deb")).st_ino == before["pool/a.deb"].st_ino, "unchanged: shared"
    for name in ("INDEX", "pool/b.deb"):
        # A path the pull moves is a file of its own: rsync's in-place change of a mode or a time
        # must not reach the live tree through the shared inode.
        assert os.lstat(os.path.join(new, name)).st_ino != before[name].st_ino
        os.chmod(os.path.join(new, name), 0o600)
        assert os.lstat(live / name).st_mode == before[name].st_mode
    info = os.lstat(os.path.join(new, "pool"))
    assert (oct(info.st_mode), info.st_mtime_ns) == (oct(before["pool"].st_mode), before["pool"].st_mtime_ns)
    os.chmod(os.path.join(new, "pool"), 0o755)
    os.chmod(live / "pool", 0o755)
    publisher.prune(PROJECT, publisher.commit(staged))
    assert read_tree(public / PROJECT) == {"INDEX": "one\n", "pool/a.deb": "a1", "pool/b.deb": "b1"}


def test_filling_a_pull_in_place_changes_nothing(public, publisher):
    publication = publisher.prepare(PROJECT, 1, "delay")
    assert publisher.fill(publication, ("INDEX",)) is publication
    assert os.listdir(public) == []


def test_a_third_publish_prunes_the_oldest_snapshot(public, publisher):
    for run_id in (1, 2, 3):
        publish(publisher, run_id, {"INDEX": f"{run_id}\n"})
    assert snapshots(public) == ["2", "3"]
    assert (public / PROJECT / "INDEX").read_text() == "3\n"


def test_a_reader_inside_the_previous_tree_keeps_reading_it(public, publisher):
    publish(publisher, 1, {"INDEX": "one\n", "pool/a.deb": "a1"})
    pinned = os.open(public / PROJECT, os.O_RDONLY | os.O_DIRECTORY)
    try:
        publish(publisher, 2, {"INDEX": "two\n"})
        with open("pool/a.deb", opener=lambda path, flags: os.open(path, flags, dir_fd=pinned)) as stream:
            assert stream.read() == "a1"
    finally:
        os.close(pinned)


def test_a_failed_pull_removes_its_partial_snapshot_and_leaves_the_live_tree(public, publisher):
    publish(publisher, 1, {"INDEX": "one\n"})
    failed = publisher.prepare(PROJECT, 2, "atomic")
    write_tree(failed.destination, {"INDEX": "half"})
    publisher.abort(failed)
    assert snapshots(public) == ["1"]
    assert os.readlink(public / PROJECT) == f"{SNAPSHOTS_DIR}/{PROJECT}/1"
    assert read_tree(public / PROJECT) == {"INDEX": "one\n"}


def test_a_failed_first_pull_publishes_nothing(public, publisher):
    failed = publisher.prepare(PROJECT, 1, "atomic")
    write_tree(failed.destination, {"INDEX": "half"})
    publisher.abort(failed)
    assert not os.path.lexists(public / PROJECT)
    assert snapshots(public) == []


@pytest.mark.parametrize("exchange", ["renameat2", "two renames"])
def test_a_real_directory_becomes_a_snapshot_kept_as_the_previous_tree(request, public, publisher, exchange):
    if exchange == "two renames":
        request.getfixturevalue("no_exchange")
    write_tree(public / PROJECT, {"INDEX": "delay\n", "same": "s"})
    publication = publisher.prepare(PROJECT, 5, "atomic")
    assert publication.options[-1] == f"--link-dest={public / PROJECT}"
    write_tree(publication.destination, {"INDEX": "atomic\n", "same": "s"})
    publisher.prune(PROJECT, publisher.commit(publication))
    assert os.readlink(public / PROJECT) == f"{SNAPSHOTS_DIR}/{PROJECT}/5"
    assert read_tree(public / PROJECT) == {"INDEX": "atomic\n", "same": "s"}
    assert snapshots(public) == ["5", "legacy-20260101T000000Z"]
    assert read_tree(public / SNAPSHOTS_DIR / PROJECT / "legacy-20260101T000000Z") == {
        "INDEX": "delay\n", "same": "s"}
    publish(publisher, 6, {"INDEX": "six\n"})
    assert snapshots(public) == ["5", "6"]


@pytest.mark.parametrize("exchange", ["renameat2", "two renames"])
def test_back_to_delay_mode_the_project_is_a_real_directory_again(request, public, publisher, exchange):
    if exchange == "two renames":
        request.getfixturevalue("no_exchange")
    publish(publisher, 1, {"INDEX": "one\n"})
    publish(publisher, 2, {"INDEX": "two\n"})
    publication = publisher.prepare(PROJECT, 3, "delay")
    # Built beside the live snapshot, not through the link into it.
    assert publication.destination != str(public / PROJECT)
    assert publication.options[-1] == f"--link-dest={public / SNAPSHOTS_DIR / PROJECT / '2'}"
    write_tree(publication.destination, {"INDEX": "three\n"})
    publisher.prune(PROJECT, publisher.commit(publication))
    tree = public / PROJECT
    assert tree.is_dir() and not tree.is_symlink()
    assert read_tree(tree) == {"INDEX": "three\n"}
    assert snapshots(public) == ["2"], "the tree live before stays for its readers until the next publish"

    in_place = publisher.prepare(PROJECT, 4, "delay")
    assert (in_place.destination, in_place.options) == (str(tree), ())
    write_tree(in_place.destination, {"INDEX": "four\n"})
    publisher.prune(PROJECT, publisher.commit(in_place))
    assert read_tree(tree) == {"INDEX": "four\n"}
    assert os.listdir(public) == [PROJECT], "no snapshot is left once the project is back in delay mode"


def test_delay_mode_over_a_real_directory_pulls_in_place_as_before(public, publisher):
    write_tree(public / PROJECT, {"INDEX": "one\n"})
    publication = publisher.prepare(PROJECT, 1, "delay")
    assert publication.destination == str(public / PROJECT)
    assert (publication.options, publication.staged) == ((), None)
    assert publisher.commit(publication) is None
    assert not (public / SNAPSHOTS_DIR).exists()


def test_atomic_mode_refuses_to_replace_a_link_it_did_not_make(tmp_path, public, publisher):
    elsewhere = tmp_path / "big-disk"
    write_tree(elsewhere, {"INDEX": "theirs\n"})
    os.symlink(elsewhere, public / PROJECT)
    with pytest.raises(PublishError, match="move it away"):
        publisher.prepare(PROJECT, 1, "atomic")
    assert os.readlink(public / PROJECT) == str(elsewhere)
    # Delay mode pulls through such a link, as it always did.
    assert publisher.prepare(PROJECT, 1, "delay").destination == str(public / PROJECT)


def test_a_run_pulled_again_gets_a_snapshot_of_its_own(public, publisher):
    publish(publisher, 7, {"INDEX": "first\n"})
    publish(publisher, 7, {"INDEX": "again\n"})
    assert os.readlink(public / PROJECT) == f"{SNAPSHOTS_DIR}/{PROJECT}/7-2"
    assert snapshots(public) == ["7", "7-2"]


def test_leftovers_of_unfinished_pulls_are_removed_but_live_and_previous_trees_stay(public, publisher):
    publish(publisher, 1, {"INDEX": "one\n"})
    publish(publisher, 2, {"INDEX": "two\n"})
    publisher.prepare(PROJECT, 3, "atomic")   # the slave stopped during this pull...
    os.symlink("nowhere", public / SNAPSHOTS_DIR / PROJECT / ".swap-0123")   # ...or during a swap
    assert publisher.remove_leftovers() == 2
    assert snapshots(public) == ["1", "2"]
    assert (public / PROJECT / "INDEX").read_text() == "two\n"


# --- through the slave's API and sync worker ------------------------------

NAME = "mirror1"
SIGNING_KEY = "publishing-signing-key"
IDENTITY = Credentials(name=NAME, signing_key=SIGNING_KEY, rsync_user="ms-mirror1",
                       rsync_password="rsync-password", master_url="http://master.example.org:5000")


class TreeWritingRunner:
    """Plays rsync: writes ``tree`` into the job's destination and exits with ``exit_code``."""

    def __init__(self):
        self.jobs = []
        self.tree = {}
        self.exit_code = 0

    def run(self, job, log_path, on_spawn=None, cancel=None, on_progress=None):
        self.jobs.append(job)
        write_tree(job.destination, self.tree)
        return result_from_exit(self.exit_code, "")


class QuietMasterClient:
    def report(self, credentials, body):
        return "acknowledged"

    def heartbeat(self, credentials, body):
        return {"status": "ok"}


@pytest.fixture
def runner():
    return TreeWritingRunner()


@pytest.fixture
def make_slave(tmp_path, public, runner):
    built = []

    def make():
        state_dir = tmp_path / "state"
        if not (state_dir / "credentials.json").exists():
            CredentialStore(str(state_dir)).save(IDENTITY)
        app = create_app({
            "STATE_DIR": str(state_dir), "PUBLIC_DIR": str(public), "SLAVE_NAME": NAME,
            "SLAVE_URL": "http://mirror1.example.org:7000", "JOIN_TOKEN": "join-token", "LOG_LEVEL": "WARNING",
            "CLOCK": FakeClock(), "RSYNC_RUNNER": runner, "MASTER_CLIENT": QuietMasterClient(),
            "START_BACKGROUND": False})
        built.append(app)
        return app
    yield make
    for app in built:
        app.extensions["mirrorsync_slave"].stop(5)


def an_order(run_id, publish="atomic"):
    return {"run_id": run_id, "project": PROJECT, "rsyncd_host": "master.example.org", "rsyncd_port": 8730,
            "timeout": 600, "publish": publish}


def pull(app, body):
    """Send a signed order, wait for its pull, return the slave's record of it."""
    client = app.test_client()
    raw = json.dumps(body).encode()
    headers = signature_headers(NAME, SIGNING_KEY, "POST", "/api/v1/syncs", raw)
    response = client.post("/api/v1/syncs", data=raw, headers=headers, content_type="application/json")
    assert response.status_code == 202, response.json
    assert app.extensions["mirrorsync_slave"].worker.wait_idle(5), "the pull did not finish"
    path = f"/api/v1/syncs/{body['run_id']}"
    return client.get(path, headers=signature_headers(NAME, SIGNING_KEY, "GET", path, b"")).json


def test_an_atomic_order_links_its_snapshot_to_the_live_one_and_swaps_it_in(public, make_slave, runner):
    app = make_slave()
    runner.tree = {"INDEX": "one\n"}
    assert pull(app, an_order(1))["state"] == "success"
    runner.tree = {"INDEX": "two\n"}
    assert pull(app, an_order(2))["state"] == "success"
    first, second = runner.jobs
    assert second.destination == str(public / SNAPSHOTS_DIR / PROJECT / "2.partial")
    assert f"--link-dest={public / SNAPSHOTS_DIR / PROJECT / '1'}" in second.options
    assert "--link-dest" not in " ".join(first.options)
    assert os.readlink(public / PROJECT) == f"{SNAPSHOTS_DIR}/{PROJECT}/2"
    assert read_tree(public / PROJECT) == {"INDEX": "two\n"}


def test_a_failed_atomic_pull_is_reported_and_the_live_tree_stays(public, make_slave, runner):
    app = make_slave()
    runner.tree = {"INDEX": "one\n"}
    pull(app, an_order(1))
    runner.tree, runner.exit_code = {"INDEX": "half\n"}, 23
    answer = pull(app, an_order(2))
    assert answer["state"] == "failed" and answer["exit_code"] == 23
    assert read_tree(public / PROJECT) == {"INDEX": "one\n"}
    assert snapshots(public) == ["1"]


def test_a_tree_that_cannot_be_published_fails_the_pull(public, make_slave, runner):
    app = make_slave()
    runner.tree = {"INDEX": "one\n"}
    pull(app, an_order(1))
    # Someone puts a file where the project's link was while the next pull runs.
    original_run = runner.run

    def run_then_clobber(job, log_path, on_spawn=None, cancel=None, on_progress=None):
        os.unlink(public / PROJECT)
        (public / PROJECT).write_text("not a tree")
        return original_run(job, log_path, on_spawn, cancel)
    runner.run = run_then_clobber
    answer = pull(app, an_order(2))
    assert answer["state"] == "failed"
    assert "could not be published" in answer["error"]
    assert (public / PROJECT).read_text() == "not a tree"
    assert snapshots(public) == ["1"]


def test_delay_orders_still_pull_in_place(public, make_slave, runner):
    app = make_slave()
    runner.tree = {"INDEX": "one\n"}
    assert pull(app, an_order(1, publish="delay"))["state"] == "success"
    assert runner.jobs[0].destination == str(public / PROJECT) and runner.jobs[0].options == ()
    assert not (public / PROJECT).is_symlink()


def test_an_order_accepted_before_a_restart_is_published_the_way_it_was_ordered(tmp_path, public, make_slave,
                                                                                 runner):
    records = SyncRecords(str(tmp_path / "state" / "syncs"))
    record, _ = records.create(an_order(3), FakeClock().now())
    assert record["order"]["publish"] == "atomic"
    runner.tree = {"INDEX": "three\n"}
    app = make_slave()   # takes over the accepted order at start
    assert app.extensions["mirrorsync_slave"].worker.wait_idle(5)
    assert os.readlink(public / PROJECT) == f"{SNAPSHOTS_DIR}/{PROJECT}/3"


def test_a_starting_slave_removes_snapshots_a_stopped_pull_left(public, make_slave, runner):
    app = make_slave()
    runner.tree = {"INDEX": "one\n"}
    pull(app, an_order(1))
    leftover = public / SNAPSHOTS_DIR / PROJECT / "2.partial"
    write_tree(leftover, {"INDEX": "half\n"})
    app.extensions["mirrorsync_slave"].stop(5)
    make_slave()
    assert snapshots(public) == ["1"]
    assert read_tree(public / PROJECT) == {"INDEX": "one\n"}
