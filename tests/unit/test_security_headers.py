"""Every answer of the master and the slave carries anti-framing, nosniff, a same-origin CSP and a referrer policy."""

import pytest

from tests.unit.test_slave_orders import make_slave, runner  # noqa: F401 (fixtures)

MASTER_PATHS = ["/", "/healthz", "/api/v1/status", "/api/v1/projects", "/api/v1/projects/nope", "/nowhere",
                "/api/v1/openapi.json", "/static/status.css", "/metrics", "/jobs", "/runs/999"]
SLAVE_PATHS = ["/", "/healthz", "/api/v1/syncs/1", "/nowhere", "/jobs"]


def assert_secure(response):
    headers = response.headers
    csp = headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src" in csp, csp
    assert "*" not in csp.split("frame-ancestors")[0].replace("'self'", ""), csp
    assert headers.get("X-Frame-Options") == "DENY"
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert headers.get("Referrer-Policy") == "no-referrer"


@pytest.mark.parametrize("path", MASTER_PATHS)
def test_every_master_answer_has_the_security_headers(client, path):
    assert_secure(client.get(path))


def test_master_errors_and_posts_have_them_too(client, admin):
    assert_secure(client.post("/api/v1/projects", data="{", headers={**admin, "Content-Type": "application/json"}))
    assert_secure(client.delete("/healthz"))


def test_the_api_docs_allow_only_their_own_inline_start_script(client):
    response = client.get("/api/v1/docs")
    assert_secure(response)
    assert "https:" not in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("path", SLAVE_PATHS)
def test_every_slave_answer_has_the_security_headers(make_slave, path):  # noqa: F811
    assert_secure(make_slave(STATUS_PAGE=True).test_client().get(path))
