"""Secrets never leak: a real master, two real slaves and a password-protected upstream.

Every secret of the deployment (upstream password, admin and join tokens, each
slave's signing key and rsync password, the master's rsyncd secrets) is looked
for in every process's command line while the pulls run, in every API answer,
in every log, and the files that hold them must be private.
"""

import json
import os
import random
import stat
import threading
import time

import pytest

from tests.integration.conftest import ApiClient
from tests.support.faults import throttled_rsync
from tests.support.processes import start_slave, wait_for, wait_run_finished
from tests.support.rsyncd import RsyncDaemon

UPSTREAM_SECRET = "upstream-Pw-7c1e9b44d2"
ADMIN_TOKEN = "admin-Tok-5f0a9d3e61b2"
JOIN_TOKEN = "join-Tok-c83b1f27e940"
SLAVES = ("mirror1", "mirror2")
MASTER_ENV = {"MIRRORSYNC_JOIN_TOKEN": JOIN_TOKEN, "MIRRORSYNC_HEARTBEAT_TIMEOUT": "3"}


def all_cmdlines():
    """pid -> raw cmdline of every process we can read."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                found[int(pid)] = cmdline.read()
        except OSError:
            continue
    return found


class CmdlineScanner(threading.Thread):
    """Reads every /proc/*/cmdline over and over until stopped; keeps what matched a marker."""

    def __init__(self, markers):
        super().__init__(daemon=True)
        self.markers = {name: marker.encode() for name, marker in markers.items()}
        self.seen = {name: {} for name in markers}   # marker name -> {pid: cmdline}
        self.all_seen = {}
        self.passes = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            for pid, cmdline in all_cmdlines().items():
                self.all_seen.setdefault((pid, cmdline), None)
                if cmdline.startswith(b"rsync") or b"/rsync\0" in cmdline:
                    for name, marker in self.markers.items():
                        if marker in cmdline:
                            self.seen[name][pid] = cmdline
            self.passes += 1

    def stop(self):
        self._halt.set()
        self.join(10)


def every_file(root):
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            yield os.path.join(dirpath, name)


def assert_private(path):
    mode = os.stat(path).st_mode
    assert stat.S_IMODE(mode) == 0o600, f"{path} is {oct(stat.S_IMODE(mode))}, not 0600"
    directory = os.path.dirname(path)
    while directory not in ("/", ""):
        dir_mode = os.stat(directory).st_mode
        if directory.startswith("/tmp") and os.path.realpath(directory) in ("/tmp",):
            break
        assert not dir_mode & stat.S_IWOTH or dir_mode & stat.S_ISVTX, f"{directory} is world-writable"
        if os.path.basename(directory).startswith("test_"):  # the test's own tmp_path: enough
            break
        directory = os.path.dirname(directory)


def assert_no_secret(text, secrets, where):
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    leaked = [name for name, secret in secrets.items() if secret in text]
    assert not leaked, f"{where} holds {leaked}"


@pytest.fixture
def deployment(master_factory, tmp_path):
    master = master_factory(tmp_path / "master", admin_token=ADMIN_TOKEN, extra_env=MASTER_ENV)
    api = ApiClient(master.url, master.admin_token)
    # The slaves' pulls of 3 MB take about half a second (throttled_rsync): unthrottled, one may end
    # between two passes of the scan over /proc on a busy machine, and its command line goes unread.
    slow = {"MIRRORSYNC_RSYNC_BINARY": str(throttled_rsync(tmp_path / "bin", 6000))}
    slaves = {name: start_slave(tmp_path / name, name, master.url, join_token=JOIN_TOKEN,
                                log_dir=tmp_path / "logs", extra_env=slow) for name in SLAVES}
    tree = tmp_path / "upstream-tree"
    tree.mkdir()
    for index in range(3):
        (tree / f"part{index}.bin").write_bytes(random.Random(index).randbytes(1024 * 1024))
    (tree / "README").write_text("hello\n")
    daemon = RsyncDaemon(tmp_path / "upstream-rsyncd", {"private": tree}, users={"mirror": UPSTREAM_SECRET})
    daemon.start()
    yield master, api, slaves, daemon, tree
    daemon.stop()
    for slave in slaves.values():
        slave.stop()
    api.close()


def test_no_secret_in_command_lines_responses_or_logs_and_secret_files_are_private(deployment, tmp_path):
    master, api, slaves, daemon, tree = deployment
    wait_for(lambda: {s["name"]: s["state"] for s in api.get("/api/v1/slaves").json()}
             == {name: "online" for name in SLAVES}, 20, message="both slaves online")
    response = api.post("/api/v1/projects", json={
        "name": "private", "upstream": daemon.url("private", user="mirror"), "upstream_password": UPSTREAM_SECRET,
        "rsync_options": ["--bwlimit=1500"]})
    assert response.status_code == 201, response.text

    secrets = {"upstream password": UPSTREAM_SECRET, "admin token": ADMIN_TOKEN, "join token": JOIN_TOKEN}
    credential_files = {}
    for name, slave in slaves.items():
        credential_files[name] = slave.state_dir / "credentials.json"
        credentials = json.loads(credential_files[name].read_text())
        secrets[f"{name} signing key"] = credentials["signing_key"]
        secrets[f"{name} rsync password"] = credentials["rsync_password"]
    secrets_file = master.data_dir / ".mirrorsync" / "rsyncd.secrets"
    for line in secrets_file.read_text().splitlines():
        user, _, password = line.partition(":")
        if password:
            secrets[f"master rsyncd password of {user}"] = password
    assert all(len(secret) >= 8 for secret in secrets.values()), secrets.keys()

    # (a) command lines, scanned over and over while the master's and the slaves' rsyncs run
    # The master pulls into a new snapshot of the project (master/snapshots.py).
    scanner = CmdlineScanner({"master": str(master.data_dir / ".snapshots" / "private"),
                              **{name: str(slave.public_dir) for name, slave in slaves.items()}})
    scanner.start()
    try:
        run_id = api.post("/api/v1/projects/private/syncs").json()["id"]
        run = wait_run_finished(master.url, master.admin_token, run_id, timeout=30)
    finally:
        scanner.stop()
    assert run["state"] == "success", run
    unseen = [name for name, found in scanner.seen.items() if not found]
    assert not unseen, f"the scan never saw the rsync of {unseen}"
    assert scanner.passes > 5
    for (pid, cmdline) in scanner.all_seen:
        assert_no_secret(cmdline.replace(b"\0", b" "), secrets, f"/proc/{pid}/cmdline {cmdline[:200]!r}")
    for name, slave in slaves.items():
        assert (slave.tree("private") / "part2.bin").stat().st_size == 1024 * 1024, name

    # (b) every API answer, for admins and for the public
    paths = ["/api/v1/projects", "/api/v1/projects/private", "/api/v1/projects/private/runs",
             f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/log", "/api/v1/slaves",
             *[f"/api/v1/slaves/{name}" for name in SLAVES], "/api/v1/status", "/jobs", "/metrics",
             "/api/v1/openapi.json", "/healthz"]
    public = ApiClient(master.url, None)
    try:
        for path in paths:
            for client in (api, public):
                answer = client.get(path)
                assert answer.status_code < 500, (path, answer.status_code)
                assert_no_secret(answer.text, secrets, f"GET {path}")
                assert_no_secret(json.dumps(dict(answer.headers)), secrets, f"headers of GET {path}")
        for name, slave in slaves.items():
            for path in ("/healthz", f"/api/v1/syncs/{run_id}"):
                answer = public.session.get(slave.url + path, timeout=10)
                assert_no_secret(answer.text, secrets, f"{name} GET {path}")
    finally:
        public.close()

    # (c) every log: the processes', the run logs of master and slaves, the rsync daemons'
    logs = [master.log_path, *[slave.log_path for slave in slaves.values()], daemon.log_path]
    logs += list(every_file(master.data_dir / ".mirrorsync" / "logs"))
    logs += [master.data_dir / ".mirrorsync" / "rsyncd.log"]
    for slave in slaves.values():
        logs += list(every_file(slave.state_dir / "logs"))
    logs += [path for path in every_file(tmp_path / "logs")]
    run_logs = [path for path in logs if "/logs/" in str(path) and ".mirrorsync" in str(path)]
    assert run_logs, "the master kept no run log"
    for path in set(map(str, logs)):
        if os.path.exists(path):
            with open(path, "rb") as log:
                assert_no_secret(log.read(), secrets, f"log {path}")

    # (d) files holding secrets are 0600, in directories nobody else can write
    db_file = master.data_dir / ".mirrorsync" / "mirrorsync.db"
    for path in (db_file, secrets_file, *credential_files.values()):
        assert_private(path)


def test_a_slave_that_enrolled_shows_its_secrets_only_in_its_own_state(deployment):
    """The credentials answer goes to the slave's credentials.json and nowhere the API shows."""
    master, api, slaves, daemon, tree = deployment
    wait_for(lambda: len(api.get("/api/v1/slaves").json()) == 2, 20, message="both slaves enrolled")
    for name, slave in slaves.items():
        credentials = json.loads((slave.state_dir / "credentials.json").read_text())
        for other in (api.get("/api/v1/slaves").text, api.get(f"/api/v1/slaves/{name}").text,
                      master.log_text(), slave.log_text()):
            assert credentials["signing_key"] not in other
            assert credentials["rsync_password"] not in other
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        for cmdline in all_cmdlines().values():
            assert JOIN_TOKEN.encode() not in cmdline
        time.sleep(0.05)
