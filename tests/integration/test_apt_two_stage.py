"""A real apt client never sees a broken archive while two-stage pulls publish new versions under it.

The upstream is a Debian-style archive built with dpkg-deb and apt-ftparchive
(by-hash indices, the previous version's files kept, as the Debian archive
does). Each new version rebuilds half the packages. Master and slave pull it
in two stages; the slave's tree is served over HTTP on loopback, and one apt
client per publish mode loops ``apt-get update`` then ``apt-get download`` of
every package while versions are published. Not one update or download may fail.
"""

import datetime
import functools
import http.server
import re
import threading
import time

import pytest
import requests

from tests.integration.conftest import STARTED_PROCESSES, ApiClient
from tests.support.debian import AptClient, DebianArchive, ensure_debian_tools
from tests.support.processes import DEFAULT_JOIN_TOKEN, start_slave, wait_for, wait_run_finished
from tests.support.rsyncd import RsyncDaemon

pytestmark = pytest.mark.slow

PACKAGES = 40
REBUILT = 20            # packages rebuilt per version: the stress
VERSIONS = range(2, 6)  # published while apt loops
MODES = ("delay", "atomic")
MASTER_NAME, SLAVE_PUBLIC_NAME = "master.example.org", "www1.example.org"
MASTER_ENV = {"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN, "MIRRORSYNC_CATCHUP_INTERVAL": "0.3",
              "MIRRORSYNC_HEARTBEAT_TIMEOUT": "1.5", "MIRRORSYNC_DISPATCH_TIMEOUT": "2",
              "MIRRORSYNC_MIRROR_NAME": MASTER_NAME}
_DEB = re.compile(r"^(pkg\d+)_(\d+)_amd64\.deb$")


@pytest.fixture(scope="module", autouse=True)
def debian_tools():
    missing = ensure_debian_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install apt-utils dpkg-dev as root)")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Logs nothing; remembers the paths of requests that were not found, in ``misses``."""
    misses = None

    def log_message(self, *args):
        pass

    def send_error(self, code, *args, **kwargs):
        if code == 404 and self.misses is not None:
            self.misses.append(self.path)
        super().send_error(code, *args, **kwargs)


@pytest.fixture
def http_root(tmp_path):
    """``serve(directory) -> base URL``: a threaded HTTP server on loopback, like a mirror's web server.

    ``serve.misses`` lists the paths it answered 404.
    """
    servers = []

    def serve(directory):
        handler = type("Handler", (QuietHandler,), {"misses": serve.misses})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
        threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"
    serve.misses = []
    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


class AptLoop(threading.Thread):
    """``apt-get update`` then ``apt-get download`` of every package, over and over, counting failures."""

    def __init__(self, client, names):
        super().__init__(name="apt-loop", daemon=True)
        self.client, self.names = client, names
        self.updates = self.downloads = 0
        self.failures = []
        self.versions = set()    # versions of the packages downloaded
        self._stop_event = threading.Event()

    def run(self):
        deadline = time.monotonic() + 120
        while not self._stop_event.is_set() and time.monotonic() < deadline:
            ok, output = self.client.update()
            self.updates += 1
            if not ok:
                self.failures.append(("update", output[-2000:]))
                continue
            ok, output, files = self.client.download(self.names)
            self.downloads += 1
            if not ok or len(files) != len(self.names):
                self.failures.append(("download", output[-2000:]))
            self.versions |= {int(match.group(2)) for match in map(_DEB.match, files) if match}

    def stop(self):
        self._stop_event.set()
        self.join(90)


def parse_trace(text):
    first, *rest = text.splitlines()
    date = datetime.datetime.strptime(first, "%a %b %d %H:%M:%S UTC %Y")
    return date, {key.lower(): value.strip() for key, _, value in (line.partition(":") for line in rest)}


def test_apt_never_fails_while_two_stage_syncs_publish_in_both_modes(request, master_factory, tmp_path, http_root):
    archive = DebianArchive(tmp_path / "upstream" / "debian", packages=PACKAGES)
    archive.publish(1)
    master = master_factory(tmp_path / "master", extra_env=MASTER_ENV)
    slave = start_slave(tmp_path / "www1", "www1", master.url, log_dir=tmp_path / "logs",
                        extra_env={"MIRRORSYNC_PUBLIC_NAME": SLAVE_PUBLIC_NAME})
    request.node.stash.setdefault(STARTED_PROCESSES, []).append(slave)
    api = ApiClient(master.url, master.admin_token)
    loops = []
    try:
        with RsyncDaemon(tmp_path / "upstream-rsyncd", {"debian": archive.root}) as upstream:
            wait_for(lambda: [s["state"] for s in api.get("/api/v1/slaves").json()] == ["online"], 20,
                     message="www1 online")
            for mode in MODES:
                created = api.post("/api/v1/projects", json={
                    "name": f"debian-{mode}", "upstream": upstream.url("debian"), "method": "two-stage",
                    "stage1_profile": "debian", "publish": mode, "trace": "debian"})
                assert created.status_code == 201, created.text

            def publish_everywhere():
                started = [api.post(f"/api/v1/projects/debian-{mode}/syncs").json()["id"] for mode in MODES]
                for run_id in started:
                    run = wait_run_finished(master.url, master.admin_token, run_id, timeout=40)
                    assert run["state"] == "success", run
                    assert run["slaves"][0]["state"] == "success", run
                return run

            publish_everywhere()
            base = http_root(slave.public_dir)
            for mode in MODES:
                loop = AptLoop(AptClient(tmp_path / f"apt-{mode}", f"{base}/debian-{mode}"), archive.names)
                loop.start()
                loops.append(loop)
            wait_for(lambda: all(loop.downloads for loop in loops), 30, message="a first apt round")
            for version in VERSIONS:
                changed = archive.names[(version % 2) * REBUILT:][:REBUILT]
                archive.publish(version, changed)
                last = publish_everywhere()
                # Each client downloads the new version at least once before the next is published.
                wait_for(lambda: all(version in loop.versions for loop in loops) or
                         any(loop.failures for loop in loops), 30, message=f"apt fetching version {version}")
            for loop in loops:
                loop.stop()
    finally:
        for loop in loops:
            loop.stop()
        api.close()
        slave.stop()

    for mode, loop in zip(MODES, loops):
        assert loop.failures == [], f"publish {mode}: {len(loop.failures)} failures in {loop.updates} updates " \
                                    f"and {loop.downloads} downloads; first: {loop.failures[:2]}"
        assert set(VERSIONS) <= loop.versions, (mode, sorted(loop.versions))
        assert loop.updates >= len(VERSIONS) and loop.downloads >= len(VERSIONS)
    # apt found every index by its hash, as from the Debian archive: had it fallen back to the plain
    # names, the tree would only have been consistent by luck of timing.
    by_hash = [path for path in http_root.misses if "/by-hash/" in path]
    assert by_hash == [], by_hash[:3]

    # The run's stats and log cover both stages.
    log = requests.get(f"{master.url}/api/v1/runs/{last['id']}/log",
                       headers={"Authorization": f"Bearer {master.admin_token}"}, timeout=10).text
    assert log.count("$ rsync") == 2 and "--exclude=Packages*" in log
    assert last["stats"]["bytes_received"] > REBUILT * 40_000

    # The slave's published tree carries upstream-side and own traces the way Debian's checker reads them.
    for mode in MODES:
        listing = requests.get(f"{base}/debian-{mode}/project/trace/", timeout=10).text
        assert MASTER_NAME in listing and SLAVE_PUBLIC_NAME in listing, listing
        _, fields = parse_trace(requests.get(f"{base}/debian-{mode}/project/trace/{SLAVE_PUBLIC_NAME}",
                                             timeout=10).text)
        assert fields["upstream-mirror"] == MASTER_NAME and fields["architectures"] == "amd64"
        hierarchy = requests.get(f"{base}/debian-{mode}/project/trace/_hierarchy", timeout=10).text.splitlines()
        assert hierarchy[-2].startswith(f"{MASTER_NAME} {MASTER_NAME} ")
        assert hierarchy[-1].startswith(f"{SLAVE_PUBLIC_NAME} {SLAVE_PUBLIC_NAME} ")
        assert hierarchy[-1].endswith(f" {MASTER_NAME}")
