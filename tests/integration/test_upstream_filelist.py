"""upstream_filelist against a real rsync daemon that logs what it serves: a pull costs the list and the change.

Each change is made upstream, the upstream's list written after it (as
Fedora's create-filelist runs after every push), and the master's new tree
must then be exactly the upstream's: the same manifest a full pull makes.
"""

import contextlib
import os
import shutil
import sqlite3

import pytest

from common import digests, filelists
from tests.integration.conftest import ApiClient
from tests.support.processes import DEFAULT_JOIN_TOKEN, start_slave, wait_for, wait_run_finished
from tests.support.rsyncd import RsyncDaemon
from tests.support.trees import write_file

LIST = "fullfiletimelist-test"
MTIME = 1_700_000_000


def write(root, relpath, text, mtime=MTIME):
    write_file(root, relpath, text, mtime)


def publish(tree, seconds=None):
    """The upstream's list, rewritten after a change (its times Fedora's, or ``seconds(lstat)``)."""
    filelists.write(tree, os.path.join(tree, LIST), seconds)


def by_mtime(info):
    return int(info.st_mtime)


@pytest.fixture
def fedora(tmp_path):
    tree = tmp_path / "fedora"
    for release in ("38", "39"):
        for number in range(30):
            write(tree, f"releases/{release}/Everything/x86_64/os/Packages/p/pkg{number}.rpm", f"{release}-{number}\n")
        write(tree, f"releases/{release}/Everything/x86_64/os/repodata/repomd.xml", f"<repomd {release}/>\n")
    os.makedirs(tree / "releases/old/empty")
    os.symlink("releases/39", tree / "latest")
    publish(tree)
    with RsyncDaemon(tmp_path / "rsyncd", {"fedora": tree}, transfer_logging=True) as daemon:
        yield tree, daemon


def sync(api, master):
    response = api.post("/api/v1/projects/fedora/syncs")
    assert response.status_code == 202, response.text
    run = wait_run_finished(master.url, master.admin_token, response.json()["id"], timeout=30)
    assert run["state"] == "success", run
    return run


def same_tree(master, tree):
    ours, theirs = digests.manifest(master.data_dir / "fedora"), digests.manifest(tree)
    assert digests.first_differences(theirs, ours) == [], "the master's tree differs from upstream's"
    assert digests.digest(ours) == digests.digest(theirs)


def create(api, daemon, **fields):
    created = api.post("/api/v1/projects", json={"name": "fedora", "upstream": daemon.url("fedora"),
                                                 "upstream_filelist": LIST, **fields})
    assert created.status_code == 201, created.text
    return created.json()


def test_a_change_costs_the_list_and_the_changed_files_and_leaves_upstreams_tree(api, master, fedora):
    tree, daemon = fedora
    assert create(api, daemon)["upstream_filelist"] == LIST
    sync(api, master)
    same_tree(master, tree)

    write(tree, "releases/39/Everything/x86_64/os/Packages/p/pkg7.rpm", "39-7 rebuilt\n", MTIME + 60)
    write(tree, "releases/39/Everything/x86_64/os/repodata/repomd.xml", "<repomd 39 again/>\n", MTIME + 60)
    publish(tree)
    offset = len(daemon.read_log())
    run = sync(api, master)
    served = sorted(os.path.basename(path) for path in daemon.sent_files(offset))
    assert served == sorted([LIST, "pkg7.rpm", "repomd.xml"]), served
    same_tree(master, tree)
    log = api.get(f"/api/v1/runs/{run['id']}/log").text
    assert f"# upstream_filelist {LIST}:" in log and "pulling only those" in log, log

    # Again: the old list is now the one the master put in place itself (and kept in memory).
    os.unlink(tree / "releases/38/Everything/x86_64/os/Packages/p/pkg3.rpm")
    write(tree, "releases/39/Everything/x86_64/os/Packages/p/pkg8.rpm", "39-8 rebuilt\n", MTIME + 120)
    publish(tree)
    offset = len(daemon.read_log())
    run = sync(api, master)
    served = sorted(os.path.basename(path) for path in daemon.sent_files(offset))
    assert served == sorted([LIST, "pkg8.rpm"]), served
    assert "1 to delete (from the lines that differ): pulling only those" in api.get(f"/api/v1/runs/{run['id']}/log").text
    same_tree(master, tree)

    # New settings (no more excludes, say): the next pull is a full one, as with any marker.
    assert api.patch("/api/v1/projects/fedora", json={"timeout": 7200}).status_code == 200
    write(tree, "releases/39/Everything/x86_64/os/Packages/p/pkg9.rpm", "39-9 rebuilt\n", MTIME + 180)
    publish(tree)
    run = sync(api, master)
    assert "the project's settings changed since the last good pull: pulling in full" in \
        api.get(f"/api/v1/runs/{run['id']}/log").text
    same_tree(master, tree)

    # Nothing changed upstream: the list is the marker, and the pull is skipped.
    skipped = sync(api, master)
    assert skipped["skipped"] is True


def test_a_full_pull_comes_every_filelist_full_interval(master_factory, fedora, tmp_path):
    """What the lists cannot say (upstream's list out of step with its tree, say) is mended by a
    pull that compares the whole tree now and then."""
    tree, daemon = fedora
    packages = "releases/39/Everything/x86_64/os/Packages/p"
    master = master_factory(tmp_path / "data", extra_env={"MIRRORSYNC_FILELIST_FULL_INTERVAL": "3600"})
    api = ApiClient(master.url, master.admin_token)
    publish(tree, by_mtime)
    create(api, daemon)
    sync(api, master)
    # A change, its list, and then a file upstream the list does not name yet: a listed pull cannot know.
    # Nor can it link a new hard link to an unchanged file when the list's times are the files' mtimes:
    # nothing says which files share an inode. (Fedora's, the later of mtime and ctime,
    # move for the old name too, and the pull links the two.)
    write(tree, "releases/39/Everything/x86_64/os/repodata/repomd.xml", "<repomd 39 again/>\n", MTIME + 60)
    os.link(tree / packages / "pkg1.rpm", tree / packages / "pkg1-again.rpm")
    publish(tree, by_mtime)
    write(tree, f"{packages}/late.rpm", "listed later\n")
    run = sync(api, master)
    assert "pulling only those" in api.get(f"/api/v1/runs/{run['id']}/log").text
    ours = master.data_dir / "fedora" / packages
    assert not (ours / "late.rpm").exists()
    assert (ours / "pkg1-again.rpm").read_text() == "39-1\n"
    assert not os.path.samefile(ours / "pkg1-again.rpm", ours / "pkg1.rpm")

    # A day later (the last full pull's time moved back), the next change is pulled in full.
    database = master.data_dir / ".mirrorsync" / "mirrorsync.db"
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as connection, connection:
        connection.execute("UPDATE projects SET last_full_pull = datetime(last_full_pull, '-1 day')")
    write(tree, "releases/38/Everything/x86_64/os/repodata/repomd.xml", "<repomd 38 again/>\n", MTIME + 120)
    publish(tree, by_mtime)
    write(tree, f"{packages}/later.rpm", "listed later too\n")
    run = sync(api, master)
    log = api.get(f"/api/v1/runs/{run['id']}/log").text
    assert "the last full pull started 24 h ago (FILELIST_FULL_INTERVAL: 1 h): pulling in full" in log, log
    same_tree(master, tree)   # the unlisted files, and the hard link (the digest holds the link groups)
    assert os.path.samefile(ours / "pkg1-again.rpm", ours / "pkg1.rpm")

    # And the pull after it is a listed one again.
    write(tree, "releases/38/Everything/x86_64/os/repodata/repomd.xml", "<repomd 38 once more/>\n", MTIME + 180)
    publish(tree, by_mtime)
    run = sync(api, master)
    assert "pulling only those" in api.get(f"/api/v1/runs/{run['id']}/log").text
    same_tree(master, tree)
    api.close()


AWKWARD = {
    "a directory replaced by a file": lambda tree: (shutil.rmtree(tree / "releases/38/Everything/x86_64/os/repodata"),
                                                    write(tree, "releases/38/Everything/x86_64/os/repodata", "now a file\n")),
    "a directory replaced by a symlink": lambda tree: (shutil.rmtree(tree / "releases/old"),
                                                       os.symlink("38", tree / "releases/old")),
    "a symlink replaced by a directory": lambda tree: (os.unlink(tree / "latest"),
                                                       write(tree, "latest/README", "see releases\n")),
    "a rename": lambda tree: os.rename(tree / "releases/38/Everything/x86_64/os/Packages/p",
                                       tree / "releases/38/Everything/x86_64/os/Packages/q"),
    "a deleted directory": lambda tree: shutil.rmtree(tree / "releases/38"),
    "new hard links": lambda tree: (write(tree, "releases/40/a.rpm", "40\n", MTIME + 120),
                                    os.link(tree / "releases/40/a.rpm", tree / "releases/40/b.rpm")),
    "a new top-level entry": lambda tree: write(tree, "README", "hello\n", MTIME + 180),
}


@pytest.mark.parametrize("change", sorted(AWKWARD))
def test_awkward_changes_make_the_tree_a_full_pull_makes(api, master, fedora, change):
    tree, daemon = fedora
    create(api, daemon)
    sync(api, master)
    before = filelists.parse(tree / LIST)
    AWKWARD[change](tree)
    publish(tree)
    after = filelists.parse(tree / LIST)
    offset = len(daemon.read_log())
    run = sync(api, master)
    log = api.get(f"/api/v1/runs/{run['id']}/log").text
    assert "(from the lines that differ): pulling only those" in log and "pulling in full" not in log, log
    sent = set(daemon.sent_files(offset))
    changed = {path for path, line in after.items() if before.get(path) != line}
    assert sent and sent <= changed | {LIST}, f"only the change travels: {sorted(sent - changed)}"
    same_tree(master, tree)


def test_excluded_entries_keep_later_plans_to_the_lines_that_differ(api, master, fedora):
    tree, daemon = fedora
    for name in ("a", "b"):
        write(tree, f"releases/39/iso/{name}.iso", name * 100, MTIME)
    publish(tree)
    create(api, daemon, excludes=["*.iso"])
    sync(api, master)

    def step(change, compared):
        change()
        publish(tree)
        run = sync(api, master)
        log = api.get(f"/api/v1/runs/{run['id']}/log").text
        assert f"(from {compared}): pulling only those" in log, log
        ours = digests.manifest(master.data_dir / "fedora")
        theirs = [entry for entry in digests.manifest(tree) if not entry.path.endswith(".iso")]
        assert digests.first_differences(theirs, ours) == []

    # The tree lacks the two images its list names: compared entry by entry, once.
    step(lambda: write(tree, "releases/39/new1.rpm", "1\n", MTIME + 60), "every entry of the tree")
    # Then the master knows two entries are left out, and reads only the lines that differ,
    # as images come and go.
    step(lambda: write(tree, "releases/39/iso/c.iso", "c", MTIME + 120), "the lines that differ")
    step(lambda: os.unlink(tree / "releases/39/iso/a.iso"), "the lines that differ")
    step(lambda: write(tree, "releases/39/new2.rpm", "2\n", MTIME + 180), "the lines that differ")


def test_a_list_that_names_what_upstream_no_longer_has_falls_back_to_a_full_pull(api, master, fedora):
    tree, daemon = fedora
    create(api, daemon)
    sync(api, master)
    write(tree, "releases/39/new.rpm", "new\n", MTIME + 60)
    publish(tree)
    os.unlink(tree / "releases/39/new.rpm")   # gone again before the master pulls: the list lags the tree
    write(tree, "releases/39/other.rpm", "other\n", MTIME + 90)
    run = sync(api, master)
    log = api.get(f"/api/v1/runs/{run['id']}/log").text
    assert "the pull of the listed changes failed: pulling in full" in log, log
    assert (master.data_dir / "fedora/releases/39/other.rpm").exists(), "the full pull saw what the list missed"
    assert not (master.data_dir / "fedora/releases/39/new.rpm").exists()
    same_tree(master, tree)
    # The run's digest is the tree's (walked: the log of two pulls cannot vouch for it).
    assert run["digest"] == digests.digest(digests.manifest(master.data_dir / "fedora"))


def test_an_unreadable_list_is_a_full_pull(api, master, fedora):
    tree, daemon = fedora
    create(api, daemon)
    sync(api, master)
    write(tree, "releases/39/new.rpm", "new\n", MTIME + 60)
    (tree / LIST).write_text("[Files]\nnot a line of a file list\n")
    offset = len(daemon.read_log())
    run = sync(api, master)
    log = api.get(f"/api/v1/runs/{run['id']}/log").text
    assert f"# upstream_filelist {LIST}: it cannot be read (the line 'not a line of a file list' is not" in log, log
    assert "pulling in full" in log
    assert "new.rpm" in " ".join(daemon.sent_files(offset))
    same_tree(master, tree)


def test_only_method_rsync_takes_a_filelist(api, master, fedora):
    _, daemon = fedora
    response = api.post("/api/v1/projects", json={"name": "fedora", "upstream": daemon.url("fedora"),
                                                  "method": "two-stage", "stage1_profile": "debian",
                                                  "upstream_filelist": LIST})
    assert response.status_code == 422
    assert "upstream_filelist" in response.json()["message"], response.json()
    response = api.post("/api/v1/projects", json={"name": "fedora", "upstream": daemon.url("fedora"),
                                                  "upstream_filelist": "../outside"})
    assert response.status_code == 422
    assert "upstream_filelist" in response.json()["message"], response.json()


def test_a_slave_gets_the_tree_a_listed_pull_made_and_reports_its_digest(master_factory, fedora, tmp_path, request):
    tree, daemon = fedora
    master = master_factory(tmp_path / "master", extra_env={"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN})
    slave = start_slave(tmp_path / "mirror1", "mirror1", master.url, log_dir=tmp_path / "logs")
    request.addfinalizer(slave.stop)
    api = ApiClient(master.url, master.admin_token)
    wait_for(lambda: [s["state"] for s in api.get("/api/v1/slaves").json()] == ["online"], 30, message="slave online")
    create(api, daemon)
    sync(api, master)
    for change in ("a deleted directory", "new hard links", "a directory replaced by a symlink"):
        AWKWARD[change](tree)
    write(tree, "releases/39/Everything/x86_64/os/repodata/repomd.xml", "<repomd 39 next/>\n", MTIME + 300)
    publish(tree)
    run = sync(api, master)
    assert "pulling only those" in api.get(f"/api/v1/runs/{run['id']}/log").text
    (part,) = run["slaves"]
    assert part["state"] == "success" and part["digest"] == run["digest"], run
    published = digests.manifest(slave.tree("fedora"))
    assert digests.first_differences(digests.manifest(tree), published) == []
