"""Hostile input to the API fields test_api_bad_input.py does not cover.

Slaves (admin PATCH, enrollment, signed heartbeats and reports), the run log
offset, path parameters of projects and slaves, and the slave's own order
endpoint. Every request is otherwise valid (right token, right signature) so
that only the hostile value is wrong. For each: a 4xx (never a 500) in the
error shape naming the field, nothing stored, and no rsync started.
"""

import json
import os
import pathlib
import shutil
import tempfile

import pytest

from common.clock import FakeClock
from common.signing import signature_headers
from master.services import syncs
from tests.conftest import ADMIN_TOKEN, JOIN_TOKEN
from tests.support.fakes import FakeMasterClient, FakeRsyncRunner
from tests.support.api_errors import assert_error_shape

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JOIN = {"Authorization": f"Bearer {JOIN_TOKEN}"}

# Values that are wrong for any string field that holds a name, URL or host.
INJECTION_STRINGS = [
    ("leading-dash", "-e"),
    ("leading-double-dash", "--rsh=sh"),
    ("dot-dot", ".."),
    ("dot-dot-slash", "../../etc"),
    ("nul", "one\x00two"),
    ("newline", "one\ntwo"),
    ("carriage-return", "one\r"),
    ("shell-semicolon", "one;reboot"),
    ("shell-pipe", "one|sh"),
    ("shell-dollar-paren", "$(reboot)"),
    ("shell-backtick", "`reboot`"),
    ("host-module", "evil::mod"),
    ("fullwidth", "ｏｎｅ"),
    ("cyrillic-o", "\u043ene"),
]
WRONG_TYPES = [
    ("wrong-type-int", 42),
    ("wrong-type-bool", True),
    ("wrong-type-list", ["x"]),
    ("wrong-type-object", {"x": 1}),
    ("null", None),
]


def cases(*groups):
    return [pytest.param(value, id=case_id) for group in groups for case_id, value in group]


# --- master helpers -------------------------------------------------------------------

def enroll(client, name="one", url=None):
    response = client.post("/api/v1/slaves/register", json={"name": name, "url": url or f"http://{name}:7000"},
                           headers=JOIN)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def signed_raw(client, credentials, path, raw, clock, content_type="application/json"):
    headers = signature_headers(credentials["name"], credentials["signing_key"], "POST", path, raw,
                                now=clock.now().timestamp())
    headers["Content-Type"] = content_type
    return client.post(path, data=raw, headers=headers)


def signed(client, credentials, path, body, clock):
    return signed_raw(client, credentials, path, json.dumps(body).encode(), clock)


def slaves_listing(client):
    response = client.get("/api/v1/slaves", headers=ADMIN)
    assert response.status_code == 200
    return response.get_json()


def projects_listing(client):
    response = client.get("/api/v1/projects", headers=ADMIN)
    assert response.status_code == 200
    return response.get_json()


def build_world(root):
    """A project, an enrolled slave 'one' and a run of the project waiting for one's report."""
    from master import create_app
    from tests.support.fakes import FakeSlaveClient

    clock, fake_rsync, fake_slaves = FakeClock(), FakeRsyncRunner(), FakeSlaveClient()
    app = create_app({"DATA_DIR": str(root / "data"), "ADMIN_TOKEN": ADMIN_TOKEN, "JOIN_TOKEN": JOIN_TOKEN,
                      "LOG_LEVEL": "CRITICAL", "CLOCK": clock, "RSYNC_RUNNER": fake_rsync,
                      "SLAVE_CLIENT": fake_slaves,
                      # Hundreds of refused signatures come from one test address: no throttling here.
                      "AUTH_FAILURE_LIMIT": 1000000})
    client = app.test_client()
    response = client.post("/api/v1/projects", json={"name": "debian",
                                                     "upstream": "rsync://mirror.example.org/debian"},
                           headers=ADMIN)
    assert response.status_code == 201, response.get_json()
    one = enroll(client, "one")
    run_id = client.post("/api/v1/projects/debian/syncs", headers=ADMIN).get_json()["id"]
    with app.app_context():
        [claimed] = syncs.run_ids_to_execute(1)
        syncs.start_upstream_sync(claimed)
    run = client.get(f"/api/v1/runs/{run_id}", headers=ADMIN).get_json()
    assert run["state"] == "distributing", run
    assert [(s["slave"], s["state"]) for s in run["slaves"]] == [("one", "dispatched")]

    class World:
        pass
    w = World()
    w.root, w.client, w.clock, w.one, w.run_id, w.rsync, w.orders = root, client, clock, one, run_id, \
        fake_rsync, fake_slaves
    w.snapshot = lambda: (slaves_listing(client), projects_listing(client),
                          client.get(f"/api/v1/runs/{run_id}", headers=ADMIN).get_json(),
                          client.get("/api/v1/status").get_json())
    w.baseline = w.snapshot()
    return w


@pytest.fixture(scope="module")
def worlds():
    # A world is rebuilt after every accepted bad value; on tmpfs that costs no fsyncs.
    base = pathlib.Path(tempfile.mkdtemp(prefix="hostile-input-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                                         else None))
    yield {"current": None, "base": base, "count": 0}
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def world(worlds):
    """The module's world, rebuilt whenever a test (a bug) left it changed."""
    current = worlds["current"]
    if current is None or current.snapshot() != current.baseline:
        worlds["count"] += 1
        root = worlds["base"] / f"world-{worlds['count']}"
        root.mkdir()
        current = worlds["current"] = build_world(root)
    current.rsync.jobs.clear()
    current.orders.orders.clear()
    return current


def assert_nothing_happened(world, before):
    assert world.snapshot() == before
    assert world.rsync.jobs == []
    assert world.orders.orders == []


# --- PATCH /api/v1/slaves/<name> -----------------------------------------------------------

@pytest.mark.parametrize("value", cases(
    [("string-true", "true"), ("string-false", "false"), ("int-1", 1), ("int-0", 0), ("int-2", 2),
     ("float", 1.0), ("list", [True]), ("object", {"value": False}), ("null", None)],
    [(f"string-{case_id}", value) for case_id, value in INJECTION_STRINGS],
))
def test_slave_patch_refuses_bad_enabled(world, value):
    before = world.snapshot()
    response = world.client.patch("/api/v1/slaves/one", json={"enabled": value}, headers=ADMIN)
    assert_error_shape(response, field="enabled")
    assert_nothing_happened(world, before)


@pytest.mark.parametrize("field", ["name", "url", "signing_key", "rsync_user", "rsync_password", "state",
                                   "last_seen", "created_at", "bogus"])
def test_slave_patch_refuses_unknown_or_read_only_fields(world, field):
    before = world.snapshot()
    response = world.client.patch("/api/v1/slaves/one", json={field: "x"}, headers=ADMIN)
    assert_error_shape(response, field=field)
    assert_nothing_happened(world, before)


def test_slave_patch_with_one_bad_field_applies_nothing(world):
    before = world.snapshot()
    response = world.client.patch("/api/v1/slaves/one", json={"enabled": False, "url": "http://evil:1"},
                                  headers=ADMIN)
    assert_error_shape(response, field="url")
    assert_nothing_happened(world, before)


@pytest.mark.parametrize("data, content_type", [
    pytest.param(b"{bad", "application/json", id="invalid-json"),
    pytest.param(b"[]", "application/json", id="json-list"),
    pytest.param(b"null", "application/json", id="json-null"),
    pytest.param(b'"x"', "application/json", id="json-string"),
    pytest.param(b'{"enabled": "\xff"}', "application/json", id="not-utf8"),
    pytest.param(b"[" * 50_000, "application/json", id="nested-too-deep"),
    pytest.param(b"enabled=false", "application/x-www-form-urlencoded", id="form-encoded"),
    pytest.param(b'{"enabled": false}', "text/plain", id="json-as-text"),
    pytest.param(b'{"enabled": ' + b"1" * 5000 + b"}", "application/json", id="integer-5000-digits"),
])
def test_slave_patch_with_a_body_that_is_not_a_json_object_is_refused(world, data, content_type):
    before = world.snapshot()
    response = world.client.patch("/api/v1/slaves/one", data=data, content_type=content_type, headers=ADMIN)
    assert_error_shape(response)
    assert_nothing_happened(world, before)


# --- POST /api/v1/slaves/register ------------------------------------------------------------

BAD_SLAVE_NAMES = cases(WRONG_TYPES, INJECTION_STRINGS, [
    ("empty", ""),
    ("uppercase", "One"),
    ("space", "o ne"),
    ("slash", "o/ne"),
    ("dot-dot-inside", "o..ne"),
    ("leading-dot", ".one"),
    ("state-dir", ".mirrorsync"),
    ("range-64-chars", "a" * 64),
    ("oversized", "a" * 10_000),
    ("percent-encoded-dot-dot", "%2e%2e"),
    ("at-sign", "one@evil"),
    ("colon", "one:x"),
])
BAD_URLS = cases(WRONG_TYPES, INJECTION_STRINGS, [
    ("empty", ""),
    ("no-scheme", "mirror1:7000"),
    ("ftp-scheme", "ftp://mirror1/"),
    ("file-scheme", "file:///etc/passwd"),
    ("rsync-scheme", "rsync://mirror1/x"),
    ("javascript", "javascript:alert(1)"),
    ("user-password", "http://user:pass@mirror1:7000"),
    ("query", "http://mirror1:7000/?x=1"),
    ("fragment", "http://mirror1:7000/#x"),
    ("space", "http://mirror 1:7000"),
    ("newline-header", "http://mirror1:7000/\r\nX-Evil: 1"),
    ("nul-in-host", "http://mirror1\x00.evil:7000"),
    ("oversized", "http://mirror1:7000/" + "a" * 10_000),
    ("fullwidth-host", "http://ｍｉｒｒｏｒ1:7000"),
    ("backslash", "http://mirror1:7000\\..\\x"),
    ("shell-in-path", "http://mirror1:7000/$(reboot)"),
    ("dot-dot-path", "http://mirror1:7000/../../etc"),
    ("leading-dash-host", "http://-evil:7000"),
    ("port-zero", "http://mirror1:0"),
    ("port-65536", "http://mirror1:65536"),
    ("port-huge", "http://mirror1:99999999"),
    ("two-ports", "http://mirror1:7000:7001"),
    ("colons-only", "http://::::"),
    ("unclosed-bracket", "http://[::1:7000"),
    ("bracket-not-an-address", "http://[evil]:7000"),
])



@pytest.mark.parametrize("value", BAD_SLAVE_NAMES)
def test_register_refuses_bad_name(world, value):
    before = world.snapshot()
    response = world.client.post("/api/v1/slaves/register", json={"name": value, "url": "http://two:7000"},
                                 headers=JOIN)
    assert_error_shape(response, field="name")
    assert "signing_key" not in response.get_data(as_text=True)
    assert_nothing_happened(world, before)


@pytest.mark.parametrize("value", BAD_URLS)
def test_register_refuses_bad_url(world, value):
    before = world.snapshot()
    response = world.client.post("/api/v1/slaves/register", json={"name": "two", "url": value}, headers=JOIN)
    assert_error_shape(response, field="url")
    assert "signing_key" not in response.get_data(as_text=True)
    assert_nothing_happened(world, before)


@pytest.mark.parametrize("name", ["register", "one"])
def test_register_refuses_reserved_or_taken_name(world, name):
    before = world.snapshot()
    response = world.client.post("/api/v1/slaves/register", json={"name": name, "url": "http://evil:7000"},
                                 headers=JOIN)
    assert_error_shape(response, field="name")
    assert "signing_key" not in response.get_data(as_text=True)
    assert_nothing_happened(world, before)


@pytest.mark.parametrize("field", ["signing_key", "rsync_user", "rsync_password", "enabled", "bogus"])
def test_register_refuses_extra_fields(world, field):
    before = world.snapshot()
    response = world.client.post("/api/v1/slaves/register",
                                 json={"name": "two", "url": "http://two:7000", field: "chosen-by-caller"},
                                 headers=JOIN)
    assert_error_shape(response, field=field)
    assert_nothing_happened(world, before)


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-token"),
    pytest.param({"Authorization": "Bearer "}, id="empty-token"),
    pytest.param({"Authorization": f"Bearer {JOIN_TOKEN}x"}, id="longer-token"),
    pytest.param({"Authorization": f"Bearer {JOIN_TOKEN[:-1]}"}, id="prefix-token"),
    pytest.param({"Authorization": f"Bearer {ADMIN_TOKEN}"}, id="admin-token"),
    pytest.param({"Authorization": "Bearer ｕｎｉｔ-join-token"}, id="fullwidth-token"),
    pytest.param({"Authorization": f"Basic {JOIN_TOKEN}"}, id="basic-scheme"),
])
def test_register_with_a_wrong_join_token_is_refused(world, headers):
    before = world.snapshot()
    response = world.client.post("/api/v1/slaves/register", json={"name": "two", "url": "http://two:7000"},
                                 headers=headers)
    assert_error_shape(response)
    assert response.status_code in (401, 403)
    assert_nothing_happened(world, before)


# --- signed heartbeats ------------------------------------------------------------------------

def heartbeat(world, body):
    return signed(world.client, world.one, "/api/v1/slaves/one/heartbeat", body, world.clock)


@pytest.mark.parametrize("value", BAD_URLS)
def test_heartbeat_refuses_bad_url(world, value):
    before = world.snapshot()
    response = heartbeat(world, {"url": value})
    assert_error_shape(response, field="url")
    assert_nothing_happened(world, before)


@pytest.mark.parametrize("value", cases(
    [("string", "debian"), ("int", 5), ("object", {"debian": True}), ("null", None), ("bool", True)],
    [(f"item-{case_id}", [value]) for case_id, value in WRONG_TYPES + INJECTION_STRINGS],
    [("item-empty", [""]), ("item-uppercase", ["Debian"]), ("item-oversized", ["a" * 10_000]),
     ("too-many-items", ["a"] * 10_001)],
))
def test_heartbeat_refuses_bad_syncing(world, value):
    before = world.snapshot()
    response = heartbeat(world, {"url": "http://one:7000", "syncing": value})
    assert_error_shape(response, field="syncing")
    assert_nothing_happened(world, before)


def test_heartbeat_refuses_unknown_fields(world):
    before = world.snapshot()
    response = heartbeat(world, {"url": "http://one:7000", "enabled": True})
    assert_error_shape(response, field="enabled")
    assert_nothing_happened(world, before)


def test_a_good_heartbeat_is_taken_so_the_refusals_above_mean_something(world):
    response = heartbeat(world, {"url": "http://one.example.org:7001", "syncing": ["debian"]})
    assert response.status_code == 200, response.get_json()
    assert slaves_listing(world.client)[0]["url"] == "http://one.example.org:7001"


# --- signed reports ------------------------------------------------------------------------------

def good_report(world, **changes):
    body = {"run_id": world.run_id, "project": "debian", "state": "success",
            "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:00+00:00",
            "exit_code": 0, "error": None, "warning": None,
            "stats": {"files_total": 3, "files_created": 1, "files_deleted": 0, "files_transferred": 1,
                      "total_size": 100, "bytes_sent": 10, "bytes_received": 90}}
    body.update(changes)
    return body


def send_report(world, body):
    return signed(world.client, world.one, "/api/v1/slaves/one/reports", body, world.clock)


BIG = 10 ** 30
BAD_INTEGERS = [("string", "1"), ("float", 1.5), ("bool", True), ("list", [1]), ("object", {"n": 1}),
                ("fullwidth-digits", "１"), ("leading-dash-string", "-1"), ("shell", "1;reboot")]
BAD_DATES = [("int", 1767225600), ("bool", True), ("list", ["2026-01-01T00:00:00+00:00"]),
             ("empty", ""), ("not-a-date", "yesterday"), ("month-13", "2026-13-01T00:00:00+00:00"),
             ("nul", "2026-01-01T00:00:00\x00"), ("newline", "2026-01-01T00:00:00+00:00\nx"),
             ("shell", "$(reboot)"), ("oversized", "2026-01-01T00:00:00+00:00" + "0" * 10_000),
             ("fullwidth-digits", "２０２６-01-01T00:00:00+00:00")]

REPORT_CASES = [
    *[("run_id", case_id, value) for case_id, value in
      BAD_INTEGERS + [("null", None), ("zero", 0), ("negative", -1), ("huge", BIG)]],
    *[("project", case_id, value) for case_id, value in WRONG_TYPES + INJECTION_STRINGS +
      [("empty", ""), ("uppercase", "Debian"), ("oversized", "a" * 10_000), ("state-dir", ".mirrorsync")]],
    *[("state", case_id, value) for case_id, value in WRONG_TYPES + INJECTION_STRINGS +
      [("empty", ""), ("uppercase", "SUCCESS"), ("run-state", "partial"), ("master-only", "timeout"),
       ("trailing-space", "success "), ("fullwidth", "ｓｕｃｃｅｓｓ"), ("cyrillic-c", "su\u0441\u0441ess")]],
    *[("started_at", case_id, value) for case_id, value in BAD_DATES],
    *[("finished_at", case_id, value) for case_id, value in BAD_DATES],
    *[("exit_code", case_id, value) for case_id, value in BAD_INTEGERS],
    *[("error", case_id, value) for case_id, value in
      [("int", 5), ("bool", True), ("list", ["x"]), ("object", {"x": 1}), ("oversized", "e" * 4001)]],
    *[("warning", case_id, value) for case_id, value in
      [("int", 5), ("bool", True), ("list", ["x"]), ("object", {"x": 1}), ("oversized", "w" * 4001)]],
    *[("stats", case_id, value) for case_id, value in
      [("string", "{}"), ("int", 5), ("list", [1, 2]), ("bool", True), ("unknown-member", {"evil": 1})]],
]
STAT_MEMBERS = ("files_total", "files_created", "files_deleted", "files_transferred", "total_size",
                "bytes_sent", "bytes_received")



def _report_params():
    params = []
    for field, case_id, value in REPORT_CASES:
        params.append(pytest.param(field, value, id=f"{field}:{case_id}"))
    return params


@pytest.mark.parametrize("field, value", _report_params())
def test_report_refuses_bad_field_and_changes_no_run_entry(world, field, value):
    before = world.snapshot()
    response = send_report(world, good_report(world, **{field: value}))
    assert_error_shape(response, field=field)
    assert_nothing_happened(world, before)


def _stats_params():
    params = []
    for member in STAT_MEMBERS:
        for case_id, value in BAD_INTEGERS:
            params.append(pytest.param(member, value, id=f"{member}:{case_id}"))
    return params


@pytest.mark.parametrize("member, value", _stats_params())
def test_report_refuses_bad_stats_member(world, member, value):
    before = world.snapshot()
    stats = dict(good_report(world)["stats"], **{member: value})
    response = send_report(world, good_report(world, stats=stats))
    body = assert_error_shape(response, field="stats")
    assert member in json.dumps(body["fields"]), body
    assert_nothing_happened(world, before)


@pytest.mark.parametrize("field, value", [
    pytest.param("exit_code", BIG, id="exit_code:huge"),
    pytest.param("exit_code", -BIG, id="exit_code:huge-negative"),
    *[pytest.param(f"stats.{member}", BIG, id=f"stats.{member}:huge") for member in STAT_MEMBERS],
    *[pytest.param(f"stats.{member}", -1, id=f"stats.{member}:negative") for member in STAT_MEMBERS],
])
def test_report_refuses_out_of_range_numbers(world, field, value):
    """A number no rsync can produce is refused, never a 500, never stored."""
    before = world.snapshot()
    if field.startswith("stats."):
        member = field.split(".", 1)[1]
        body = good_report(world, stats=dict(good_report(world)["stats"], **{member: value}))
        named = "stats"
    else:
        body = good_report(world, **{field: value})
        named = field
    response = send_report(world, body)
    assert_error_shape(response, field=named)
    assert_nothing_happened(world, before)


@pytest.mark.parametrize("field, value", [
    pytest.param("error", "x\x00y", id="error:nul"),
    pytest.param("error", "x\x1b[2J\x1b]0;pwned\x07", id="error:escape-sequences"),
    pytest.param("warning", "x\x00y", id="warning:nul"),
])
def test_report_texts_keep_no_control_characters(world, field, value):
    """rsync output can hold any byte a file name holds: the report is taken, its controls neutralised."""
    response = send_report(world, good_report(world, state="failed", exit_code=23, **{field: value}))
    assert response.status_code == 200, response.get_data(as_text=True)
    run = world.client.get(f"/api/v1/runs/{world.run_id}", headers=ADMIN).get_json()
    stored = json.dumps(run)
    assert "\\u0000" not in stored and "\\u001b" not in stored and "\\u0007" not in stored, stored
    if field == "error":  # a slave's warning is not kept; its error is, neutralised
        assert "\\ufffd" in stored


@pytest.mark.parametrize("started, finished", [
    pytest.param("2026-01-01T00:00:00", "2026-01-01T00:01:00", id="naive"),
    pytest.param("2026-01-01T00:02:00+00:00", "2026-01-01T00:01:00+00:00", id="finished-before-started"),
    pytest.param("9999-12-31T23:59:59+00:00", "9999-12-31T23:59:59+00:00", id="year-9999"),
    pytest.param("0001-01-01T00:00:00+00:00", "0001-01-01T00:00:00+00:00", id="year-1"),
    pytest.param("2026-01-01T00:00:00-23:59", "2026-01-01T00:00:00+23:59", id="extreme-offsets"),
])
def test_report_with_odd_timestamps_is_never_a_500(world, started, finished):
    """Odd but parseable timestamps are refused or taken; either way the API keeps answering."""
    before = world.snapshot()
    response = send_report(world, good_report(world, started_at=started, finished_at=finished))
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        assert_error_shape(response)
        assert_nothing_happened(world, before)
    for url in ("/api/v1/slaves", "/api/v1/projects", f"/api/v1/runs/{world.run_id}",
                "/api/v1/projects/debian/runs"):
        assert world.client.get(url, headers=ADMIN).status_code == 200, url
    assert world.client.get("/api/v1/status").status_code == 200


@pytest.mark.parametrize("data, content_type", [
    pytest.param(b"{bad", "application/json", id="invalid-json"),
    pytest.param(b"[]", "application/json", id="json-list"),
    pytest.param(b"null", "application/json", id="json-null"),
    pytest.param(b'{"run_id": 1, "project": "\xff"}', "application/json", id="not-utf8"),
    pytest.param(b"[" * 50_000, "application/json", id="nested-too-deep"),
    pytest.param(b'{"run_id": ' + b"9" * 5000 + b"}", "application/json", id="integer-5000-digits"),
    pytest.param(b'{"run_id": 1}', "text/plain", id="json-as-text"),
    pytest.param(b"", "application/json", id="empty"),
])
def test_report_with_a_body_that_is_not_a_json_object_is_refused(world, data, content_type):
    before = world.snapshot()
    response = signed_raw(world.client, world.one, "/api/v1/slaves/one/reports", data, world.clock,
                          content_type=content_type)
    assert_error_shape(response)
    assert_nothing_happened(world, before)


def test_report_for_another_project_than_its_run_is_refused(world):
    before = world.snapshot()
    response = send_report(world, good_report(world, project="ubuntu"))
    assert_error_shape(response, field="project")
    assert_nothing_happened(world, before)


def test_report_for_a_run_the_slave_has_no_part_in_is_refused(world):
    before = world.snapshot()
    response = send_report(world, good_report(world, run_id=world.run_id + 1000))
    assert_error_shape(response, status=404)
    assert_nothing_happened(world, before)


def test_a_good_report_is_taken_so_the_refusals_above_mean_something(world):
    response = send_report(world, good_report(world))
    assert response.status_code == 200, response.get_json()
    run = world.client.get(f"/api/v1/runs/{world.run_id}", headers=ADMIN).get_json()
    assert run["state"] == "success"


# --- GET /api/v1/runs/<id>/log?offset= -------------------------------------------------------------

@pytest.mark.parametrize("query", [
    pytest.param("offset=-1", id="negative"),
    pytest.param("offset=abc", id="not-a-number"),
    pytest.param("offset=1.5", id="fraction"),
    pytest.param("offset=1e3", id="exponent"),
    pytest.param("offset=", id="empty"),
    pytest.param("offset=99999999999999999999", id="beyond-64-bit"),
    pytest.param("offset=" + "9" * 5000, id="5000-digits"),
    pytest.param("offset=%00", id="nul"),
    pytest.param("offset=1%0a2", id="newline"),
    pytest.param("offset=1;reboot", id="shell-semicolon"),
    pytest.param("offset=%EF%BC%91", id="fullwidth-digit"),
    pytest.param("offset=%D9%A1", id="arabic-indic-digit"),
    pytest.param("offset=--1", id="double-dash"),
    pytest.param("offset=..", id="dot-dot"),
    pytest.param("offset=0x10", id="hex"),
])
def test_bad_log_offset_is_refused_and_named(world, query):
    before = world.snapshot()
    response = world.client.get(f"/api/v1/runs/{world.run_id}/log?{query}", headers=ADMIN)
    assert_error_shape(response, field="offset")
    assert_nothing_happened(world, before)


@pytest.mark.parametrize("offset", [0, 5, 10 ** 9, 2 ** 62])
def test_any_non_negative_log_offset_answers_without_a_500(app, client, admin, make_project, offset):
    # The app of tests/conftest.py keeps its logs under tmp_path, on the disk's file system (ext4 refuses
    # to seek past 16 TiB; tmpfs does not), as a deployment would.
    make_project("debian")
    run_id = client.post("/api/v1/projects/debian/syncs", headers=admin).get_json()["id"]
    with app.app_context():
        for claimed in syncs.run_ids_to_execute(1):
            syncs.start_upstream_sync(claimed)
    assert client.get(f"/api/v1/runs/{run_id}/log", headers=admin).status_code == 200
    response = client.get(f"/api/v1/runs/{run_id}/log?offset={offset}", headers=admin)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert int(response.headers["X-Next-Offset"]) >= 0


@pytest.mark.parametrize("run_id", ["0", "-1", "abc", "1.5", "..", "%00", "1%0a", "9" * 5000,
                                    pytest.param("%EF%BC%91", id="fullwidth-one")])
def test_bad_run_id_in_the_path_is_a_4xx(world, run_id):
    before = world.snapshot()
    for suffix in ("", "/log"):
        response = world.client.get(f"/api/v1/runs/{run_id}{suffix}", headers=ADMIN)
        assert_error_shape(response)
    assert_nothing_happened(world, before)


# --- path parameters: <name> of projects and slaves ---------------------------------------------------

HOSTILE_PATH_NAMES = [
    pytest.param("..", id="dot-dot"),
    pytest.param("%2e%2e", id="percent-dot-dot"),
    pytest.param("%2E%2E", id="percent-dot-dot-upper"),
    pytest.param("..%2f..%2fetc", id="encoded-slash-traversal"),
    pytest.param("debian%00", id="nul-suffix"),
    pytest.param("%00", id="nul"),
    pytest.param("deb%0aian", id="newline"),
    pytest.param("a" * 10_000, id="very-long"),
    pytest.param("%EF%BD%84%EF%BD%85%EF%BD%82%EF%BD%89%EF%BD%81%EF%BD%8E", id="fullwidth-debian"),
    pytest.param("d%D0%B5bian", id="cyrillic-e-debian"),
    pytest.param("DEBIAN", id="uppercase-debian"),
    pytest.param("debian%20", id="trailing-space"),
    pytest.param("-rf", id="leading-dash"),
    pytest.param("debian;reboot", id="shell-semicolon"),
    pytest.param("%24(reboot)", id="shell-dollar-paren"),
    pytest.param("evil::mod", id="host-module"),
    pytest.param(".mirrorsync", id="state-dir"),
    pytest.param("%ff", id="not-utf8"),
]


def _project_requests(name):
    base = f"/api/v1/projects/{name}"
    return [("GET", base, None), ("PATCH", base, {"enabled": False}), ("DELETE", base, None),
            ("POST", f"{base}/syncs", None), ("GET", f"{base}/runs", None)]


def _slave_requests(name):
    base = f"/api/v1/slaves/{name}"
    return [("GET", base, None), ("PATCH", base, {"enabled": False}), ("DELETE", base, None)]


@pytest.mark.parametrize("name", HOSTILE_PATH_NAMES)
def test_hostile_project_name_in_the_path_is_a_4xx_and_touches_nothing(world, name):
    before = world.snapshot()
    outside = _files_outside_the_db(world.root)
    for method, url, body in _project_requests(name):
        response = world.client.open(url, method=method, headers=ADMIN, json=body)
        assert_error_shape(response)
        assert response.status_code in (400, 404, 405, 422), (method, url, response.status_code)
    assert_nothing_happened(world, before)
    assert _files_outside_the_db(world.root) == outside


@pytest.mark.parametrize("name", HOSTILE_PATH_NAMES)
def test_hostile_slave_name_in_the_path_is_a_4xx_and_touches_nothing(world, name):
    before = world.snapshot()
    for method, url, body in _slave_requests(name):
        response = world.client.open(url, method=method, headers=ADMIN, json=body)
        assert_error_shape(response)
        assert response.status_code in (400, 404, 405, 422), (method, url, response.status_code)
    assert_nothing_happened(world, before)


@pytest.mark.parametrize("name", HOSTILE_PATH_NAMES)
@pytest.mark.parametrize("endpoint", ["heartbeat", "reports"])
def test_hostile_slave_name_on_the_signed_channel_is_refused(world, name, endpoint):
    """Signed with one's key, but the path names another (hostile) slave: refused, nothing recorded."""
    before = world.snapshot()
    body = {"url": "http://one:7000"} if endpoint == "heartbeat" else good_report(world)
    path = f"/api/v1/slaves/{name}/{endpoint}"
    response = signed(world.client, world.one, path, body, world.clock)
    assert_error_shape(response)
    assert response.status_code in (400, 401, 404), response.status_code
    assert_nothing_happened(world, before)


# --- the slave's POST /api/v1/syncs -------------------------------------------------------------------

SLAVE_NAME = "mirror1"
SLAVE_KEY = "order-signing-key"


def an_order(**changes):
    return {"run_id": 7, "project": "debian", "rsyncd_host": "master.example.org", "rsyncd_port": 8730,
            "timeout": 600, "catchup": False, "publish": "delay", **changes}


@pytest.fixture
def slave_world(tmp_path):
    from slave import create_app
    from slave.credentials import Credentials, CredentialStore

    root = tmp_path
    state_dir = root / "state"
    CredentialStore(str(state_dir)).save(Credentials(
        name=SLAVE_NAME, signing_key=SLAVE_KEY, rsync_user="ms-mirror1", rsync_password="rsync-pass-word",
        master_url="http://master.example.org:5000"))
    runner = FakeRsyncRunner()
    master = FakeMasterClient()
    app = create_app({
        "STATE_DIR": str(state_dir), "PUBLIC_DIR": str(root / "public"), "SLAVE_NAME": SLAVE_NAME,
        "SLAVE_URL": "http://mirror1.example.org:7000", "JOIN_TOKEN": "join-token", "LOG_LEVEL": "CRITICAL",
        "CLOCK": FakeClock(), "RSYNC_RUNNER": runner, "MASTER_CLIENT": master, "START_BACKGROUND": False})

    class SlaveWorld:
        pass
    w = SlaveWorld()
    w.app, w.client, w.runner, w.master, w.root, w.state_dir = app, app.test_client(), runner, master, root, state_dir
    w.services = app.extensions["mirrorsync_slave"]
    yield w
    w.services.stop(5)


def _files_outside_the_db(root):
    return [p for p in _tree(root) if not p.endswith(("-journal", "-wal", "-shm"))]


def _tree(root):
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def send_order(client, raw, content_type="application/json"):
    headers = signature_headers(SLAVE_NAME, SLAVE_KEY, "POST", "/api/v1/syncs", raw)
    headers["Content-Type"] = content_type
    return client.post("/api/v1/syncs", data=raw, headers=headers)


ORDER_CASES = [
    *[("run_id", case_id, value) for case_id, value in
      BAD_INTEGERS + [("null", None), ("zero", 0), ("negative", -1), ("huge", BIG)]],
    *[("project", case_id, value) for case_id, value in WRONG_TYPES + INJECTION_STRINGS +
      [("empty", ""), ("uppercase", "Debian"), ("slash", "debian/../../etc"), ("absolute", "/etc"),
       ("oversized", "a" * 10_000), ("state-dir", ".mirrorsync"), ("snapshots", ".mirrorsync-snapshots"),
       ("dot", "."), ("percent-dot-dot", "%2e%2e")]],
    *[("rsyncd_host", case_id, value) for case_id, value in WRONG_TYPES + INJECTION_STRINGS +
      [("empty", ""), ("user-at-host", "evil@master.example.org"), ("host-port", "master.example.org:873"),
       ("url", "rsync://master.example.org"), ("slash", "master.example.org/x"), ("space", "master example"),
       ("ipv4-out-of-range", "999.1.1.1"), ("ipv6-zone", "[fe80::1%eth0]"), ("ipv6-zone-bare", "fe80::1%;sh"),
       ("bracket-not-an-address", "[evil]"), ("unclosed-bracket", "[::1"), ("oversized", "a" * 10_000),
       ("label-64", "a" * 64 + ".example.org"), ("leading-dash-label", "-oProxyCommand=sh")]],
    *[("rsyncd_port", case_id, value) for case_id, value in
      BAD_INTEGERS + [("null", None), ("zero", 0), ("negative", -1), ("65536", 65536), ("huge", BIG)]],
    *[("timeout", case_id, value) for case_id, value in
      BAD_INTEGERS + [("null", None), ("zero", 0), ("negative", -1), ("above-30-days", 30 * 86400 + 1),
                      ("huge", BIG)]],
    *[("catchup", case_id, value) for case_id, value in
      [("string-true", "true"), ("string-yes", "yes"), ("int-2", 2), ("list", [True]), ("object", {}),
       ("null", None), ("shell", "true;reboot"), ("leading-dash", "-e")]],
    *[("publish", case_id, value) for case_id, value in WRONG_TYPES + INJECTION_STRINGS +
      [("empty", ""), ("uppercase", "ATOMIC"), ("unknown", "hardlink"), ("trailing-space", "atomic "),
       ("fullwidth", "ａｔｏｍｉｃ")]],
    *[(field, "unknown-field", "x") for field in ("bogus", "password", "rsync_password", "source",
                                                    "destination", "rsync_options")],
]



def _order_params():
    params = []
    for field, case_id, value in ORDER_CASES:
        params.append(pytest.param(field, value, id=f"{field}:{case_id}"))
    return params


def assert_slave_did_nothing(world, before_state, before_public):
    assert world.services.worker.wait_idle(5)
    assert world.runner.jobs == []
    assert world.master.reports == []
    assert world.services.outbox.pending() == []
    assert world.services.worker.records.get(7) is None
    assert _tree(world.state_dir) == before_state
    assert _tree(world.root / "public") == before_public if (world.root / "public").exists() else True


@pytest.mark.parametrize("field, value", _order_params())
def test_slave_refuses_bad_order_field_and_pulls_nothing(slave_world, field, value):
    before_state, before_public = _tree(slave_world.state_dir), _tree(slave_world.root / "public")
    body = an_order(**{field: value})
    response = send_order(slave_world.client, json.dumps(body).encode())
    assert_error_shape(response, field=field)
    assert_slave_did_nothing(slave_world, before_state, before_public)


@pytest.mark.parametrize("field", ["run_id", "project", "rsyncd_host", "rsyncd_port", "timeout"])
def test_slave_refuses_an_order_missing_a_required_field(slave_world, field):
    before_state, before_public = _tree(slave_world.state_dir), _tree(slave_world.root / "public")
    body = an_order()
    del body[field]
    response = send_order(slave_world.client, json.dumps(body).encode())
    assert_error_shape(response, field=field)
    assert_slave_did_nothing(slave_world, before_state, before_public)


@pytest.mark.parametrize("data, content_type", [
    pytest.param(b"{bad", "application/json", id="invalid-json"),
    pytest.param(b"[]", "application/json", id="json-list"),
    pytest.param(b"null", "application/json", id="json-null"),
    pytest.param(b"42", "application/json", id="json-number"),
    pytest.param(b'{"project": "\xff"}', "application/json", id="not-utf8"),
    pytest.param(b"[" * 50_000, "application/json", id="nested-too-deep"),
    pytest.param(b"{" + b'"a":{' * 5000 + b"}" * 5001, "application/json", id="objects-too-deep"),
    pytest.param(b'{"run_id": ' + b"9" * 5000 + b"}", "application/json", id="integer-5000-digits"),
    pytest.param(json.dumps(an_order()).encode(), "text/plain", id="json-as-text"),
    pytest.param(b"run_id=7&project=debian", "application/x-www-form-urlencoded", id="form-encoded"),
    pytest.param(b"", "application/json", id="empty"),
])
def test_slave_refuses_an_order_body_that_is_not_a_json_object(slave_world, data, content_type):
    before_state, before_public = _tree(slave_world.state_dir), _tree(slave_world.root / "public")
    response = send_order(slave_world.client, data, content_type=content_type)
    assert_error_shape(response)
    assert_slave_did_nothing(slave_world, before_state, before_public)


def test_slave_refuses_an_oversized_order_body(slave_world):
    before_state, before_public = _tree(slave_world.state_dir), _tree(slave_world.root / "public")
    body = an_order(padding=["x" * 1000] * 2000)
    response = send_order(slave_world.client, json.dumps(body).encode())
    assert_error_shape(response)
    assert_slave_did_nothing(slave_world, before_state, before_public)
