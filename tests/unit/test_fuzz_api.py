"""Property-based fuzzing of every operation in the OpenAPI document: no input may cause a 5xx.

schemathesis generates requests from /api/v1/openapi.json (valid and invalid
ones) and sends them to the app in-process, with a fixed budget per operation
and a fixed seed, so a run is quick and repeatable.
"""

import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from master import create_app
from tests.support.fakes import FakeRsyncRunner, FakeSlaveClient

TOKEN = "fuzz-admin-token"
EXAMPLES_PER_OPERATION = 20

app = create_app({"DATA_DIR": tempfile.mkdtemp(prefix="mirrorsync-fuzz-"), "ADMIN_TOKEN": TOKEN,
                  "JOIN_TOKEN": "fuzz-join-token", "LOG_LEVEL": "CRITICAL", "AUTH_FAILURE_LIMIT": 1000000,
                  "RSYNC_RUNNER": FakeRsyncRunner(), "SLAVE_CLIENT": FakeSlaveClient()})
with app.test_client() as seed:
    # Something to find, so that lookups by name and id do not all stop at 404.
    seed.post("/api/v1/projects", json={"name": "debian", "upstream": "rsync://mirror.example.org/debian"},
              headers={"Authorization": f"Bearer {TOKEN}"})
    seed.post("/api/v1/projects/debian/syncs", headers={"Authorization": f"Bearer {TOKEN}"})
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_generated_request_causes_a_server_error(case):
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"},
                           checks=[schemathesis.checks.not_a_server_error])
