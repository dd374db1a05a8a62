"""Failed authentication is rate-limited per network; a valid credential always passes."""

import concurrent.futures
import json

import pytest

from common.signing import signature_headers
from master.services.throttle import network_of
from tests.conftest import ADMIN_TOKEN, JOIN_TOKEN

GUESS = {"Authorization": "Bearer guess"}
GOOD = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def strict(app):
    app.config.update(AUTH_FAILURE_LIMIT=3, AUTH_FAILURE_WINDOW=60)
    return app


def fail_until_locked(client, limit=3, **kwargs):
    for _ in range(limit):
        assert client.get("/api/v1/projects", headers=GUESS, **kwargs).status_code == 401
    assert client.get("/api/v1/projects", headers=GUESS, **kwargs).status_code == 429


def test_a_network_that_keeps_failing_gets_429_for_failures_until_the_window_ends(strict, client, clock):
    fail_until_locked(client)
    refused = client.get("/api/v1/projects", headers=GUESS)
    assert refused.status_code == 429 and refused.json["error"] == "too_many_requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    clock.advance(61)
    assert client.get("/api/v1/projects", headers=GUESS).status_code == 401


def test_a_valid_token_passes_while_its_network_is_over_the_limit(strict, client):
    fail_until_locked(client)
    assert client.get("/api/v1/projects", headers=GOOD).status_code == 200


def test_a_valid_join_token_enrolls_while_its_network_is_over_the_limit(strict, client):
    body = {"name": "m1", "url": "http://m1:7000"}
    for _ in range(3):
        assert client.post("/api/v1/slaves/register", json=body,
                           headers={"Authorization": "Bearer no"}).status_code == 403
    assert client.post("/api/v1/slaves/register", json=body,
                       headers={"Authorization": "Bearer no"}).status_code == 429
    good = client.post("/api/v1/slaves/register", json=body, headers={"Authorization": f"Bearer {JOIN_TOKEN}"})
    assert good.status_code == 201


def test_signed_traffic_is_never_counted_and_passes_while_the_network_is_over_the_limit(strict, client, clock):
    credentials = client.post("/api/v1/slaves/register", json={"name": "m1", "url": "http://m1:7000"},
                              headers={"Authorization": f"Bearer {JOIN_TOKEN}"}).json
    path = "/api/v1/slaves/m1/heartbeat"
    raw = json.dumps({"url": "http://m1:7000"}).encode()

    def beat(stamp, key=credentials["signing_key"]):
        headers = signature_headers("m1", key, "POST", path, raw, now=stamp)
        return client.post(path, data=raw, headers={**headers, "Content-Type": "application/json"})

    for _ in range(10):  # a slave whose clock is an hour ahead, and a forger
        assert beat(clock.now().timestamp() + 3600).status_code == 401
        assert beat(clock.now().timestamp(), key="forged").status_code == 401
    assert client.get("/api/v1/projects", headers=GUESS).status_code == 401, "signatures were counted"
    fail_until_locked(client, limit=2)
    assert beat(clock.now().timestamp()).status_code == 200


def test_other_networks_are_not_affected(strict, client):
    fail_until_locked(client)
    other = client.get("/api/v1/projects", headers=GUESS, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 401


def test_rotating_addresses_within_a_network_does_not_reset_the_count(strict, client):
    for last in (1, 2, 3):
        assert client.get("/api/v1/projects", headers=GUESS,
                          environ_base={"REMOTE_ADDR": f"198.51.100.{last}"}).status_code == 401
    assert client.get("/api/v1/projects", headers=GUESS,
                      environ_base={"REMOTE_ADDR": "198.51.100.200"}).status_code == 429
    for last in (1, 2, 3):
        assert client.get("/api/v1/projects", headers=GUESS,
                          environ_base={"REMOTE_ADDR": f"2001:db8:0:1::{last}"}).status_code == 401
    assert client.get("/api/v1/projects", headers=GUESS,
                      environ_base={"REMOTE_ADDR": "2001:db8:0:1:ffff::9"}).status_code == 429


@pytest.mark.parametrize("address, network", [
    ("203.0.113.77", "203.0.113.0/24"), ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("::ffff:203.0.113.9", "203.0.113.0/24"), ("fe80::1%eth0", "fe80::/64"), ("garbage", "unknown"),
    (None, "unknown")])
def test_networks_are_the_slash_24_or_slash_64(address, network):
    assert network_of(address) == network


def test_a_step_of_the_wall_clock_neither_ends_nor_lengthens_a_lockout(strict, client, clock):
    fail_until_locked(client)
    clock.step_wall_clock(-3600)  # set back an hour: the window must not last an hour longer
    clock.advance(61)
    assert client.get("/api/v1/projects", headers=GUESS).status_code == 401
    fail_until_locked(client, limit=2)
    clock.step_wall_clock(+3600)  # set ahead: the window must not end early
    assert client.get("/api/v1/projects", headers=GUESS).status_code == 429


def test_successes_and_role_refusals_do_not_count(strict, client, admin, reader):
    for _ in range(5):
        assert client.get("/api/v1/projects", headers=admin).status_code == 200
        assert client.post("/api/v1/projects", json={}, headers=reader).status_code == 403
    assert client.get("/api/v1/projects", headers=GUESS).status_code == 401


def test_a_parallel_burst_gets_exactly_the_limit_of_401s(app, tmp_path):
    from master import create_app
    # A file database shared by threads with their own connections, as gunicorn workers share one.
    burst_app = create_app({"DATA_DIR": str(tmp_path / "burst"), "LOG_LEVEL": "WARNING",
                            "AUTH_FAILURE_LIMIT": 20, "AUTH_FAILURE_WINDOW": 600})

    def guess(_):
        return burst_app.test_client().get("/api/v1/projects", headers=GUESS).status_code
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(guess, range(80)))
    assert answers.count(401) == 20 and answers.count(429) == 60


def test_trusted_proxies_take_the_client_address_from_the_proxy(tmp_path):
    from master import create_app
    proxied = create_app({"DATA_DIR": str(tmp_path / "p"), "LOG_LEVEL": "WARNING", "TRUSTED_PROXIES": 1,
                          "AUTH_FAILURE_LIMIT": 2}).test_client()
    for _ in range(2):
        assert proxied.get("/api/v1/projects", headers={**GUESS, "X-Forwarded-For": "198.51.100.9"}).status_code == 401
    assert proxied.get("/api/v1/projects", headers={**GUESS, "X-Forwarded-For": "198.51.100.9"}).status_code == 429
    other = proxied.get("/api/v1/projects", headers={**GUESS, "X-Forwarded-For": "203.0.113.5"})
    assert other.status_code == 401, "without ProxyFix every client behind the proxy shares one count"


def test_without_trusted_proxies_a_forwarded_for_header_is_ignored(strict, client):
    for spoof in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
        client.get("/api/v1/projects", headers={**GUESS, "X-Forwarded-For": spoof})
    assert client.get("/api/v1/projects", headers={**GUESS, "X-Forwarded-For": "203.0.113.1"}).status_code == 429
