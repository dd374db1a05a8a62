"""docs/deploy.md, followed on this machine: the samples in examples/deploy/ work as written.

The guide's paths (/opt/mirror-sync, /etc/mirror-sync, /srv, /var/lib, /run),
its user name, ports and host names are swapped for private ones, so the test
runs beside others; nothing else is changed. The guide's `useradd` and
`install` lines run as written. Instead of `git clone` + `pip install` the
install is a root-owned copy of this checkout with a prebuilt venv from the
system's Python (tests/support/service_user.py). Each unit is checked with
`systemd-analyze verify` and its ExecStart runs under the unit's user,
environment, read-only file system and private /tmp (tests/support/unit_sandbox.py),
in the order systemd would start them; nginx with the sample configuration
fronts the API with TLS; a slave under its unit enrolls through nginx and a
sync reaches it.
"""

import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
from configparser import ConfigParser
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import _track
from tests.support import unit_sandbox
from tests.support.apt import ensure_program
from tests.support.processes import REPO_ROOT, ServiceProcess, free_port, wait_for
from tests.support.rsyncd import RsyncDaemon
from tests.support.service_user import (ServiceUserError, end_processes_of, install_copy, missing_tools,
                                        service_venv, uid_of)
from tests.support.tls import CertificateAuthority
from tests.support.trees import assert_trees_equal, build_tricky_tree

pytestmark = pytest.mark.slow

GUIDE = REPO_ROOT / "docs" / "deploy.md"
DEPLOY = Path("examples") / "deploy"
MASTER_UNITS = ("mirror-sync-scheduler.service", "mirror-sync-rsyncd.service", "mirror-sync-api.service")
SLAVE_UNIT = "mirror-sync-slave.service"
PATH_UNIT = "mirror-sync-rsyncd.path"
SAMPLE_PORTS = ("5000", "8730", "7000", "443", "80")
SAMPLE_HOSTS = ("master.example.org", "mirror1.example.org")
SAMPLE_USER = "mirrorsync"
# Where the guide puts things, moved under the test's base directory.
SAMPLE_ROOTS = ("/opt/mirror-sync", "/etc/mirror-sync", "/etc/nginx/conf.d", "/srv/", "/var/lib/mirror-sync-slave",
                "/run/mirror-sync-")
# What systemd gives every service (systemd.exec(5), "Environment Variables in Spawned Processes").
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
READY_TIMEOUT = 40
TESTS_BASE = Path("/var/lib/mirror-sync-tests")


class Swap:
    """The one substitution applied to every sample and guide line: paths, user, ports, hosts."""

    def __init__(self, base, user):
        self.base = base
        self.user = user
        self.ports = {port: str(free_port()) for port in SAMPLE_PORTS}

    def __call__(self, text):
        text = text.replace("https://master.example.org", f"https://master.example.org:{self.ports['443']}")
        text = re.sub(r"(?<![\w./-])(%s)" % "|".join(map(re.escape, SAMPLE_ROOTS)),
                      lambda match: f"{self.base}{match.group(1)}", text)
        text = re.sub(r"(?<![\w.])%s\b" % SAMPLE_USER, self.user, text)  # not DATA_DIR/.mirrorsync
        text = re.sub(r"(?<![\w.])(%s)\b" % "|".join(SAMPLE_PORTS), lambda match: self.ports[match.group(1)], text)
        for host in SAMPLE_HOSTS:
            text = text.replace(host, "127.0.0.1")
        return text

    def path(self, sample_path):
        return Path(self(sample_path))


def guide_commands():
    """Every command line of the guide's code blocks, in order."""
    return [line.strip() for line in GUIDE.read_text().splitlines() if line.startswith("    ")]


def read_unit(path):
    """A unit file as {section: {key: [values]}} (keys repeat, so every value is kept)."""
    parser = ConfigParser(strict=False, interpolation=None, delimiters=("=",), empty_lines_in_values=False,
                          dict_type=_MultiDict)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return {section: {key: value.split("\n") for key, value in parser[section].items()}
            for section in parser.sections()}


class _MultiDict(dict):
    def __setitem__(self, key, value):
        if isinstance(value, list) and key in self:
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def read_env_file(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("'\"")
    return env


class Unit:
    """One (swapped) unit, run the way systemd would run it."""

    def __init__(self, path, swap):
        self.path = path
        self.name = path.name
        self.sections = read_unit(path)
        self.service = self.sections.get("Service", {})
        self.swap = swap
        self.user_name = swap.user

    def first(self, key, section="Service", default=None):
        return self.sections.get(section, {}).get(key, [default])[-1]

    def environment(self, uid_home):
        env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8", "HOME": uid_home, "USER": self.user_name,
               "LOGNAME": self.user_name, "SHELL": "/usr/sbin/nologin"}
        for name in self.service.get("EnvironmentFile", []):
            optional = name.startswith("-")
            path = name.lstrip("-")
            if optional and not os.path.exists(path):
                continue
            env.update(read_env_file(path))
        for assignment in self.service.get("Environment", []):
            for word in shlex.split(assignment):
                key, _, value = word.partition("=")
                env[key] = value
        for directory in self.service.get("RuntimeDirectory", []):
            env["RUNTIME_DIRECTORY"] = str(self.runtime_dir(directory))
        return env

    def runtime_dir(self, name):
        return Path(self.swap(f"/run/{name}"))

    def spec(self, argv, uid, gid):
        read_write = [word for value in self.service.get("ReadWritePaths", []) for word in value.split()]
        read_write += [str(self.runtime_dir(name)) for name in self.service.get("RuntimeDirectory", [])]
        return {"argv": argv, "uid": uid, "gid": gid, "cwd": self.first("WorkingDirectory", default="/"),
                "read_write": read_write, "protect_system": self.first("ProtectSystem"),
                "private_tmp": self.first("PrivateTmp", default="no") in ("yes", "true", "1", "on")}

    def exec_lines(self):
        return [shlex.split(line) for key in ("ExecStartPre", "ExecStart") for line in self.service.get(key, [])]


@pytest.fixture
def tools():
    if os.geteuid() != 0:
        pytest.skip("following the deployment guide (useradd, install -o, mount namespaces) needs root")
    if missing_tools():
        pytest.skip(f"needs {', '.join(missing_tools())} (Debian packages passwd, util-linux)")
    found = {}
    for program, package in (("systemd-analyze", "systemd"), ("nginx", "nginx-light"), ("unshare", "util-linux")):
        found[program], failure = ensure_program(program, package)
        if failure:
            pytest.fail(f"the deployment guide test needs {program}: {failure}", pytrace=False)
    return found


@pytest.fixture
def site(tools, tmp_path):
    """(base, swap, venv): a private root for the guide's paths, the swap into it, the install's venv.

    The root, and the user the guide creates, are removed at the end.
    """
    try:
        venv = service_venv()
    except ServiceUserError as error:
        pytest.fail(str(error), pytrace=False)
    TESTS_BASE.mkdir(parents=True, exist_ok=True)
    os.chmod(TESTS_BASE, 0o755)
    base = Path(tempfile.mkdtemp(prefix="guide-", dir=TESTS_BASE))
    os.chmod(base, 0o755)
    swap = Swap(base, f"msg-{base.name[-8:].lower().replace('_', 'x')}")
    try:
        for parent in ("opt", "etc/nginx/conf.d", "srv", "var/lib", "run"):
            (base / parent).mkdir(parents=True, exist_ok=True)
        install_copy(swap.path("/opt/mirror-sync"), venv)
        yield base, swap, venv
    finally:
        try:
            end_processes_of(pwd.getpwnam(swap.user).pw_uid)
        except KeyError:
            pass  # the guide's useradd did not run
        else:
            subprocess.run(["userdel", swap.user], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def run_guide_lines(swap, certificates):
    """Run the guide's useradd and install lines (swapped) from the directory holding the certificates."""
    ran = []
    for line in guide_commands():
        argv = shlex.split(swap(line), comments=True)
        if argv and argv[0] in ("useradd", "install"):
            done = subprocess.run(argv, cwd=certificates, capture_output=True, text=True, check=False)
            assert done.returncode == 0, f"{line}: {done.stderr}"
            ran.append(argv[0])
    return ran


def swap_installed_files(swap, paths):
    """What an admin edits after copying a sample: here, the same swap of paths, user, ports and hosts."""
    for path in paths:
        path.write_text(swap(path.read_text()))


def nginx_main_config(base, site_config):
    """A whole nginx.conf around the sample server blocks, with its own pid, logs and temp paths."""
    work = base / "nginx"
    work.mkdir()
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "\n".join(f"    {kind}_temp_path {work}/{kind};" for kind in kinds)
    config = work / "nginx.conf"
    config.write_text(f"pid {work}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
                      f"http {{\n    access_log off;\n{temp}\n    include {site_config};\n}}\n")
    return config


def test_the_deployment_guide_works_as_written(tools, site, tmp_path, request):
    base, swap, venv = site
    certificates = tmp_path / "certificates"
    ca = CertificateAuthority(certificates, "ca")
    for name in ("master", "slave"):
        ca.issue(name)

    # Steps 2, 4, 5, 6 and 10: the user, directories, settings and certificates.
    assert run_guide_lines(swap, certificates).count("useradd") == 1
    home = subprocess.run(["getent", "passwd", swap.user], capture_output=True, text=True).stdout.split(":")
    uid, gid, user_home = int(home[2]), int(home[3]), home[5]
    etc = swap.path("/etc/mirror-sync")
    assert (etc / "master.env").stat().st_mode & 0o077 == 0, "the env file holds tokens"
    install = swap.path("/opt/mirror-sync")
    assert install.stat().st_uid == 0

    # Step 8 and 9: the units and nginx's configuration, copied from the (swapped) install.
    units_dir = base / "systemd"
    units_dir.mkdir()
    for name in (*MASTER_UNITS, PATH_UNIT, SLAVE_UNIT):
        shutil.copy(install / DEPLOY / name, units_dir / name)
    nginx_site = swap.path("/etc/nginx/conf.d/mirror-sync.conf")
    assert nginx_site.exists(), "the guide installs the nginx sample"
    swap_installed_files(swap, [*units_dir.iterdir(), etc / "master.env", etc / "slave.env", nginx_site])

    verified = subprocess.run([tools["systemd-analyze"], "verify", "--man=no", *sorted(map(str, units_dir.iterdir()))],
                              capture_output=True, text=True, check=False,
                              env=dict(os.environ, SYSTEMD_LOG_LEVEL="warning"))
    problems = [line for line in (verified.stderr + verified.stdout).splitlines()
                if line.strip() and "Failed to connect to bus" not in line]
    assert verified.returncode == 0 and not problems, problems

    units = {path.name: Unit(path, swap) for path in units_dir.iterdir()}
    for unit in units.values():
        for directory in unit.service.get("RuntimeDirectory", []):
            path = unit.runtime_dir(directory)
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, uid, gid)
        if unit.service:
            assert unit.first("User") == swap.user and unit.first("ProtectSystem") == "strict", unit.name
            assert unit.first("PrivateTmp") == "true", f"{unit.name}: gunicorn and rsync need a writable /tmp"
    started = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(unit_name):
        unit = units[unit_name]
        env = unit.environment(user_home)
        [argv] = unit.exec_lines()[-1:]
        for pre in unit.exec_lines()[:-1]:
            done = subprocess.run(unit_sandbox.command(unit.spec(pre, uid, gid)), env=env, capture_output=True,
                                  text=True, timeout=READY_TIMEOUT, check=False)
            assert done.returncode == 0, f"{unit_name} ExecStartPre {pre}: {done.stderr}"
        service = ServiceProcess(unit_sandbox.command(unit.spec(argv, uid, gid)), env, logs, name=unit_name,
                                 cwd="/")
        started.append(_track(request, service))
        return service, env

    try:
        master_env = read_env_file(etc / "master.env")
        api_unit = units["mirror-sync-api.service"]
        python = str(install / ".venv/bin/python")
        # Step 7: the guide's admin commands, as its alias runs them.
        for line in guide_commands():
            if line.startswith("mirror-sync-admin db "):
                argv = [python, "-m", "master", *shlex.split(line, comments=True)[1:]]
                done = _admin(api_unit, argv, uid, gid, user_home)
                assert done.returncode == 0, f"{line}: {done.stderr}"
                assert str(swap.path("/srv/mirror-sync")) in done.stdout + done.stderr, "it names the database"
                break
        else:
            pytest.fail("the guide creates no database")
        scheduler, _ = start("mirror-sync-scheduler.service")
        scheduler.wait_for_log("scheduler started", timeout=READY_TIMEOUT)
        # The path unit starts the daemon once the file it watches exists; the daemon's condition is that file.
        [watched] = units[PATH_UNIT].sections["Path"]["PathExists"]
        assert units["mirror-sync-rsyncd.service"].first("ConditionPathExists", section="Unit") == watched
        wait_for(lambda: os.path.exists(watched), READY_TIMEOUT, message=f"the scheduler to write {watched}")
        assert f"--config={watched}" in " ".join(units["mirror-sync-rsyncd.service"].exec_lines()[-1])
        rsyncd, _ = start("mirror-sync-rsyncd.service")
        api, _ = start("mirror-sync-api.service")
        api_url = f"http://127.0.0.1:{master_env['MIRRORSYNC_API_PORT']}"
        api.wait_healthy(api_url + "/healthz", timeout=READY_TIMEOUT)
        assert "No usable temporary directory" not in api.log_text()

        # The guide's first admin token, made as its alias runs admin commands.
        [token_line] = [line for line in guide_commands() if line.startswith("mirror-sync-admin tokens create ")]
        done = _admin(api_unit, [python, "-m", "master", *shlex.split(token_line, comments=True)[1:]],
                      uid, gid, user_home)
        assert done.returncode == 0, done.stderr
        token = re.search(r"\bmst_\S+", done.stdout).group(0)

        nginx = ServiceProcess([tools["nginx"], "-c", nginx_main_config(base, nginx_site), "-g", "daemon off;"],
                               dict(os.environ), logs, name="nginx", cwd="/")
        started.append(_track(request, nginx))
        https_url = f"https://127.0.0.1:{swap.ports['443']}"
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would win over verify
        session.verify = str(ca.cert)
        session.headers["Authorization"] = f"Bearer {token}"
        wait_for(lambda: _answers(session, https_url + "/healthz"), READY_TIMEOUT,
                 message=lambda: f"nginx in front of the API ({LAST_ANSWER})")
        assert requests.get(f"http://127.0.0.1:{swap.ports['80']}/healthz", allow_redirects=False,
                            timeout=5).status_code == 301

        slave, slave_env = start(SLAVE_UNIT)
        assert slave_env["MIRRORSYNC_MASTER_URL"] == https_url, "the slave reaches the master through nginx"
        wait_for(lambda: _answers(session, slave_env["MIRRORSYNC_SLAVE_URL"] + "/healthz"), READY_TIMEOUT,
                 message=lambda: f"the slave's HTTPS API ({LAST_ANSWER})")
        wait_for(lambda: [s for s in session.get(https_url + "/api/v1/slaves", timeout=5).json()
                          if s["state"] == "online"], READY_TIMEOUT, message="the slave online")

        tree = tmp_path / "upstream-tree"
        build_tricky_tree(tree)
        with RsyncDaemon(tmp_path / "upstream-rsyncd", {"up": tree}) as upstream:
            created = session.post(https_url + "/api/v1/projects", timeout=10, json={
                "name": "tour", "upstream": upstream.url("up"), "schedule": None})
            assert created.status_code == 201, created.text
            triggered = session.post(https_url + "/api/v1/projects/tour/syncs", timeout=10)
            assert triggered.status_code == 202, triggered.text
            run = _wait_run(session, https_url, triggered.json()["id"])
        assert run["state"] == "success", run
        assert [part["state"] for part in run["slaves"]] == ["success"], run["slaves"]
        assert_trees_equal(tree, Path(slave_env["MIRRORSYNC_PUBLIC_DIR"]) / "tour")
        for service in (scheduler, rsyncd, api, slave):
            assert service.is_running(), service.log_tail()
            assert uid_of(service.pid) == uid, f"{service.name} does not run as {swap.user}"

        # The sandbox is real: the API's user cannot write the install or the settings, only its own paths.
        for path, writable in ((install / "x", False), (etc / "x", False),
                               (swap.path("/srv/mirror-sync") / "x", True), (Path("/tmp/x"), True)):
            done = subprocess.run(unit_sandbox.command(api_unit.spec(["touch", str(path)], uid, gid)),
                                  env=api_unit.environment(user_home), capture_output=True, check=False)
            assert (done.returncode == 0) == writable, (path, done.stderr)
    finally:
        for service in reversed(started):
            service.stop()


def _admin(unit, argv, uid, gid, home):
    """An admin command as the guide's alias runs it: the unit's user, environment file and sandbox."""
    return subprocess.run(unit_sandbox.command(unit.spec(argv, uid, gid)), env=unit.environment(home),
                          capture_output=True, text=True, check=False, timeout=READY_TIMEOUT)


LAST_ANSWER = {}


def _answers(session, url):
    try:
        response = session.get(url, timeout=5)
        LAST_ANSWER[url] = f"{response.status_code} {response.text[:200]}"
        return response.status_code == 200
    except requests.RequestException as error:
        LAST_ANSWER[url] = str(error)
        return False


def _wait_run(session, url, run_id):
    last = {}

    def final():
        last.update(session.get(f"{url}/api/v1/runs/{run_id}", timeout=5).json())
        return last if last.get("state") in ("success", "partial", "failed", "cancelled", "interrupted") else None

    return wait_for(final, 60, interval=0.2, message=lambda: f"run {run_id} to finish (last {last.get('state')})")
