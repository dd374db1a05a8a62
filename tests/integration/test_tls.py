"""Master and slaves over HTTPS, each verifying the other against a configured CA bundle."""

import sys

import pytest
import requests

from tests.support.processes import (DEFAULT_ADMIN_TOKEN, DEFAULT_JOIN_TOKEN, ServiceProcess, free_port,
                                     master_env, slave_env, wait_for)
from tests.support.tls import CertificateAuthority
from tests.support.trees import assert_trees_equal


class VerifiedSession(requests.Session):
    """A session that checks certificates against ``ca`` even where REQUESTS_CA_BUNDLE is set
    (requests lets that variable override a session's own ``verify``, not a request's)."""

    def __init__(self, ca):
        super().__init__()
        self.ca = str(ca)
        self.headers["Authorization"] = f"Bearer {DEFAULT_ADMIN_TOKEN}"

    def request(self, method, url, **kwargs):
        kwargs.setdefault("verify", self.ca)
        kwargs.setdefault("timeout", 10)
        return super().request(method, url, **kwargs)


def wait_https(process, url, ca):
    def answers():
        assert process.is_running(), process.log_tail()
        try:
            return requests.get(url, verify=str(ca), timeout=2).status_code == 200
        except requests.RequestException:
            return False
    wait_for(answers, 20, message=lambda: f"{url} over HTTPS; log:\n{process.log_tail()}")


def test_signed_orders_and_reports_travel_over_verified_https(tmp_path, upstream):
    trusted = CertificateAuthority(tmp_path / "pki", "trusted-ca")
    rogue = CertificateAuthority(tmp_path / "pki", "rogue-ca")
    logs = tmp_path / "logs"
    logs.mkdir()
    master_cert, master_key = trusted.issue("master")
    port = free_port()
    env = master_env(tmp_path / "master", api_port=port, extra_env={
        "MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN, "MIRRORSYNC_CATCHUP_INTERVAL": "0.3",
        "MIRRORSYNC_TLS_CERT_FILE": master_cert, "MIRRORSYNC_TLS_KEY_FILE": master_key,
        "MIRRORSYNC_CA_BUNDLE": trusted.cert, "MIRRORSYNC_DISPATCH_TIMEOUT": "3"})
    master_url = f"https://127.0.0.1:{port}"
    processes = [ServiceProcess([sys.executable, "-m", "master"], env, logs, name="master")]
    try:
        wait_https(processes[0], master_url + "/healthz", trusted.cert)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(master_url + "/healthz", timeout=2)  # not trusted by the system's CAs
        for name, ca in (("honest", trusted), ("impostor", rogue)):
            cert, key = ca.issue(name)
            slave_port = free_port()
            env = slave_env(tmp_path / name, name, master_url, slave_port, extra_env={
                "MIRRORSYNC_TLS_CERT_FILE": cert, "MIRRORSYNC_TLS_KEY_FILE": key,
                "MIRRORSYNC_CA_BUNDLE": trusted.cert})
            processes.append(ServiceProcess([sys.executable, "-m", "slave"], env, logs, name=name))
            wait_https(processes[-1], f"https://127.0.0.1:{slave_port}/healthz", ca.cert)
        session = VerifiedSession(trusted.cert)
        wait_for(lambda: {s["name"]: s["state"] for s in session.get(master_url + "/api/v1/slaves").json()}
                 == {"honest": "online", "impostor": "online"}, 20, message="both slaves enrolled over HTTPS")
        assert all(s["url"].startswith("https://") for s in session.get(master_url + "/api/v1/slaves").json())
        session.post(master_url + "/api/v1/projects", json={"name": "secure", "upstream": upstream.url})
        run_id = session.post(master_url + "/api/v1/projects/secure/syncs").json()["id"]
        # wait_run_finished has no CA parameter: poll through the verified session instead.
        run = wait_for(lambda: (r := session.get(f"{master_url}/api/v1/runs/{run_id}").json())["state"] in
                       ("success", "partial", "failed") and r, 30, message="the run over HTTPS")
        slaves = {entry["slave"]: entry for entry in run["slaves"]}
        assert slaves["honest"]["state"] == "success"
        assert_trees_equal(upstream.tree, tmp_path / "honest" / "public" / "secure")
        assert slaves["impostor"]["state"] == "unreachable", "a slave with an untrusted certificate gets no order"
        assert "SSLError" in slaves["impostor"]["error"]
        assert run["state"] == "partial"
        assert not (tmp_path / "impostor" / "public" / "secure").exists()
    finally:
        for process in reversed(processes):
            process.stop()
