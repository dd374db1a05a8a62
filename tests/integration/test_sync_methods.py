"""The sync methods with real rsync and real scripts: two stages, a command, hooks."""

import os
import stat
import threading

from common import hooks
from common.methods import COMMAND, TWO_STAGE, MethodSpec, Runners, method_for
from common.processes import ProgramRunner
from common.rsync import RsyncRunner, result_from_exit
from tests.support.faults import live_argv


def write(root, relpath, text, mtime=None):
    path = os.path.join(root, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as stream:
        stream.write(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def debian_version(root, version):
    """A tiny archive: pool files of ``version`` only, and indices naming them."""
    mtime = 1_700_000_000 + int(version)
    write(root, f"pool/main/h/hello/hello_{version}_amd64.deb", f"deb {version}\n", mtime)
    for old in os.listdir(os.path.join(root, "pool/main/h/hello")):
        if old != f"hello_{version}_amd64.deb":
            os.unlink(os.path.join(root, "pool/main/h/hello", old))
    write(root, "dists/stable/main/binary-amd64/Packages", f"Filename: pool/main/h/hello/hello_{version}_amd64.deb\n", mtime)
    write(root, "dists/stable/main/i18n/Translation-en", f"hello {version}\n", mtime)
    write(root, "dists/stable/InRelease", f"release {version}\n", mtime)
    write(root, "dists/stable/main/by-hash/SHA256/" + f"{version}" * 8, f"Packages {version}\n", mtime)


class Watching:
    """A real rsync runner that looks at the tree before each stage starts."""

    def __init__(self, tree, fail_first=False):
        self.real = RsyncRunner(kill_grace=1)
        self.tree = tree
        self.fail_first = fail_first
        self.jobs = []
        self.seen = []

    def run(self, job, log_path, **kwargs):
        self.jobs.append(job)
        self.seen.append(sorted(os.path.relpath(os.path.join(d, n), self.tree)
                                for d, _, names in os.walk(self.tree) for n in names))
        if self.fail_first and len(self.jobs) == 1:
            return result_from_exit(10, "rsync: connection reset")
        return self.real.run(job, log_path, **kwargs)


def test_two_stage_brings_the_pool_before_the_indices_and_deletes_last(tmp_path):
    upstream, tree = str(tmp_path / "upstream"), str(tmp_path / "tree")
    debian_version(upstream, "1")
    spec = MethodSpec(method=TWO_STAGE, source=upstream, stage1_profile="debian", protect=("project/trace/me",))
    runner = Watching(tree)
    method = method_for(spec, Runners(runner, ProgramRunner()))
    assert method.run(tree, str(tmp_path / "1.log")).ok
    write(tree, "project/trace/me", "our own trace\n")
    debian_version(upstream, "2")

    progress = []
    result = method.run(tree, str(tmp_path / "2.log"), on_progress=progress.append)
    assert result.ok, result.error
    between = runner.seen[-1]   # the tree as stage 2 starts: stage 1 is over
    assert "pool/main/h/hello/hello_2_amd64.deb" in between, "new pool files arrive in stage 1"
    assert "pool/main/h/hello/hello_1_amd64.deb" in between, "stage 1 deletes nothing"
    assert "dists/stable/main/by-hash/SHA256/" + "2" * 8 in between, "by-hash files come early, as in ftpsync"
    with open(os.path.join(upstream, "dists/stable/main/binary-amd64/Packages")) as new_index:
        assert new_index.read().endswith("hello_2_amd64.deb\n")
    assert runner.jobs[-2].delete is False and runner.jobs[-1].delete is True
    # After stage 2 the tree is upstream's, with our trace kept.
    assert not os.path.exists(os.path.join(tree, "pool/main/h/hello/hello_1_amd64.deb"))
    with open(os.path.join(tree, "dists/stable/main/binary-amd64/Packages")) as index:
        assert "hello_2" in index.read()
    assert os.path.exists(os.path.join(tree, "project/trace/me")), "our trace survives the deletions"
    assert [name for name, _ in result.stages] == ["stage1", "stage2"]
    assert result.stats.files_deleted >= 1 and result.stats.bytes_received > 0
    with open(tmp_path / "2.log") as log:
        text = log.read()
    assert text.count("$ rsync") == 2 and "--exclude=Packages*" in text, "the log covers both stages"
    if progress:
        assert {p["stage"] for p in progress} <= {1, 2} and all(p["stages"] == 2 for p in progress)


def test_a_failed_stage_one_leaves_the_indices_untouched(tmp_path):
    upstream, tree = str(tmp_path / "upstream"), str(tmp_path / "tree")
    debian_version(upstream, "1")
    spec = MethodSpec(method=TWO_STAGE, source=upstream, stage1_profile="debian")
    assert method_for(spec, Runners(RsyncRunner(), ProgramRunner())).run(tree, str(tmp_path / "1.log")).ok
    debian_version(upstream, "2")
    runner = Watching(tree, fail_first=True)
    result = method_for(spec, Runners(runner, ProgramRunner())).run(tree, str(tmp_path / "2.log"))
    assert not result.ok and result.error.startswith("stage 1:") and result.transient
    assert len(runner.jobs) == 1, "no stage 2 after a failed stage 1"
    with open(os.path.join(tree, "dists/stable/main/binary-amd64/Packages")) as index:
        assert "hello_1" in index.read()


def make_script(directory, name, body):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w") as script:
        script.write("#!/bin/sh\n" + body)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def test_a_command_runs_in_the_tree_with_its_arguments_and_the_size_is_walked(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRRORSYNC_ADMIN_TOKEN", "not-for-scripts")
    script = make_script(tmp_path / "scripts", "fetch", 'echo "args: $*"; env | grep -c ADMIN_TOKEN; '
                                                        'printf 12345 > "$MIRRORSYNC_DIR/data"; pwd\n')
    tree = tmp_path / "tree"
    spec = MethodSpec(method=COMMAND, program=script, arguments=("one", "two words"), timeout=30)
    result = method_for(spec, Runners(RsyncRunner(), ProgramRunner())).run(str(tree), str(tmp_path / "run.log"))
    assert result.ok and result.exit_code == 0
    assert (result.stats.files_total, result.stats.total_size) == (1, 5)
    log = (tmp_path / "run.log").read_text()
    assert "args: one two words" in log and f"\n{tree}\n" in log
    assert "\n0\n" in log, "the master's own settings and secrets stay out of a script's environment"


def test_a_command_that_hangs_is_ended_with_its_process_group(tmp_path):
    # The script's child names itself in a file: a look for "sleep 300" by name would also find the
    # one of another test running at the same time.
    child = tmp_path / "child.pid"
    script = make_script(tmp_path / "scripts", "hang", f"sleep 300 &\necho $! > '{child}'\nwait\n")
    spec = MethodSpec(method=COMMAND, program=script, timeout=0.5)
    result = method_for(spec, Runners(RsyncRunner(), ProgramRunner(kill_grace=1))).run(
        str(tmp_path / "tree"), str(tmp_path / "run.log"))
    assert not result.ok and result.timed_out and "timed out after 0.5 seconds" in result.error
    assert live_argv(int(child.read_text())) is None, "the whole group was ended"



def test_a_command_failure_is_transient_only_for_the_codes_the_project_names(tmp_path):
    script = make_script(tmp_path / "scripts", "flaky", 'echo "upstream busy" >&2; exit 75\n')
    runners = Runners(RsyncRunner(), ProgramRunner())
    for codes, transient in ((frozenset({75}), True), (frozenset(), False)):
        spec = MethodSpec(method=COMMAND, program=script, transient_exit_codes=codes, timeout=30)
        result = method_for(spec, runners).run(str(tmp_path / "tree"), str(tmp_path / "run.log"))
        assert (result.ok, result.exit_code, result.transient) == (False, 75, transient)
        assert result.error == "sync script 'flaky': exit code 75: upstream busy"


def test_a_hook_gets_its_arguments_and_environment_and_its_output_lands_in_the_log(tmp_path):
    hooks_dir = tmp_path / "hooks"
    make_script(hooks_dir, "notify", 'echo "$* | $MIRRORSYNC_PROJECT $MIRRORSYNC_RUN_ID $MIRRORSYNC_STATE '
                                     '$MIRRORSYNC_DIR"\n')
    make_script(hooks_dir, "broken", "echo oops; exit 3\n")
    path = hooks.executable_in(str(hooks_dir), "notify")
    error = hooks.run_hook(ProgramRunner(), path, hooks.POST_SUCCESS, project="debian", run_id=7, state="success",
                           directory=str(tmp_path), log_path=str(tmp_path / "run.log"), timeout=10)
    assert error is None
    assert f"post_success debian 7 success | debian 7 success {tmp_path}" in (tmp_path / "run.log").read_text()
    error = hooks.run_hook(ProgramRunner(), hooks.executable_in(str(hooks_dir), "broken"), hooks.PRE_SYNC,
                           project="debian", run_id=8, state="syncing", directory=str(tmp_path),
                           log_path=str(tmp_path / "run.log"), timeout=10)
    assert error == "hook pre_sync (broken) failed: exit code 3"


def test_a_hook_is_named_never_pathed(tmp_path):
    make_script(tmp_path / "hooks", "ok", "exit 0\n")
    (tmp_path / "hooks" / "not-executable").write_text("#!/bin/sh\n")
    for name in ("../ok", "/bin/sh", "sub/ok", "", ".hidden", "missing", "not-executable"):
        try:
            hooks.executable_in(str(tmp_path / "hooks"), name)
        except ValueError:
            continue
        raise AssertionError(f"{name!r} was accepted")
    assert hooks.executable_in(str(tmp_path / "hooks"), "ok") == str(tmp_path / "hooks" / "ok")


def test_cancelling_a_command_ends_it(tmp_path):
    script = make_script(tmp_path / "scripts", "slow", "sleep 300\n")
    cancel = threading.Event()
    spec = MethodSpec(method=COMMAND, program=script, timeout=60)
    threading.Timer(0.3, cancel.set).start()
    result = method_for(spec, Runners(RsyncRunner(), ProgramRunner(kill_grace=1))).run(
        str(tmp_path / "tree"), str(tmp_path / "run.log"), cancel=cancel)
    assert result.cancelled and not result.ok
