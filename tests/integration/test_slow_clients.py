"""``python -m master`` and ``python -m slave`` keep answering while 1,100 slow clients hold connections."""

import resource
import socket
import time

import pytest
import requests

from tests.support.processes import DEFAULT_JOIN_TOKEN, start_slave

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SLOW_CLIENTS = 1100


def hold_half_sent(port, count):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 500), hard))
    held = []
    for index in range(count):
        connection = socket.create_connection(("127.0.0.1", port), timeout=5)
        if index % 2:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        held.append(connection)
    return held


def answers_quickly(url):
    started = time.monotonic()
    response = requests.get(url, timeout=10)
    return response.status_code == 200 and time.monotonic() - started < 5


def test_master_and_slave_answer_while_slow_clients_hold_connections(master_factory, tmp_path):
    master = master_factory(tmp_path / "master", extra_env={"MIRRORSYNC_JOIN_TOKEN": DEFAULT_JOIN_TOKEN})
    slave = start_slave(tmp_path / "mirror1", "mirror1", master.url, log_dir=tmp_path / "logs")
    try:
        for url in (master.url, slave.url):
            held = hold_half_sent(int(url.rsplit(":", 1)[1]), SLOW_CLIENTS)
            try:
                assert answers_quickly(f"{url}/healthz"), url
                assert answers_quickly(f"{url}/healthz"), url
                # Each slow client is closed once its head is overdue (10 s), not held forever.
                last = held[-1]
                last.settimeout(30)
                started = time.monotonic()
                assert last.recv(100) == b"" and time.monotonic() - started < 20, url
            finally:
                for connection in held:
                    connection.close()
    finally:
        slave.stop()
