"""Fixtures for integration tests: a live master, a live upstream rsync daemon, an API client.

Every test in this folder is marked ``integration``. When a test fails, the
logs of the processes its fixtures started are attached to the report.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support.processes import start_master
from tests.support.rsyncd import RsyncDaemon
from tests.support.trees import build_tricky_tree

HERE = Path(__file__).resolve().parent
UPSTREAM_MODULE = "mirror"
# Log files of processes started for the running test, attached to its report if it fails.
STARTED_PROCESSES = pytest.StashKey[list]()


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and call.when in ("setup", "call"):
        for service in item.stash.get(STARTED_PROCESSES, []):
            report.sections.append((f"{service.name} log ({service.log_path})", service.log_tail()))
    return report


def _track(request, service):
    request.node.stash.setdefault(STARTED_PROCESSES, []).append(service)
    return service


@pytest.fixture(scope="session", autouse=True)
def rsync_installed():
    if shutil.which("rsync") is None:
        pytest.fail("integration tests need rsync: run scripts/ensure-command rsync rsync", pytrace=False)


@pytest.fixture
def master_factory(request, tmp_path):
    """``start(data_dir=None, **kwargs) -> MasterProcess``; everything it started stops at teardown.

    Use it to restart a master over the same DATA_DIR, or to run several.
    """
    started = []

    def start(data_dir=None, **kwargs):
        data_dir = data_dir or tmp_path / f"data-{len(started)}"
        kwargs.setdefault("log_dir", tmp_path / "logs")
        master = start_master(data_dir, **kwargs)
        started.append(_track(request, master))
        return master

    yield start
    for master in reversed(started):
        master.stop()


@pytest.fixture
def master(master_factory, tmp_path):
    """A running ``python -m master`` over a fresh DATA_DIR, with ``.url`` and ``.admin_token``."""
    return master_factory(tmp_path / "data")


@dataclass
class Upstream:
    """A sample tree served by a real rsync daemon, as a project's upstream."""

    daemon: RsyncDaemon
    tree: Path
    module: str

    @property
    def url(self):
        return self.daemon.url(self.module)


@pytest.fixture
def upstream(request, tmp_path):
    """``build_tricky_tree`` served read-only as rsync://127.0.0.1:PORT/mirror/."""
    tree = tmp_path / "upstream-tree"
    build_tricky_tree(tree)
    with RsyncDaemon(tmp_path / "upstream-rsyncd", {UPSTREAM_MODULE: tree}) as daemon:
        yield Upstream(daemon=daemon, tree=tree, module=UPSTREAM_MODULE)


class ApiClient:
    """requests against one master with a bearer token; returns responses, never raises on status."""

    def __init__(self, base_url, token):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method, path, **kwargs):
        kwargs.setdefault("timeout", 10)
        return self.session.request(method, self.base_url + path, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def patch(self, path, **kwargs):
        return self.request("PATCH", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def close(self):
        self.session.close()


@pytest.fixture
def api(master):
    """An admin ``ApiClient`` for the ``master`` fixture."""
    client = ApiClient(master.url, master.admin_token)
    yield client
    client.close()
