"""slave.watch: inotify watches on a published tree's directories, with the kernel's real inotify."""

import errno
import logging
import os

import pytest

from slave import watch as watch_module
from slave.watch import TreeWatch

pytestmark = pytest.mark.skipif(watch_module.inotify_simple is None, reason="inotify is Linux only")

DIRECTORIES = (".", "a", "a/b")


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "leaf.txt").write_text("leaf\n")
    (root / "top.txt").write_text("top\n")
    return root


@pytest.fixture
def watch():
    watcher = TreeWatch()
    yield watcher
    watcher.close()


def test_an_unwatched_project_is_not_known_and_a_quiet_tree_saw_nothing(watch, tree):
    assert watch.take("p") is None
    assert watch.arm("p", tree, DIRECTORIES)
    seen = watch.take("p")
    assert not seen.changed and not seen.paths
    assert watch.take("p") is None, "taking ends the watch"


@pytest.mark.parametrize("edit, path", [
    (lambda root: (root / "a" / "b" / "leaf.txt").write_text("rewritten\n"), "a/b/leaf.txt"),
    (lambda root: os.chmod(root / "top.txt", 0o600), "top.txt"),
    (lambda root: os.utime(root / "a" / "b" / "leaf.txt", (1, 1)), "a/b/leaf.txt"),
    (lambda root: (root / "a" / "new").write_text("new\n"), "a/new"),
    (lambda root: os.rename(root / "top.txt", root / "a" / "moved.txt"), "top.txt"),
])
def test_an_edit_anywhere_in_the_tree_is_seen_at_once_with_its_path(watch, tree, edit, path, caplog):
    assert watch.arm("p", tree, DIRECTORIES)
    with caplog.at_level(logging.WARNING, logger="slave.watch"):
        edit(tree)
        seen = watch.take("p")   # no wait: what the kernel queued is read by take itself
    assert seen.changed and seen.complete and path in seen.paths, seen.paths
    [said] = [record.getMessage() for record in caplog.records]   # once, however many events
    assert said.startswith("p: its published tree was edited outside mirror-sync, first at "), said


def test_what_happens_while_the_tree_is_not_watched_does_not_count(watch, tree):
    """The slave's own pull runs between take and the next arm."""
    assert watch.arm("p", tree, DIRECTORIES)
    watch.take("p")
    (tree / "a" / "b" / "leaf.txt").write_text("the pull's own write\n")
    assert watch.arm("p", tree, DIRECTORIES)
    assert not watch.take("p").changed


def test_a_tree_published_as_a_symlink_is_watched_where_it_points(watch, tree, tmp_path):
    link = tmp_path / "public"
    link.symlink_to(tree)
    assert watch.arm("p", link, DIRECTORIES)
    (tree / "top.txt").write_text("edited through the real path\n")
    assert "top.txt" in watch.take("p").paths


def test_projects_are_watched_apart_and_the_paths_kept_are_bounded(watch, tree, tmp_path, monkeypatch):
    monkeypatch.setattr(watch_module, "KEPT_PATHS", 20)
    other = tmp_path / "other"
    other.mkdir()
    assert watch.arm("p", tree, DIRECTORIES) and watch.arm("q", other, ["."])
    for number in range(watch_module.KEPT_PATHS + 5):
        (tree / f"file-{number}").write_text("x")
    seen = watch.take("p")
    assert len(seen.paths) == watch_module.KEPT_PATHS and seen.count >= watch_module.KEPT_PATHS + 5
    assert not seen.complete
    assert not watch.take("q").changed


class FullInotify:
    """An inotify whose user has no watch left."""

    def __init__(self, **_):
        self.removed = []
        self._fd, self._other_end = os.pipe()   # never readable

    def add_watch(self, path, mask):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def rm_watch(self, descriptor):
        self.removed.append(descriptor)

    def fileno(self):
        return self._fd

    def read(self, timeout=None):
        return []

    def close(self):
        os.close(self._fd)
        os.close(self._other_end)


def test_with_no_watch_left_the_project_is_not_watched_and_the_log_says_what_to_raise(
        watch, tree, monkeypatch, caplog):
    monkeypatch.setattr(watch_module.inotify_simple, "INotify", FullInotify)
    with caplog.at_level(logging.WARNING, logger="slave.watch"):
        assert not watch.arm("p", tree, DIRECTORIES)
        assert not watch.arm("p", tree, DIRECTORIES)
    assert watch.take("p") is None, "not watched: the pull relies on the directories' times and the walks"
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "raise fs.inotify.max_user_watches" in warnings[0], warnings


def test_without_inotify_nothing_is_watched_and_one_warning_says_so(tree, monkeypatch, caplog):
    monkeypatch.setattr(watch_module, "inotify_simple", None)
    watcher = TreeWatch()
    try:
        with caplog.at_level(logging.WARNING, logger="slave.watch"):
            assert not watcher.arm("p", tree, DIRECTORIES)
            assert not watcher.arm("q", tree, DIRECTORIES)
        assert watcher.take("p") is None
        assert [record.getMessage() for record in caplog.records] == [
            "published trees are not watched for edits behind this slave's back (inotify is not available on "
            "this system); changes-only pulls rely on the directories' times and the walks every VERIFY_INTERVAL"]
    finally:
        watcher.close()


def test_an_overflowed_queue_counts_as_a_change_of_every_watched_tree(watch, tree, caplog):
    assert watch.arm("p", tree, DIRECTORIES)
    overflow = watch_module.inotify_simple.Event(wd=-1, mask=watch_module.inotify_simple.flags.Q_OVERFLOW,
                                                 cookie=0, name="")
    real = watch._inotify
    with caplog.at_level(logging.WARNING, logger="slave.watch"):
        with watch._lock:
            watch._inotify = type("Overflowing", (), {"read": lambda self, timeout=None: [overflow]})()
            watch._drain()
            watch._inotify = real
    seen = watch.take("p")
    assert seen.changed and seen.overflowed and not seen.complete and not seen.paths
    assert any("its next pull checks it whole" in record.getMessage() for record in caplog.records)


def test_switched_off_nothing_is_watched_and_nothing_is_said(tree, caplog):
    watcher = TreeWatch(enabled=False)
    try:
        with caplog.at_level(logging.INFO, logger="slave.watch"):
            assert not watcher.arm("p", tree, DIRECTORIES)
            (tree / "top.txt").write_text("edited\n")
        assert watcher.take("p") is None and not caplog.records
    finally:
        watcher.close()


@pytest.mark.parametrize("setting, enabled", [({}, True), ({"WATCH_TREES": "false"}, False)])
def test_the_slave_watches_its_trees_unless_watch_trees_is_off(tmp_path, setting, enabled):
    from common.clock import FakeClock
    from slave import create_app
    from slave.credentials import CredentialStore
    from tests.support.fakes import FakeMasterClient
    from tests.unit.test_slave_orders import IDENTITY, NAME, services
    CredentialStore(str(tmp_path / "state")).save(IDENTITY)
    app = create_app({"STATE_DIR": str(tmp_path / "state"), "PUBLIC_DIR": str(tmp_path / "public"),
                      "SLAVE_NAME": NAME, "SLAVE_URL": "http://mirror1.example.org:7000", "LOG_LEVEL": "WARNING",
                      "CLOCK": FakeClock(), "MASTER_CLIENT": FakeMasterClient(), "START_BACKGROUND": False,
                      **setting})
    try:
        assert services(app).worker.watch.enabled is enabled
    finally:
        services(app).stop(5)


def test_an_edited_tree_is_due_for_repair_once_left_alone_and_only_once(watch, tree):
    assert watch.arm("p", tree, DIRECTORIES) and watch.arm("q", tree / "a", ["."])
    (tree / "top.txt").write_text("edited\n")
    assert watch.due(10) == [], "edited just now: not left alone yet"
    seen_at = watch._projects["p"][1].last_at
    assert watch.due(10, now=seen_at + 9.9) == []
    assert watch.due(10, now=seen_at + 10) == ["p"], "q was not edited"
    assert watch.due(10, now=seen_at + 100) == [], "given out once per watch"
    assert watch.take("p").changed, "the pull that repairs it still takes what was seen"
    assert watch.arm("p", tree, DIRECTORIES)
    assert watch.due(10, now=seen_at + 1000) == [], "watched anew after that pull"


def test_a_tree_edited_without_a_pause_is_due_after_a_bounded_wait(watch, tree):
    assert watch.arm("p", tree, DIRECTORIES)
    (tree / "top.txt").write_text("edited\n")
    watch.due(10)   # reads the edit
    seen = watch._projects["p"][1]
    seen.last_at = seen.first_at + watch_module.QUIET_CAP * 10 - 1   # an edit a second ago, and on and on
    assert watch.due(10, now=seen.last_at + 0.5) == []
    assert watch.due(10, now=seen.first_at + watch_module.QUIET_CAP * 10) == ["p"]


def test_paths_found_changed_while_unwatched_count_as_edits_of_a_watched_tree(watch, tree):
    assert not watch.note("p", ["a"]), "not watched: nothing to note"
    assert watch.arm("p", tree, DIRECTORIES)
    assert watch.note("p", ["a", "a/b"])
    seen = watch.take("p")
    assert list(seen.paths) == ["a", "a/b"] and seen.complete
    assert watch.arm("p", tree, DIRECTORIES) and watch.note("p", [])
    seen = watch.take("p")
    assert seen.changed and not seen.complete, "changed where is not known: the pull compares contents"


def test_the_log_says_when_an_edited_tree_is_pulled_again(tree, caplog):
    watcher = TreeWatch(repair_delay=10)
    try:
        assert watcher.arm("p", tree, DIRECTORIES)
        with caplog.at_level(logging.WARNING, logger="slave.watch"):
            (tree / "top.txt").write_text("edited\n")
            watcher.take("p")
        [said] = [record.getMessage() for record in caplog.records]
        assert said.endswith("it is pulled again once left alone for 10 s, which repairs it"), said
    finally:
        watcher.close()
