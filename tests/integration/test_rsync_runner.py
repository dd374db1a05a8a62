"""RsyncRunner against a real rsync daemon on loopback: copies, secrets, deadlines, odd output."""

import os
import stat
import threading
import time
import uuid

import pytest

from common.rsync import RsyncJob, RsyncRunner
from tests.support.processes import free_port, wait_for
from tests.support.rsyncd import daemon_factory
from tests.support.trees import (
    UNSAFE_SYMLINKS,
    add_unsafe_symlinks,
    assert_same_with_rsync,
    assert_trees_equal,
    build_tricky_tree,
    mutate_tree,
)

# rsync sometimes leaves its receiver behind on SIGTERM (see RsyncRunner._stop_group);
# a short grace keeps those runs quick.
KILL_GRACE = 1.0
# Killed children of rsync are orphans, and some inits reap orphans only every second or so.
REAP_TIMEOUT = 5
SLOW_FILE_SIZE = 2 * 1024 * 1024
# KiB/s: the slow file takes ~10 s, far longer than any test lets it run.
SLOW_BWLIMIT = "--bwlimit=200"


@pytest.fixture
def start_daemon(tmp_path):
    with daemon_factory(tmp_path / "daemons") as start:
        yield start


@pytest.fixture
def runner():
    return RsyncRunner(kill_grace=KILL_GRACE)


@pytest.fixture
def slow_upstream(tmp_path):
    tree = tmp_path / "slow-upstream"
    tree.mkdir()
    (tree / "slow.bin").write_bytes(os.urandom(SLOW_FILE_SIZE))
    return tree


def read_log(path):
    with open(path, encoding="utf-8") as log:  # strict: the log must always be valid UTF-8
        return log.read()


def group_members(pgid):
    """Pids of live (non-zombie) processes in process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as stat_file:
                fields = stat_file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "pid (comm)": state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


def group_gone(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def rsync_command_lines():
    lines = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"rsync":
            lines[int(entry)] = b" ".join(argv)
    return lines


class BackgroundRun:
    """runner.run() in a thread, with the pid from on_spawn and a cancel event."""

    def __init__(self, runner, job, log_path):
        self.pid = None
        self.result = None
        self.cancel = threading.Event()
        self._spawned = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(runner, job, log_path))
        self._thread.start()

    def _run(self, runner, job, log_path):
        self.result = runner.run(job, log_path, on_spawn=self._on_spawn, cancel=self.cancel)

    def _on_spawn(self, pid):
        self.pid = pid
        self._spawned.set()

    def wait_spawned(self, timeout=5):
        assert self._spawned.wait(timeout), "rsync was not started"
        return self.pid

    def finish(self, timeout=10):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "runner.run() did not return"
        return self.result


def test_pull_copies_tricky_tree_and_follows_upstream_changes(tmp_path, start_daemon, runner):
    upstream = tmp_path / "upstream"
    build_tricky_tree(upstream)
    daemon = start_daemon({"mirror": upstream})
    dest = tmp_path / "mirror"
    job = RsyncJob(daemon.url("mirror"), str(dest))

    first = runner.run(job, str(tmp_path / "logs" / "first.log"))
    assert first.ok, f"{first.error}\n{daemon.read_log()}"
    assert_trees_equal(upstream, dest)
    assert_same_with_rsync(upstream, dest)
    # everything but the destination root, which the runner creates before rsync starts
    assert first.stats.files_created == first.stats.files_total - 1
    assert first.stats.total_size > 1024 * 1024

    mutate_tree(upstream)
    second = runner.run(job, str(tmp_path / "logs" / "second.log"))
    assert second.ok, second.error
    assert_trees_equal(upstream, dest)
    assert_same_with_rsync(upstream, dest)
    assert second.stats.files_deleted > 0
    assert not os.path.lexists(dest / "medium.bin")
    assert not os.path.lexists(dest / "dir with space")


def test_unsafe_symlinks_are_not_copied(tmp_path, start_daemon, runner):
    upstream = tmp_path / "upstream"
    build_tricky_tree(upstream)
    add_unsafe_symlinks(upstream)
    daemon = start_daemon({"mirror": upstream})
    dest = tmp_path / "mirror"

    result = runner.run(RsyncJob(daemon.url("mirror"), str(dest)), str(tmp_path / "run.log"))

    assert result.ok, result.error
    for relpath in UNSAFE_SYMLINKS:
        assert not os.path.lexists(dest / relpath), relpath
    assert os.readlink(dest / "a/b/c/link-up") == "../../../small.txt"
    assert_trees_equal(upstream, dest, ignore=set(UNSAFE_SYMLINKS))


def test_right_password_pulls_and_wrong_one_fails_naming_auth(tmp_path, start_daemon, runner):
    upstream = tmp_path / "upstream"
    build_tricky_tree(upstream)
    daemon = start_daemon({"private": upstream}, users={"mirror": "right-password"})
    url = daemon.url("private", user="mirror")

    good = runner.run(RsyncJob(url, str(tmp_path / "good"), password="right-password"), str(tmp_path / "good.log"))
    bad = runner.run(RsyncJob(url, str(tmp_path / "bad"), password="wrong-password"), str(tmp_path / "bad.log"))

    assert good.ok, good.error
    assert_trees_equal(upstream, tmp_path / "good")
    assert not bad.ok
    assert bad.exit_code == 5
    assert "auth failed on module private" in bad.error
    assert "RSYNC_PASSWORD" not in os.environ
    for log in ("good.log", "bad.log"):
        assert "-password" not in read_log(tmp_path / log)


def test_inherited_rsync_password_is_not_passed_on(tmp_path, start_daemon, runner, monkeypatch):
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    daemon = start_daemon({"private": upstream}, users={"mirror": "right-password"})
    monkeypatch.setenv("RSYNC_PASSWORD", "right-password")

    result = runner.run(RsyncJob(daemon.url("private", user="mirror"), str(tmp_path / "dest")),
                        str(tmp_path / "run.log"))

    assert not result.ok
    assert "auth failed" in result.error


def test_password_is_on_no_command_line_during_a_transfer(tmp_path, start_daemon, runner, slow_upstream):
    password = f"secret-{uuid.uuid4().hex}"
    daemon = start_daemon({"slow": slow_upstream}, users={"mirror": password})
    job = RsyncJob(daemon.url("slow", user="mirror"), str(tmp_path / "dest"), options=(SLOW_BWLIMIT,),
                   password=password)
    log_path = tmp_path / "run.log"

    run = BackgroundRun(runner, job, str(log_path))
    try:
        pgid = run.wait_spawned()
        # generator + receiver on our side, and the daemon's sender serving us
        wait_for(lambda: len(group_members(pgid)) >= 2, timeout=5, message="rsync to fork its receiver")
        commands = rsync_command_lines()
        assert set(group_members(pgid)) <= commands.keys()
        assert not [line for line in commands.values() if password.encode() in line]
        with open(f"/proc/{pgid}/environ", "rb") as environ:
            assert f"RSYNC_PASSWORD={password}".encode() in environ.read().split(b"\0")
    finally:
        run.cancel.set()
    result = run.finish()
    assert result.cancelled
    assert password not in read_log(log_path)


def test_timeout_stops_the_whole_process_group(tmp_path, start_daemon, runner, slow_upstream):
    daemon = start_daemon({"slow": slow_upstream})
    job = RsyncJob(daemon.url("slow"), str(tmp_path / "dest"), options=(SLOW_BWLIMIT,), timeout=0.5)
    spawned = []

    started = time.monotonic()
    result = runner.run(job, str(tmp_path / "run.log"), on_spawn=spawned.append)
    elapsed = time.monotonic() - started

    assert result.timed_out and not result.ok
    assert result.error == "timed out after 0.5 seconds"
    assert elapsed < 0.5 + KILL_GRACE + 1.5
    wait_for(lambda: group_gone(spawned[0]), timeout=REAP_TIMEOUT, message="rsync's process group to disappear")
    assert not (tmp_path / "dest" / "slow.bin").exists()
    assert read_log(tmp_path / "run.log").splitlines()[-1].endswith("failed: timed out after 0.5 seconds")


def test_cancel_stops_a_silent_transfer_quickly(tmp_path, start_daemon, runner, slow_upstream):
    daemon = start_daemon({"slow": slow_upstream})
    job = RsyncJob(daemon.url("slow"), str(tmp_path / "dest"), options=(SLOW_BWLIMIT,))

    run = BackgroundRun(runner, job, str(tmp_path / "run.log"))
    pgid = run.wait_spawned()
    wait_for(lambda: len(group_members(pgid)) >= 2, timeout=5, message="rsync to fork its receiver")
    cancelled_at = time.monotonic()
    run.cancel.set()
    result = run.finish()

    assert time.monotonic() - cancelled_at < KILL_GRACE + 1.0
    assert result.cancelled and not result.ok and not result.timed_out
    assert result.error == "cancelled"
    wait_for(lambda: group_gone(pgid), timeout=REAP_TIMEOUT, message="rsync's process group to disappear")


def test_missing_binary_gives_a_clean_result(tmp_path):
    log_path = tmp_path / "logs" / "run.log"
    result = RsyncRunner(binary="/nonexistent/rsync").run(RsyncJob("rsync://127.0.0.1/x", str(tmp_path / "d")),
                                                           str(log_path))
    assert (result.exit_code, result.ok) == (None, False)
    assert result.error == "rsync binary '/nonexistent/rsync' not found"
    lines = read_log(log_path).splitlines()
    assert lines[0].startswith("$ /nonexistent/rsync --recursive")
    assert lines[-1] == "# exit code None, failed: rsync binary '/nonexistent/rsync' not found"


def test_unreachable_daemon_is_a_socket_error_with_the_reason(tmp_path, runner):
    result = runner.run(RsyncJob(f"rsync://127.0.0.1:{free_port()}/mirror", str(tmp_path / "d")),
                        str(tmp_path / "run.log"))
    assert result.exit_code == 10
    assert "Connection refused" in result.error


def test_log_holds_command_output_and_outcome_and_is_not_world_readable(tmp_path, runner):
    source = tmp_path / "source"
    build_tricky_tree(source)
    log_path = tmp_path / "deep" / "logs" / "run.log"

    result = runner.run(RsyncJob(str(source), str(tmp_path / "new" / "parents" / "dest")), str(log_path))
    runner.run(RsyncJob(str(source), str(tmp_path / "new" / "parents" / "dest")), str(log_path))

    assert result.ok, result.error
    lines = read_log(log_path).splitlines()
    assert lines[0].startswith("$ rsync --recursive --links --perms --times --hard-links --delete")
    assert any(line.startswith("Number of files: ") for line in lines)
    assert lines.count("# exit code 0, ok") == 2  # appended, not overwritten
    assert stat.S_IMODE(os.stat(log_path).st_mode) & 0o027 == 0


def test_file_names_that_are_not_utf8_do_not_break_the_log(tmp_path, runner):
    source = tmp_path / "source"
    source.mkdir()
    with open(os.path.join(os.fsencode(source), b"bad-\xff-name"), "wb") as stream:
        stream.write(b"x")
    log_path = tmp_path / "run.log"
    # --8-bit-output makes rsync print the raw byte instead of its \#377 escape.
    job = RsyncJob(str(source), str(tmp_path / "dest"), options=("--itemize-changes", "--8-bit-output"))

    result = runner.run(job, str(log_path))

    assert result.ok, result.error
    assert "bad-\\xff-name" in read_log(log_path)
    assert os.path.exists(os.path.join(os.fsencode(tmp_path / "dest"), b"bad-\xff-name"))


def test_paths_that_look_like_options_are_taken_as_paths(tmp_path, runner, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-source").mkdir()
    (tmp_path / "-source" / "file").write_text("x")

    result = runner.run(RsyncJob("-source", "--delete"), "run.log")

    assert result.ok, result.error
    assert (tmp_path / "--delete" / "file").read_text() == "x"


def test_cancel_before_start_runs_nothing(tmp_path, runner):
    cancel = threading.Event()
    cancel.set()
    spawned = []

    result = runner.run(RsyncJob(str(tmp_path), str(tmp_path / "dest")), str(tmp_path / "run.log"),
                        on_spawn=spawned.append, cancel=cancel)

    assert result.cancelled and not result.ok
    assert spawned == []
    assert not (tmp_path / "dest").exists()
