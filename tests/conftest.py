"""Fixtures for unit tests: a fresh master app per test, with fakes at its seams."""

import pytest

from common.clock import FakeClock
from tests.support.fakes import FakeRsyncRunner, FakeSlaveClient

ADMIN_TOKEN = "unit-admin-token"


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake_rsync():
    return FakeRsyncRunner()


@pytest.fixture
def fake_slaves():
    return FakeSlaveClient()


JOIN_TOKEN = "unit-join-token"


@pytest.fixture
def app(tmp_path, clock, fake_rsync, fake_slaves):
    from master import create_app
    return create_app({
        "DATA_DIR": str(tmp_path / "data"),
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "JOIN_TOKEN": JOIN_TOKEN,
        "LOG_LEVEL": "WARNING",
        "CLOCK": clock,
        "RSYNC_RUNNER": fake_rsync,
        "SLAVE_CLIENT": fake_slaves,
    })


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin():
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def reader(app):
    from master.services.tokens import create_token
    with app.app_context():
        plain, _ = create_token("reader", "readonly")
    return {"Authorization": f"Bearer {plain}"}


@pytest.fixture
def make_project(client, admin):
    def make(name="debian", **fields):
        body = {"name": name, "upstream": f"rsync://mirror.example.org/{name}", **fields}
        response = client.post("/api/v1/projects", json=body, headers=admin)
        assert response.status_code == 201, response.json
        return response.json
    return make
