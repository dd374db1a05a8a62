"""Changes-only pulls on a slave: where the change list comes from and when a slave pulls in full."""

import os

from slave import transfers
from tests.support.fakes import FakeRsyncRunner

DIGEST = "sha256:" + "a" * 64


def source_of(path):
    return f"rsync://user@127.0.0.1:873/debian/{path}/"


def plan(tmp_path, order, runner):
    published = transfers.PublishedTrees(str(tmp_path / "state"))
    published.remember("debian", "7", DIGEST)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return transfers.plan_changes(runner, order, source_of, "secret", published, str(work), str(tmp_path / "log"))


def order_of(**fields):
    return {"run_id": 8, "project": "debian", "snapshot": "8", "changes": True, "digest": DIGEST, **fields}


def test_a_change_list_in_the_order_needs_no_rsync_connection(tmp_path):
    runner = FakeRsyncRunner()
    change_list = {"base": "7", "base_digest": DIGEST, "changed": ["pool", "pool/a.deb"], "deleted": ["old.deb"],
                   "touch": [[".", 1_700_000_000]]}
    found = plan(tmp_path, order_of(change_list=change_list), runner)
    assert runner.jobs == []
    assert (found.changed, found.deleted, found.touch) == (("pool", "pool/a.deb"), ("old.deb",), ((".", 1_700_000_000),))
    with open(found.list_path, "rb") as listing:
        assert listing.read() == b"pool\0pool/a.deb\0"


def test_without_one_the_slave_fetches_it_from_the_module(tmp_path):
    runner = FakeRsyncRunner()
    assert plan(tmp_path, order_of(), runner) is None  # the fake fetch brings no file: a full pull
    [job] = runner.jobs
    assert job.source == source_of(".changes-8")


def test_a_list_from_another_base_or_outside_the_tree_means_a_full_pull(tmp_path):
    runner = FakeRsyncRunner()
    other_base = {"base": "6", "base_digest": DIGEST, "changed": ["a"], "deleted": [], "touch": []}
    outside = {"base": "7", "base_digest": DIGEST, "changed": ["../etc/passwd"], "deleted": [], "touch": []}
    assert plan(tmp_path, order_of(change_list=other_base), runner) is None
    assert plan(tmp_path, order_of(change_list=outside), runner) is None
    assert runner.jobs == []
    assert not os.listdir(tmp_path / "work")


def test_the_published_manifest_is_read_back_from_memory_until_its_file_changes(tmp_path, monkeypatch):
    from common import digests
    entries = [digests.Entry(".", digests.DIR, None, 1, 0o755), digests.Entry("a", digests.FILE, 1, 1, 0o644)]
    published = transfers.PublishedTrees(str(tmp_path / "state"))
    published.remember("debian", "7", DIGEST, entries)
    loads = []
    monkeypatch.setattr(digests, "load", lambda path: loads.append(path) or [])
    assert published.manifest("debian") is entries and loads == []
    # Another process (or an admin) writes the file: it is read again.
    path = os.path.join(published.directory, "debian.manifest.gz")
    os.replace(path, path + ".moved")
    with open(path + ".moved", "rb") as old, open(path, "wb") as new:
        new.write(old.read())
    assert published.manifest("debian") == [] and len(loads) == 1
    published.forget("debian")
    assert published.manifest("debian") is None


def test_the_manifests_held_in_memory_are_bounded(tmp_path, monkeypatch):
    from common import digests
    monkeypatch.setattr(transfers, "HELD_ENTRIES", 3)
    published = transfers.PublishedTrees(str(tmp_path / "state"))
    for project in ("one", "two"):
        published.remember(project, "7", DIGEST, [digests.Entry(".", digests.DIR, None, 1, 0o755),
                                                  digests.Entry("a", digests.FILE, 1, 1, 0o644)])
    assert list(published._held) == ["two"]
    assert [entry.path for entry in published.manifest("one")] == [".", "a"], "read back from its file"
