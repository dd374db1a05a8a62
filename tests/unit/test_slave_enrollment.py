"""Enrollment, heartbeats and the HTTP channel to the master, against a small fake master on loopback."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from flask import Flask, jsonify, request
from marshmallow import ValidationError
from werkzeug.serving import make_server

from common import enrollment
from common.errors import ConfigError
from common.signing import SignatureError, verify_signature
from common.wire import heartbeat_schema, report_schema
from slave import create_app
from slave.credentials import CredentialStore
from slave.heartbeat import Heartbeat, enroll
from slave.master_client import ACKNOWLEDGED, DROPPED, EnrollmentRefused, MasterClient, MasterUnavailable
from tests.support.processes import ServiceNotReady, on_a_free_port

JOIN_TOKEN = "join-token-7f3a9c"
NAME = "mirror1"
SLAVE_URL = "http://mirror1.example.org:7000"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeMaster:
    """The master's slave channel, served over HTTP on loopback; signatures checked for real."""

    def __init__(self):
        self.join_token = JOIN_TOKEN
        self.register_status = 201
        self.report_status = 200
        self.registrations, self.heartbeats, self.reports = [], [], []
        self.raw_heartbeats = []     # as sent, before the schema fills in defaults
        self.takes_edits = False     # answer as a master that takes ``last_edit`` (not one before it)
        self.wire = []  # the enrollment as an observer on the network sees it
        self.issued = {"name": NAME, "signing_key": "issued-signing-key", "rsync_user": "ms-mirror1",
                       "rsync_password": "issued-rsync-password"}
        self._nonces = set()
        app = Flask("fake_master")
        app.add_url_rule("/api/v1/slaves/register", view_func=self._register, methods=["POST"])
        app.add_url_rule("/api/v1/slaves/<name>/heartbeat", view_func=self._heartbeat, methods=["POST"])
        app.add_url_rule("/api/v1/slaves/<name>/reports", view_func=self._report, methods=["POST"])
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _error(status, message):
        return jsonify(error="refused", message=message, fields={}), status

    def _register(self):
        body = request.get_json()
        assert "Authorization" not in request.headers, "the join token crossed the network"
        try:
            enrollment.check_proof(self.join_token, body["name"], body["url"], body["public_key"],
                                   body["timestamp"], body["nonce"], body["proof"], time.time(), 300)
        except (KeyError, enrollment.EnrollmentError):
            return self._error(403, "The join token is not valid.")
        if self.register_status == 409:
            return self._error(409, f"A slave named {NAME!r} is already enrolled; delete it first.")
        if self.register_status != 201:
            return self._error(self.register_status, "Try later.")
        self.registrations.append({"name": body["name"], "url": body["url"]})
        public_key, self.issued["signing_key"], sealed = enrollment.master_exchange(
            self.join_token, body["name"], body["url"], body["public_key"], self.issued["rsync_user"],
            self.issued["rsync_password"])
        self.wire.append(request.get_data(as_text=True))
        answer = {"name": NAME, "rsync_user": self.issued["rsync_user"], "public_key": public_key,
                  "sealed_rsync_password": sealed, "enabled": True}
        self.wire.append(json.dumps(answer))
        return jsonify(answer), 201

    def _verify(self, name):
        def secret_for(key_id):
            return self.issued["signing_key"] if key_id == name == self.issued["name"] else None

        def remember(key_id, nonce, expires_at):
            fresh = (key_id, nonce) not in self._nonces
            self._nonces.add((key_id, nonce))
            return fresh
        verify_signature(request.headers, request.method, request.full_path.rstrip("?"),
                         request.get_data(), secret_for, remember)

    def _heartbeat(self, name):
        try:
            self._verify(name)
            self.raw_heartbeats.append(request.get_json())
            self.heartbeats.append(heartbeat_schema.load(request.get_json()))
        except SignatureError as error:
            return self._error(401, str(error))
        except ValidationError as error:
            return self._error(422, json.dumps(error.messages))
        return jsonify(status="ok", enabled=True, **({"takes_edits": True} if self.takes_edits else {}))

    def _report(self, name):
        try:
            self._verify(name)
            report = report_schema.load(request.get_json())
        except SignatureError as error:
            return self._error(401, str(error))
        except ValidationError as error:
            return self._error(422, json.dumps(error.messages))
        if self.report_status != 200:
            return self._error(self.report_status, "not now")
        self.reports.append(report)
        return jsonify(recorded=True)


@pytest.fixture
def master():
    fake = FakeMaster()
    yield fake
    fake.close()


@pytest.fixture
def make_slave(tmp_path, master):
    built = []

    def make(start_background=False, **settings):
        app = create_app({
            "STATE_DIR": str(tmp_path / "state"), "PUBLIC_DIR": str(tmp_path / "public"),
            "MASTER_URL": master.url, "SLAVE_NAME": NAME, "SLAVE_URL": SLAVE_URL, "JOIN_TOKEN": JOIN_TOKEN,
            "LOG_LEVEL": "INFO", "START_BACKGROUND": start_background, **settings})
        built.append(app)
        return app
    yield make
    for app in built:
        services(app).stop(5)


def services(app):
    return app.extensions["mirrorsync_slave"]


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class RecordingStop:
    """A stop event that is never set and notes every wait instead of sleeping."""

    def __init__(self):
        self.waits = []

    def is_set(self):
        return False

    def wait(self, timeout):
        self.waits.append(timeout)
        return False


# --- enrollment -------------------------------------------------------------

def test_first_start_registers_and_keeps_the_identity_private(tmp_path, master, make_slave):
    app = make_slave()
    credentials = services(app).enroll()
    assert master.registrations == [{"name": NAME, "url": SLAVE_URL}]
    path = tmp_path / "state" / "credentials.json"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "state").st_mode & 0o777 == 0o700
    stored = json.loads(path.read_text())
    assert stored == {"name": NAME, "signing_key": master.issued["signing_key"], "rsync_user": "ms-mirror1",
                      "rsync_password": "issued-rsync-password", "master_url": master.url}
    for secret in (JOIN_TOKEN, stored["signing_key"], stored["rsync_password"]):
        assert not any(secret in seen for seen in master.wire), "a secret crossed the network in clear"
    assert credentials.name == NAME
    assert app.test_client().get("/healthz").json["enrolled"] is True


def test_a_restart_keeps_the_identity_and_does_not_register_again(master, make_slave):
    first = make_slave()
    identity = services(first).enroll()
    services(first).stop(5)
    second = make_slave()
    assert services(second).enroll() == identity
    assert len(master.registrations) == 1


def test_several_workers_starting_together_enroll_once(tmp_path):
    calls = []

    def register():
        calls.append(1)
        time.sleep(0.1)
        return {"name": NAME, "signing_key": "k", "rsync_user": "u", "rsync_password": "p"}
    results = []
    workers = [threading.Thread(target=lambda: results.append(
        CredentialStore(str(tmp_path / "state")).enroll(register, "http://master"))) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(5)
    assert len(calls) == 1
    assert len(results) == 4 and len(set(results)) == 1


def test_a_wrong_join_token_is_fatal_with_a_clear_message(tmp_path, master, make_slave):
    master.join_token = "another-token"
    app = make_slave()
    with pytest.raises(EnrollmentRefused, match=r"HTTP 403.*join token is not valid"):
        services(app).enroll()
    assert not (tmp_path / "state" / "credentials.json").exists()


def test_a_taken_name_is_fatal_with_a_clear_message(master, make_slave):
    master.register_status = 409
    with pytest.raises(EnrollmentRefused, match=r"'mirror1' \(HTTP 409\).*already enrolled"):
        services(make_slave()).enroll()


def test_background_enrollment_stops_on_a_fatal_error_and_says_why(master, make_slave, caplog):
    master.join_token = "another-token"
    with caplog.at_level(logging.INFO, logger="slave"):
        app = make_slave(start_background=True)
        duties = services(app)._thread
        duties.join(10)
    assert not duties.is_alive(), caplog.text
    assert isinstance(services(app).enrollment_error, EnrollmentRefused), caplog.text
    assert "cannot enroll" in caplog.text and "HTTP 403" in caplog.text
    assert master.heartbeats == []


def test_enrollment_is_retried_while_the_master_is_unreachable(tmp_path):
    class FlakyClient:
        calls = 0

        def register(self, name, url):
            self.calls += 1
            if self.calls <= 8:
                raise MasterUnavailable("cannot reach the master: ConnectionError")
            return {"name": name, "signing_key": "k", "rsync_user": "u", "rsync_password": "p"}
    client, stop = FlakyClient(), RecordingStop()
    credentials = enroll(CredentialStore(str(tmp_path)), client, NAME, SLAVE_URL, "http://master", stop,
                         rng=lambda: 1.0)
    assert credentials.name == NAME and client.calls == 9
    # Doubling from 0.5 s, never more than 10 s.
    assert stop.waits == [0.5, 1, 2, 4, 8, 10, 10, 10]


def test_a_master_that_is_down_is_retryable_not_fatal():
    closed_port = _free_port()
    client = MasterClient(f"http://127.0.0.1:{closed_port}", JOIN_TOKEN)
    with pytest.raises(MasterUnavailable, match="cannot reach the master"):
        client.register(NAME, SLAVE_URL)


def test_a_master_error_is_retryable(master):
    master.register_status = 503
    with pytest.raises(MasterUnavailable, match="HTTP 503"):
        MasterClient(master.url, JOIN_TOKEN).register(NAME, SLAVE_URL)


def test_an_unenrolled_slave_without_join_token_does_not_start(tmp_path):
    with pytest.raises(ConfigError, match="JOIN_TOKEN"):
        create_app({"STATE_DIR": str(tmp_path / "state"), "PUBLIC_DIR": str(tmp_path / "public"),
                    "SLAVE_NAME": NAME, "JOIN_TOKEN": None, "START_BACKGROUND": False})


@pytest.mark.parametrize("name, value", [("SLAVE_NAME", "Mirror_One!"), ("SLAVE_URL", "http://mirror 1"),
                                         ("REPORT_RETRY_MAX", "soon")])
def test_a_bad_slave_setting_names_itself(tmp_path, name, value):
    settings = {"STATE_DIR": str(tmp_path / "state"), "PUBLIC_DIR": str(tmp_path / "public"),
                "SLAVE_NAME": NAME, "JOIN_TOKEN": JOIN_TOKEN, "START_BACKGROUND": False, name: value}
    with pytest.raises(ConfigError, match=name):
        create_app(settings)


def test_the_join_token_and_secrets_never_reach_the_logs_or_the_identity_file(tmp_path, master, make_slave,
                                                                            caplog):
    with caplog.at_level(logging.DEBUG):
        master.join_token = "another-token"
        app = make_slave()
        with pytest.raises(EnrollmentRefused):
            services(app).enroll()
        master.join_token = JOIN_TOKEN
        credentials = services(app).enroll()
        services(app).heartbeat.beat()
    text = caplog.text + "".join(repr(record.args) for record in caplog.records)
    for secret in (JOIN_TOKEN, credentials.signing_key, credentials.rsync_password):
        assert secret not in text
    assert JOIN_TOKEN not in (tmp_path / "state" / "credentials.json").read_text()
    assert credentials.signing_key not in repr(credentials)


# --- heartbeats -------------------------------------------------------------

def test_an_enrolled_slave_sends_signed_heartbeats_right_away_and_then_regularly(master, make_slave):
    make_slave(start_background=True, HEARTBEAT_INTERVAL=0.05)
    assert wait_for(lambda: len(master.heartbeats) >= 3)
    assert master.heartbeats[0] == {"url": SLAVE_URL, "syncing": [], "last_edit": None}


def test_a_heartbeat_names_the_projects_being_pulled(master):
    client = MasterClient(master.url)
    credentials = _issued_identity(master)
    beat = Heartbeat(client, lambda: credentials, SLAVE_URL, 15, lambda: ["debian", "ubuntu"])
    assert beat.beat()
    assert master.heartbeats == [{"url": SLAVE_URL, "syncing": ["debian", "ubuntu"], "last_edit": None}]


def test_the_last_edit_behind_the_slaves_back_goes_with_heartbeats_once_the_master_takes_it(master):
    """A master before edits were reported refuses a heartbeat with a field it does not know: the edit
    goes only to one that said it takes it."""
    client = MasterClient(master.url)
    credentials = _issued_identity(master)
    edit = {"project": "debian", "path": "pool/main/a.deb", "seen_at": "2026-12-03T16:00:00+00:00",
            "repaired_at": None}
    beat = Heartbeat(client, lambda: credentials, SLAVE_URL, 15, lambda: [], last_edit=lambda: edit)
    assert beat.beat() and beat.beat()
    assert [sorted(body) for body in master.raw_heartbeats] == [["syncing", "url"]] * 2
    master.takes_edits = True
    assert beat.beat() and beat.beat()
    assert "last_edit" not in master.raw_heartbeats[2], "the master had not said so yet"
    assert master.raw_heartbeats[3]["last_edit"] == edit
    assert master.heartbeats[3]["last_edit"]["path"] == "pool/main/a.deb"


def test_heartbeat_failures_are_logged_once_per_outage(caplog):
    class DownThenUp:
        down = True

        def heartbeat(self, credentials, body):
            if self.down:
                raise MasterUnavailable("cannot reach the master: ConnectionError")
            return {"status": "ok"}
    client = DownThenUp()
    beat = Heartbeat(client, lambda: object(), SLAVE_URL, 15, lambda: [])
    with caplog.at_level(logging.INFO, logger="slave.heartbeat"):
        assert [beat.beat() for _ in range(5)] == [False] * 5
        client.down = False
        assert beat.beat()
        client.down = True
        beat.beat()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("heartbeat to the master failed" in m for m in messages) == 2
    assert sum("again" in m for m in messages) == 1


def test_no_heartbeat_before_enrollment(master):
    beat = Heartbeat(MasterClient(master.url), lambda: None, SLAVE_URL, 15, lambda: [])
    assert beat.beat() is False
    assert master.heartbeats == []


# --- reports over HTTP ------------------------------------------------------

A_REPORT = {"run_id": 7, "project": "debian", "state": "success", "started_at": "2026-01-01T00:00:00+00:00",
            "finished_at": "2026-01-01T00:01:00+00:00", "exit_code": 0, "error": None, "warning": None,
            "stats": {"files_total": 3, "files_created": 2, "files_deleted": 0, "files_transferred": 2,
                      "total_size": 1234, "bytes_sent": 10, "bytes_received": 100}}


@pytest.mark.parametrize("status, outcome", [(200, ACKNOWLEDGED), (404, DROPPED), (422, DROPPED)])
def test_a_report_is_acknowledged_or_dropped(master, status, outcome):
    master.report_status = status
    assert MasterClient(master.url).report(_issued_identity(master), A_REPORT) == outcome


@pytest.mark.parametrize("status", [401, 500, 503])
def test_a_report_the_master_could_not_take_now_is_retryable(master, status):
    master.report_status = status
    with pytest.raises(MasterUnavailable, match=f"HTTP {status}"):
        MasterClient(master.url).report(_issued_identity(master), A_REPORT)


def test_a_report_signed_with_a_wrong_key_is_retryable(master):
    identity = _issued_identity(master)
    forged = type(identity)(**{**identity.__dict__, "signing_key": "wrong"})
    with pytest.raises(MasterUnavailable, match="HTTP 401"):
        MasterClient(master.url).report(forged, A_REPORT)


def test_a_report_to_a_master_that_is_down_is_retryable():
    with pytest.raises(MasterUnavailable):
        MasterClient(f"http://127.0.0.1:{_free_port()}").report(_issued_identity(None), A_REPORT)


# --- python -m slave --------------------------------------------------------

def test_python_m_slave_refuses_bad_configuration_with_one_line(tmp_path):
    result = _run_slave(tmp_path, {"MIRRORSYNC_API_PORT": "nope"})
    assert result.returncode == 2
    assert "API_PORT" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_python_m_slave_exits_with_one_line_when_enrollment_is_refused(tmp_path, master):
    master.join_token = "another-token"
    result = _run_slave(tmp_path, {"MIRRORSYNC_MASTER_URL": master.url})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and JOIN_TOKEN not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"mirror-sync slave: cannot enroll with the master at {master.url}: "
        "the master refused the enrollment (HTTP 403): The join token is not valid."]


def test_python_m_slave_with_its_port_taken_says_so_in_one_line_and_does_not_enroll(tmp_path, master):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        result = _run_slave(tmp_path, {"MIRRORSYNC_MASTER_URL": master.url, "MIRRORSYNC_API_PORT": str(port)})
    finally:
        taken.close()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"mirror-sync slave: API_PORT: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert master.registrations == [], "a slave that cannot listen must not enroll"


def test_python_m_slave_enrolls_serves_and_stops_cleanly_on_sigterm(tmp_path, master):
    def start(port):
        process = subprocess.Popen([sys.executable, "-m", "slave"], cwd=ROOT, env=_slave_env(tmp_path, {
            "MIRRORSYNC_MASTER_URL": master.url, "MIRRORSYNC_API_PORT": str(port)}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if wait_for(lambda: process.poll() is not None or _healthz(port) is not None, timeout=8) \
                and process.poll() is not None:
            raise ServiceNotReady(process.stderr.read())   # "Address already in use": another port is tried
        return process, port
    process, port = on_a_free_port(None, start)
    try:
        assert _healthz(port) is not None, "no answer"
        assert _healthz(port) == {"status": "ok", "enrolled": True, "name": NAME}
        assert wait_for(lambda: master.heartbeats, timeout=3)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=8) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert len(master.registrations) == 1
    assert "Traceback" not in process.stderr.read()


# --- helpers ----------------------------------------------------------------

def _issued_identity(master):
    from slave.credentials import Credentials
    issued = master.issued if master is not None else {
        "name": NAME, "signing_key": "k", "rsync_user": "u", "rsync_password": "p"}
    return Credentials(master_url=master.url if master else "http://master", **issued)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _slave_env(tmp_path, extra):
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": ROOT,
            "MIRRORSYNC_STATE_DIR": str(tmp_path / "state"), "MIRRORSYNC_PUBLIC_DIR": str(tmp_path / "public"),
            "MIRRORSYNC_SLAVE_NAME": NAME, "MIRRORSYNC_JOIN_TOKEN": JOIN_TOKEN,
            "MIRRORSYNC_MASTER_URL": "http://127.0.0.1:9", "MIRRORSYNC_LOG_LEVEL": "WARNING",
            "MIRRORSYNC_HEARTBEAT_INTERVAL": "0.2", **extra}


def _run_slave(tmp_path, extra):
    return subprocess.run([sys.executable, "-m", "slave"], cwd=ROOT, env=_slave_env(tmp_path, extra),
                          capture_output=True, text=True, timeout=30)


def _healthz(port):
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
    except (requests.RequestException, ValueError):
        return None


def test_an_identity_replaced_by_another_process_is_read_again(tmp_path):
    from slave.credentials import Credentials
    first = Credentials(name=NAME, signing_key="old-key", rsync_user="ms-mirror1", rsync_password="p1",
                        master_url="http://m:5000")
    worker_a, worker_b = CredentialStore(str(tmp_path)), CredentialStore(str(tmp_path))
    worker_a.save(first)
    assert worker_b.load().signing_key == "old-key"
    worker_a.forget(first)
    assert worker_b.load() is None
    assert (tmp_path / "credentials.json.forgotten").exists()
    worker_a.save(Credentials(**dict(first.__dict__, signing_key="new-key")))
    assert worker_b.load().signing_key == "new-key", "a worker must not keep verifying with the old key"
