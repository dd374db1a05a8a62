"""A hostile upstream tree: nothing outside DATA_DIR/<project> and PUBLIC_DIR/<project> may change.

The upstream serves absolute symlinks, symlinks escaping the tree, a symlinked
directory pointing outside, names that look like flags or like the master's
and the slave's own state, and later replaces a real directory by a symlink
to outside. A master and one slave pull it as two projects, one published
with ``delay`` and one with ``atomic``. Canary directories sit next to
DATA_DIR and PUBLIC_DIR; everything outside the expected roots is recorded
before and compared after each sync.
"""

import hashlib
import os
import socket
import stat

import pytest

from tests.integration.conftest import ApiClient
from tests.support.processes import DEFAULT_JOIN_TOKEN, start_slave, wait_for, wait_run_finished
from tests.support.rsyncd import RsyncDaemon

MARKER = b"HOSTILE-UPSTREAM-CONTENT"
PROJECTS = {"hostile-delay": "delay", "hostile-atomic": "atomic"}
SNAPSHOTS = ".mirrorsync-snapshots"
MASTER_ENV = {"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN, "MIRRORSYNC_HEARTBEAT_TIMEOUT": "3"}
# Files of the system a mistake with an absolute symlink could reach.
SYSTEM_FILES = ("/etc/passwd", "/etc/hostname", "/etc/hosts")
# Symlinks that point out of the tree, at several depths, so that they escape from
# DATA_DIR/<project>, PUBLIC_DIR/<project> and PUBLIC_DIR/.mirrorsync-snapshots/<project>/<n> alike.
ESCAPING = ["../outside", "../../outside", "../../../outside", "../../../../outside", "../../../../../outside"]


def write(path, content=MARKER):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content + b" " + str(path.name).encode())


def build_hostile_tree(tree):
    write(tree / "README")
    write(tree / "pool" / "main" / "a.deb")
    write(tree / "swap" / "inside.txt")          # a real directory, a symlink to outside later
    write(tree / "swap" / "deeper" / "more.txt")
    for name in ("..foo", "-rf", "--delete", "-e ssh", ".mirrorsync", "...", "~", "*", "$(reboot)", "a;b"):
        write(tree / name)
    write(tree / SNAPSHOTS / "hostile-atomic" / "fake" / "README")   # looks like the slave's own snapshots
    write(tree / "pool" / ".mirrorsync" / "rsyncd.conf")                # looks like the master's state dir
    os.symlink("/etc/passwd", tree / "passwd")
    os.symlink("/", tree / "root")
    os.symlink("/etc", tree / "pool" / "etc")
    for depth, target in enumerate(ESCAPING):
        os.symlink(target, tree / f"up{depth}")
        os.symlink(target + "/canary.txt", tree / "pool" / f"file-up{depth}")
    os.symlink("../../outside", tree / "evil")          # a directory symlink pointing outside
    os.symlink("../../../outside", tree / "pool" / "evil")
    os.symlink("main/a.deb", tree / "pool" / "safe-link")  # a safe one, which must arrive


def mutate_hostile_tree(tree):
    """swap/ becomes a symlink to outside; evil becomes a real directory with files 'inside' it."""
    for path in sorted((tree / "swap").rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
    (tree / "swap").rmdir()
    os.symlink("../../outside", tree / "swap")
    (tree / "evil").unlink()
    write(tree / "evil" / "canary.txt", b"OVERWRITTEN-THROUGH-A-SYMLINK")
    write(tree / "evil" / "owned.txt")
    (tree / "pool" / "evil").unlink()
    write(tree / "pool" / "evil" / "canary.txt", b"OVERWRITTEN-THROUGH-A-SYMLINK")


def make_canary(directory):
    directory.mkdir(parents=True)
    (directory / "canary.txt").write_bytes(b"canary")
    (directory / "sub").mkdir()
    (directory / "sub" / "keep.txt").write_bytes(b"keep")
    os.utime(directory / "sub", (1_600_000_000, 1_600_000_000))
    os.utime(directory, (1_600_000_000, 1_600_000_000))


def describe(path):
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    entry = {"kind": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "ino": st.st_ino}
    if stat.S_ISLNK(st.st_mode):
        entry["target"] = os.readlink(path)
    elif stat.S_ISREG(st.st_mode):
        entry.update(size=st.st_size, mtime=st.st_mtime_ns,
                     sha=hashlib.sha256(open(path, "rb").read()).hexdigest())
    elif stat.S_ISDIR(st.st_mode):
        entry["mtime"] = st.st_mtime_ns
    return entry


class Layout:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.data_dir = tmp_path / "master"
        self.slave_root = tmp_path / "mirror1"
        self.public_dir = self.slave_root / "public"
        self.tree = tmp_path / "up" / "tree"
        self.canaries = [tmp_path / "outside", self.slave_root / "outside", tmp_path / "up" / "outside",
                         self.public_dir.parent / "public-outside"]

    def expected_roots(self):
        """Where a sync may write: the projects' trees, the slave's snapshots, state and logs."""
        roots = {self.data_dir / ".mirrorsync", self.slave_root / "state", self.tmp / "logs",
                 self.tmp / "up" / "rsyncd"}
        for project in PROJECTS:
            roots |= {self.data_dir / project, self.data_dir / ".snapshots" / project, self.public_dir / project,
                      self.public_dir / SNAPSHOTS / project}
        return roots

    def outside_snapshot(self):
        """Everything under tmp_path but the expected roots, and the system files."""
        skip = self.expected_roots()
        # These directories hold the expected roots (and may appear with them): walked, not recorded.
        containers = {self.tmp, self.data_dir, self.data_dir / ".snapshots", self.slave_root, self.public_dir,
                      self.public_dir / SNAPSHOTS}
        found = {}
        for dirpath, dirnames, filenames in os.walk(self.tmp):
            dirpath = type(self.tmp)(dirpath)
            dirnames[:] = [d for d in dirnames if dirpath / d not in skip]
            for name in dirnames + filenames:
                path = dirpath / name
                if path in skip:
                    continue
                if path not in containers:
                    found[str(path)] = describe(path)
        for path in SYSTEM_FILES:
            if os.path.lexists(path):
                found[path] = describe(path)
        found["/"] = {"entries": sorted(os.listdir("/"))}
        return found


def unsafe_symlinks(root):
    """Symlinks under ``root`` that are absolute or resolve outside it (the root itself may be a link)."""
    root = os.path.realpath(root)
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                continue
            target = os.readlink(path)
            resolved = os.path.normpath(os.path.join(dirpath, target))
            if os.path.isabs(target) or not (resolved == root or resolved.startswith(root + os.sep)):
                bad.append((os.path.relpath(path, root), target))
    return bad


def assert_nothing_outside_changed(before, after):
    changed = {path: (before.get(path), after.get(path)) for path in set(before) | set(after)
               if before.get(path) != after.get(path)}
    assert not changed, f"changed outside the project roots: {changed}"


def assert_projects_safe(layout):
    for project in PROJECTS:
        for root in (layout.data_dir / project, layout.public_dir / project):
            assert root.exists(), root
            assert unsafe_symlinks(root) == [], root
        snapshots = layout.public_dir / SNAPSHOTS / project
        if snapshots.exists():
            for snapshot in snapshots.iterdir():
                assert unsafe_symlinks(snapshot) == [], snapshot
    for project, mode in PROJECTS.items():
        live = layout.public_dir / project
        if mode == "atomic":
            assert live.is_symlink() and not os.path.isabs(os.readlink(live))
            assert os.path.realpath(live).startswith(str(layout.public_dir / SNAPSHOTS / project) + os.sep)
        for tree in (layout.data_dir / project, live):
            assert (tree / "pool" / "safe-link").is_symlink(), "the safe symlink must arrive"
            assert (tree / "-rf").is_file() and (tree / "..foo").is_file()
            for name in ("passwd", "root", "evil", "up0", "up4", "pool/etc", "pool/file-up1"):
                if (tree / name).is_symlink():
                    raise AssertionError(f"{tree / name} -> {os.readlink(tree / name)} arrived")


def assert_master_state_untouched(layout):
    state = layout.data_dir / ".mirrorsync"
    for dirpath, _, filenames in os.walk(state):
        if os.path.basename(dirpath) == "logs" or "/logs/" in dirpath + "/":
            continue
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                raise AssertionError(f"a symlink in the master's state dir: {path}")
            if not os.path.isfile(path):
                continue  # the scheduler's wake-up socket
            with open(path, "rb") as file:
                assert MARKER not in file.read(), f"upstream content in {path}"
    assert not (layout.data_dir / ".mirrorsync" / "rsyncd.conf").read_bytes().startswith(MARKER)


@pytest.fixture
def hostile(master_factory, tmp_path):
    layout = Layout(tmp_path)
    for canary in layout.canaries:
        make_canary(canary)
    build_hostile_tree(layout.tree)
    daemon = RsyncDaemon(tmp_path / "up" / "rsyncd", {"hostile": layout.tree}).start()
    master = master_factory(layout.data_dir, extra_env=MASTER_ENV)
    api = ApiClient(master.url, master.admin_token)
    slave = start_slave(layout.slave_root, "mirror1", master.url, log_dir=tmp_path / "logs")
    yield layout, daemon, master, api, slave
    slave.stop()
    api.close()
    daemon.stop()


def sync_all(api, master):
    started = {}
    for project in PROJECTS:
        response = api.post(f"/api/v1/projects/{project}/syncs")
        assert response.status_code == 202, response.text
        started[project] = response.json()["id"]
    return {project: wait_run_finished(master.url, master.admin_token, run_id, timeout=30)
            for project, run_id in started.items()}


def sync_hostile_tree_twice(hostile):
    """Both syncs of the scenario, each checked for safety; returns the layout."""
    layout, daemon, master, api, slave = hostile
    wait_for(lambda: [s["state"] for s in api.get("/api/v1/slaves").json()] == ["online"], 20,
             message="the slave online")
    for project, mode in PROJECTS.items():
        response = api.post("/api/v1/projects", json={"name": project, "upstream": daemon.url("hostile"),
                                                      "publish": mode})
        assert response.status_code == 201, response.text
    for name in (".mirrorsync", SNAPSHOTS, "..", "-rf"):
        refused = api.post("/api/v1/projects", json={"name": name, "upstream": daemon.url("hostile")})
        assert 400 <= refused.status_code < 500, (name, refused.status_code)
    before = layout.outside_snapshot()

    runs = sync_all(api, master)
    for project, run in runs.items():
        assert run["state"] == "success", (project, run)
        assert [entry["state"] for entry in run["slaves"]] == ["success"], run
    assert_nothing_outside_changed(before, layout.outside_snapshot())
    assert_projects_safe(layout)
    assert_master_state_untouched(layout)

    # The upstream turns a real directory into a symlink to outside, and the outside symlink
    # into a real directory whose files carry the canaries' names.
    mutate_hostile_tree(layout.tree)
    before = layout.outside_snapshot()
    runs = sync_all(api, master)
    for project, run in runs.items():
        assert run["state"] == "success", (project, run)
        assert [entry["state"] for entry in run["slaves"]] == ["success"], run
    assert_nothing_outside_changed(before, layout.outside_snapshot())
    assert_projects_safe(layout)
    assert_master_state_untouched(layout)
    for project in PROJECTS:
        for tree in (layout.data_dir / project, layout.public_dir / project):
            assert (tree / "evil" / "owned.txt").is_file() and not (tree / "evil").is_symlink()
            assert (tree / "evil" / "canary.txt").read_bytes().startswith(b"OVERWRITTEN")
    for canary in layout.canaries:
        assert (canary / "canary.txt").read_bytes() == b"canary"
        assert not (canary / "owned.txt").exists()
    return layout


def test_a_hostile_upstream_touches_nothing_outside_the_project_roots(hostile):
    sync_hostile_tree_twice(hostile)


def test_a_directory_upstream_replaced_by_an_unsafe_symlink_does_not_linger(hostile):
    """rsync --safe-links skips the unsafe symlink that replaced upstream's swap/ directory; pulled in
    place, --delete then kept the old swap/ forever. Each pull into a fresh snapshot leaves it behind."""
    layout = sync_hostile_tree_twice(hostile)
    for project in PROJECTS:
        for tree in (layout.data_dir / project, layout.public_dir / project):
            assert not os.path.lexists(tree / "swap"), f"{tree / 'swap'} is still there"


def build_special_tree(tree):
    """Device nodes, special files, set-id bits, foreign owners and world-writable modes."""
    tree.mkdir(parents=True)
    write(tree / "README")
    os.mknod(tree / "null-device", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(tree / "disk-device", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    os.mkfifo(tree / "fifo")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tree / "socket"))
    write(tree / "setuid-root")
    os.chmod(tree / "setuid-root", 0o4755)
    write(tree / "setgid-file")
    os.chmod(tree / "setgid-file", 0o2755)
    (tree / "setgid-dir").mkdir()
    write(tree / "setgid-dir" / "inside")
    os.chmod(tree / "setgid-dir", 0o2775)
    write(tree / "world-writable")
    os.chmod(tree / "world-writable", 0o666)
    write(tree / "foreign-owner")
    os.chown(tree / "foreign-owner", 4242, 4343)
    os.chown(tree / "setgid-dir", 4242, 4343)


def assert_no_special_landed(root):
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                found.append((path, "special file", oct(st.st_mode)))
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID | 0o022):
                found.append((path, "set-id or group/world-writable", oct(stat.S_IMODE(st.st_mode))))
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                found.append((path, "owner kept", st.st_uid, st.st_gid))
    assert not found, found


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes and foreign owners needs root")
def test_devices_specials_set_id_bits_and_owners_never_land_on_master_or_slave(master_factory, tmp_path):
    tree = tmp_path / "up" / "special"
    build_special_tree(tree)
    daemon = RsyncDaemon(tmp_path / "up" / "rsyncd", {"special": tree}).start()
    master = master_factory(tmp_path / "master", extra_env=MASTER_ENV)
    api = ApiClient(master.url, master.admin_token)
    slave = start_slave(tmp_path / "mirror1", "mirror1", master.url, log_dir=tmp_path / "logs")
    try:
        wait_for(lambda: [s["state"] for s in api.get("/api/v1/slaves").json()] == ["online"], 20,
                 message="the slave online")
        for project, mode in PROJECTS.items():
            # A project's own options cannot bring any of it back.
            created = api.post("/api/v1/projects", json={
                "name": project, "upstream": daemon.url("special"), "publish": mode,
                "rsync_options": ["--chmod=u+s,g+s,o+w"]})
            assert created.status_code == 201, created.text
        runs = sync_all(api, master)
        for project, run in runs.items():
            assert run["state"] == "success", (project, run)
            assert [entry["state"] for entry in run["slaves"]] == ["success"], run
        for project in PROJECTS:
            for root in (tmp_path / "master" / project, tmp_path / "mirror1" / "public" / project):
                assert (root / "README").is_file() and (root / "setuid-root").is_file()
                assert (root / "foreign-owner").is_file() and (root / "setgid-dir" / "inside").is_file()
                for gone in ("null-device", "disk-device", "fifo", "socket"):
                    assert not os.path.lexists(root / gone), f"{root / gone} landed"
                assert_no_special_landed(os.path.realpath(root))
    finally:
        slave.stop()
        api.close()
        daemon.stop()
