"""Enrollment by key exchange: the join token, the signing key and the rsync password never cross the network."""

import json

import pytest

from common.enrollment import SlaveExchange
from common.signing import signature_headers
from master import rsyncd
from tests.conftest import JOIN_TOKEN

URL = "http://mirror1:7000"
REMOTE = {"REMOTE_ADDR": "198.51.100.7"}


def register(client, body, headers=None, environ=None, base_url="http://localhost"):
    return client.post("/api/v1/slaves/register", json=body, headers=headers or {},
                       environ_base=environ or REMOTE, base_url=base_url)


def test_a_slave_enrolls_over_plain_http_and_nothing_secret_is_on_the_wire(app, client, clock):
    exchange = SlaveExchange(JOIN_TOKEN, "mirror1", URL)
    request = exchange.request(clock.now().timestamp())
    response = register(client, request)
    assert response.status_code == 201, response.json
    answer = response.json
    assert set(answer) == {"name", "rsync_user", "public_key", "sealed_rsync_password"}
    signing_key, rsync_password = exchange.finish(answer["public_key"], answer["sealed_rsync_password"],
                                                  answer["rsync_user"])
    wire = json.dumps(request) + response.get_data(as_text=True)
    for secret in (JOIN_TOKEN, signing_key, rsync_password):
        assert secret not in wire
    # Both sides derived the same signing key: the master takes a heartbeat signed with it.
    path, raw = "/api/v1/slaves/mirror1/heartbeat", json.dumps({"url": URL}).encode()
    headers = signature_headers("mirror1", signing_key, "POST", path, raw, now=clock.now().timestamp())
    beat = client.post(path, data=raw, headers={**headers, "Content-Type": "application/json"})
    assert beat.status_code == 200
    with app.app_context():
        rsyncd.write_config()
    secrets_file = rsyncd.config_paths(app.config["DATA_DIR"])[1]
    assert f"{answer['rsync_user']}:{rsync_password}\n" in open(secrets_file).read()


def test_a_wrong_join_token_stale_or_replayed_exchange_is_refused(app, client, clock):
    wrong = register(client, SlaveExchange("not-the-token", "m2", URL).request(clock.now().timestamp()))
    assert wrong.status_code == 403 and "proof does not match" in wrong.json["message"]
    stale = register(client, SlaveExchange(JOIN_TOKEN, "m3", URL).request(clock.now().timestamp() - 3600))
    assert stale.status_code == 403 and "stale" in stale.json["message"]
    request = SlaveExchange(JOIN_TOKEN, "m4", URL).request(clock.now().timestamp())
    assert register(client, request).status_code == 201
    client.delete("/api/v1/slaves/m4", headers={"Authorization": "Bearer unit-admin-token"})
    replayed = register(client, request)
    assert replayed.status_code == 403 and "replayed" in replayed.json["message"]


def test_a_master_without_the_join_token_is_caught_by_the_slave(app, client, clock):
    from common.enrollment import EnrollmentError, master_exchange
    exchange = SlaveExchange(JOIN_TOKEN, "mirror1", URL)
    request = exchange.request(clock.now().timestamp())
    public, _, sealed = master_exchange("guessed-token", "mirror1", URL, request["public_key"], "ms-mirror1", "pw")
    with pytest.raises(EnrollmentError, match="does not open"):
        exchange.finish(public, sealed, "ms-mirror1")


def test_half_an_exchange_names_the_missing_fields(client, clock):
    request = SlaveExchange(JOIN_TOKEN, "mirror1", URL).request(clock.now().timestamp())
    del request["proof"], request["nonce"]
    response = register(client, request)
    assert response.status_code == 422 and {"proof", "nonce"} <= set(response.json["fields"])


def test_a_join_token_in_clear_is_refused_over_http_from_another_host(app, client):
    bearer = {"Authorization": f"Bearer {JOIN_TOKEN}"}
    refused = register(client, {"name": "old1", "url": URL}, bearer)
    assert refused.status_code == 403 and "INSECURE_ENROLLMENT" in refused.json["message"]
    assert register(client, {"name": "old2", "url": URL}, bearer, base_url="https://localhost").status_code == 201
    assert register(client, {"name": "old3", "url": URL}, bearer,
                    environ={"REMOTE_ADDR": "127.0.0.1"}).status_code == 201
    app.config["INSECURE_ENROLLMENT"] = True
    assert register(client, {"name": "old4", "url": URL}, bearer).status_code == 201


def test_enrollment_stops_at_max_slaves(app, client, clock):
    app.config["MAX_SLAVES"] = 2
    for name in ("m1", "m2"):
        assert register(client, SlaveExchange(JOIN_TOKEN, name, URL).request(clock.now().timestamp())).status_code == 201
    full = register(client, SlaveExchange(JOIN_TOKEN, "m3", URL).request(clock.now().timestamp()))
    assert full.status_code == 409 and "MAX_SLAVES" in full.json["message"]
