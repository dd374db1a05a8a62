"""Changes-only pulls on a slave: where the change list comes from and when a slave pulls in full."""

import dataclasses
import os

from common.digests import DIR, FILE, Entry, Manifest
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


def published_tree(tmp_path, files=300):
    from common import digests
    tree = tmp_path / "tree"
    (tree / "pool").mkdir(parents=True)
    for index in range(files):
        (tree / "pool" / f"{index:02d}.deb").write_text(str(index))
    entries = digests.manifest(tree)
    return tree, entries, digests.digest(entries)


def change(tree, entries, added=(), removed=()):
    """The tree changed as a pull would change it; returns (manifest, digest, edits) as a slave makes them."""
    from common import digests
    for name in added:
        (tree / name).write_text(name)
    for name in removed:
        os.unlink(tree / name)
    parents = {os.path.dirname(name) or "." for name in (*added, *removed)}
    spliced, edits = digests.splice(entries, tree, list(added), list(removed), tuple(parents))
    assert spliced == digests.manifest(tree)
    return spliced, digests.digest(spliced), edits


def test_a_pull_appends_what_it_changed_to_the_saved_manifest_and_a_restart_reads_both(tmp_path):
    tree, entries, digest = published_tree(tmp_path)
    state = str(tmp_path / "state")
    published = transfers.PublishedTrees(state)
    published.remember("debian", "7", digest, entries)
    saved = os.path.join(published.directory, "debian.manifest.gz")
    whole = os.stat(saved)
    second, second_digest, edits = change(tree, entries, added=["pool/new.deb"], removed=["pool/03.deb"])
    published.remember("debian", "8", second_digest, second, base=entries, edits=edits)
    # The manifest's file is not written again: the edits are, beside it.
    assert (os.stat(saved).st_ino, os.stat(saved).st_mtime_ns) == (whole.st_ino, whole.st_mtime_ns)
    assert os.path.getsize(os.path.join(published.directory, "debian.manifest.edits")) < whole.st_size
    assert published.manifest("debian") is second
    third, third_digest, edits = change(tree, second, added=["pool/newer.deb"])
    published.remember("debian", "9", third_digest, third, base=second, edits=edits)
    # After a restart: the saved manifest with both edits, checked against the digest on record.
    again = transfers.PublishedTrees(state).manifest("debian")
    assert again == third and again is not third
    # A pull that changed nothing writes nothing.
    edits_file = os.stat(os.path.join(published.directory, "debian.manifest.edits"))
    published.remember("debian", "10", third_digest, third, base=third, edits=[])
    assert os.stat(os.path.join(published.directory, "debian.manifest.edits")).st_mtime_ns == edits_file.st_mtime_ns


def test_edits_cut_short_by_a_crash_or_not_matching_the_record_give_no_manifest_but_a_full_pull(tmp_path):
    tree, entries, digest = published_tree(tmp_path)
    state = str(tmp_path / "state")
    published = transfers.PublishedTrees(state)
    published.remember("debian", "7", digest, entries)
    second, second_digest, edits = change(tree, entries, added=["pool/new.deb"])
    published.remember("debian", "8", second_digest, second, base=entries, edits=edits)
    third, third_digest, edits = change(tree, second, added=["pool/newer.deb"])
    published.remember("debian", "9", third_digest, third, base=second, edits=edits)
    # Edits appended, and the slave died before the record of the tree was written: the record's
    # digest is not the one the edits lead to.
    record_path = os.path.join(published.directory, "debian.json")
    with open(record_path) as record:
        text = record.read()
    with open(record_path, "w") as record:
        record.write(text.replace(third_digest, second_digest))
    assert transfers.PublishedTrees(state).manifest("debian") is None
    with open(record_path, "w") as record:
        record.write(text)
    # The slave died while appending the next pull's edits: what came before is read, and the next
    # pull saves the manifest whole instead of appending after the broken line.
    journal = os.path.join(published.directory, "debian.manifest.edits")
    with open(journal, "a") as out:
        out.write('[[3,4,[["pool/las')
    restarted = transfers.PublishedTrees(state)
    assert restarted.manifest("debian") == third
    fourth, fourth_digest, edits = change(tree, restarted.manifest("debian"), added=["pool/last.deb"])
    restarted.remember("debian", "10", fourth_digest, fourth, base=restarted.manifest("debian"), edits=edits)
    assert not os.path.exists(journal)
    assert transfers.PublishedTrees(state).manifest("debian") == fourth


def test_edits_stop_at_a_share_of_the_manifest_and_it_is_saved_whole_again(tmp_path, monkeypatch):
    monkeypatch.setattr(transfers, "JOURNAL_SHARE", 0.5)
    tree, entries, digest = published_tree(tmp_path, files=10)
    published = transfers.PublishedTrees(str(tmp_path / "state"))
    published.remember("debian", "7", digest, entries)
    journal = os.path.join(published.directory, "debian.manifest.edits")
    second, second_digest, edits = change(tree, entries, added=["pool/new.deb"])
    published.remember("debian", "8", second_digest, second, base=entries, edits=edits)
    assert os.path.exists(journal)
    # Two more paths: what the edits moved is now past half the entries.
    third, third_digest, edits = change(tree, second, added=["pool/newer.deb", "pool/newest.deb"])
    published.remember("debian", "9", third_digest, third, base=second, edits=edits)
    assert not os.path.exists(journal)
    assert transfers.PublishedTrees(str(tmp_path / "state")).manifest("debian") == third
    # Edits from a manifest that is not the one saved (another process wrote it) are not appended.
    fourth, fourth_digest, edits = change(tree, third, added=["pool/last.deb"])
    published.remember("debian", "10", fourth_digest, fourth, base=second, edits=edits)
    assert not os.path.exists(journal)
    assert transfers.PublishedTrees(str(tmp_path / "state")).manifest("debian") == fourth


def test_a_change_of_little_held_data_is_sent_in_whole_files():
    held = Manifest([Entry("big.img", FILE, size=transfers.WHOLE_FILE_BELOW, mtime=1, mode=0o644),
                     Entry("pool", DIR, size=None, mtime=1, mode=0o755),
                     Entry("pool/a.deb", FILE, size=1000, mtime=1, mode=0o644),
                     Entry("pool/b.deb", FILE, size=transfers.WHOLE_FILE_BELOW - 1000, mtime=1, mode=0o644)])
    # New paths hold nothing to reuse; a directory counts for nothing.
    assert transfers.whole_files(held, ["pool", "pool/a.deb", "pool/new.deb"])
    assert transfers.whole_files(held, ["pool/a.deb"])
    # What is held adds up: one byte short of the bound, then at it.
    assert transfers.whole_files(held, ["pool/b.deb"])
    assert not transfers.whole_files(held, ["pool/a.deb", "pool/b.deb"])
    assert not transfers.whole_files(held, ["big.img"])
    # Without a manifest nothing is known: the delta transfer, as before.
    assert not transfers.whole_files(None, ["pool/a.deb"])


def test_the_plans_options_ask_for_whole_files_only_when_the_plan_says_so():
    plan = transfers.Plan("/work/files-from-8", ("a",), (), DIGEST)
    assert "--whole-file" not in transfers.plan_options(plan)
    assert transfers.plan_options(dataclasses.replace(plan, whole_file=True))[-1] == "--whole-file"
