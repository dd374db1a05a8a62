"""Failed authentication is rate-limited per address, for tokens, the join token and signatures."""

import pytest

from tests.conftest import ADMIN_TOKEN, JOIN_TOKEN


@pytest.fixture
def strict(app):
    app.config.update(AUTH_FAILURE_LIMIT=3, AUTH_FAILURE_WINDOW=60)
    return app


def test_an_address_that_keeps_failing_is_refused_then_let_in_after_the_window(strict, client, clock):
    for _ in range(3):
        assert client.get("/api/v1/projects", headers={"Authorization": "Bearer guess"}).status_code == 401
    refused = client.get("/api/v1/projects", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert refused.status_code == 429, "even a good token waits once the address is over the limit"
    assert refused.json["error"] == "too_many_requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    clock.advance(61)
    assert client.get("/api/v1/projects", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200


def test_other_addresses_are_not_affected(strict, client):
    for _ in range(3):
        client.get("/api/v1/projects", headers={"Authorization": "Bearer guess"})
    other = client.get("/api/v1/projects", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                       environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 200


def test_successes_and_role_refusals_do_not_count(strict, client, admin, reader):
    for _ in range(5):
        assert client.get("/api/v1/projects", headers=admin).status_code == 200
        assert client.post("/api/v1/projects", json={}, headers=reader).status_code == 403
    assert client.get("/api/v1/projects", headers=admin).status_code == 200


def test_wrong_join_tokens_and_forged_signatures_count_too(strict, client):
    body = {"name": "m1", "url": "http://m1:7000"}
    assert client.post("/api/v1/slaves/register", json=body, headers={"Authorization": "Bearer no"}).status_code == 403
    assert client.post("/api/v1/slaves/m1/heartbeat", json={"url": "http://m1:7000"}).status_code == 401
    assert client.post("/api/v1/projects", json={}, headers={"Authorization": "Bearer no"}).status_code == 401
    good = client.post("/api/v1/slaves/register", json=body, headers={"Authorization": f"Bearer {JOIN_TOKEN}"})
    assert good.status_code == 429


def proxied_app(tmp_path, clock, trusted_proxies):
    from master import create_app
    return create_app({"DATA_DIR": str(tmp_path / "data"), "ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "WARNING",
                       "CLOCK": clock, "AUTH_FAILURE_LIMIT": 3, "TRUSTED_PROXIES": trusted_proxies})


def through_nginx(client, client_address, token):
    # nginx connects from 127.0.0.1 and appends the address it saw to X-Forwarded-For.
    return client.get("/api/v1/projects", headers={"Authorization": f"Bearer {token}",
                                                   "X-Forwarded-For": f"198.51.100.1, {client_address}"},
                      environ_base={"REMOTE_ADDR": "127.0.0.1"})


def test_behind_a_trusted_proxy_one_guessing_client_does_not_lock_out_the_others(tmp_path, clock):
    client = proxied_app(tmp_path, clock, trusted_proxies=1).test_client()
    for _ in range(3):
        assert through_nginx(client, "203.0.113.9", "guess").status_code == 401
    assert through_nginx(client, "203.0.113.9", ADMIN_TOKEN).status_code == 429
    assert through_nginx(client, "192.0.2.7", ADMIN_TOKEN).status_code == 200, "another client behind nginx"


def test_without_trusted_proxies_a_forwarded_for_header_changes_nothing(tmp_path, clock):
    client = proxied_app(tmp_path, clock, trusted_proxies=0).test_client()
    for attempt in range(3):
        # A guesser cannot dodge the limit by sending a new X-Forwarded-For each time.
        assert through_nginx(client, f"203.0.113.{attempt}", "guess").status_code == 401
    assert through_nginx(client, "192.0.2.7", ADMIN_TOKEN).status_code == 429
