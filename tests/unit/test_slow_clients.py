"""The built-in server keeps answering while slow clients hold connections (slowloris)."""

import socket
import ssl
import threading
import time

import pytest
import requests
from flask import Flask

from tests.support.guarded import guarded_server
from tests.support.tls import CertificateAuthority


def tiny_app():
    app = Flask("tiny")
    app.add_url_rule("/ping", "ping", lambda: "pong")
    app.add_url_rule("/echo", "echo", lambda: "ok", methods=["POST"])
    return app


def serving(ssl_context=None, **limits):
    return guarded_server(tiny_app(), ssl_context=ssl_context, **limits)


def half_sent(port, count, data=b"GET /ping HTTP/1.1\r\nHost: x\r\n"):
    held = []
    for _ in range(count):
        connection = socket.create_connection(("127.0.0.1", port))
        if data:
            connection.sendall(data)
        held.append(connection)
    return held


def test_the_api_answers_while_more_idle_half_sent_connections_are_held_than_it_serves_at_once():
    with serving(max_connections=32, head_timeout=30) as (_, port):
        held = half_sent(port, 100) + half_sent(port, 50, data=b"")
        try:
            started = time.monotonic()
            for _ in range(5):
                assert requests.get(f"http://127.0.0.1:{port}/ping", timeout=5).text == "pong"
            assert time.monotonic() - started < 5
        finally:
            for connection in held:
                connection.close()


def test_a_request_head_that_does_not_arrive_in_time_is_closed():
    with serving(head_timeout=0.5) as (_, port):
        [slow] = half_sent(port, 1)
        slow.settimeout(10)
        started = time.monotonic()
        assert slow.recv(100) == b"", "the server must close the half-sent request"
        assert time.monotonic() - started < 5
        slow.close()


def test_a_stalled_body_is_closed_after_the_idle_timeout():
    with serving(idle_timeout=0.5) as (_, port):
        [slow] = half_sent(port, 1, data=b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        slow.settimeout(10)
        started = time.monotonic()
        while slow.recv(4096):  # the 500 or 400 werkzeug answers, then the close
            pass
        assert time.monotonic() - started < 5
        slow.close()


def test_a_tls_client_that_never_finishes_its_handshake_blocks_nobody(tmp_path):
    authority = CertificateAuthority(tmp_path / "ca", "ca")
    cert, key = authority.issue("server")
    with serving(ssl_context=(str(cert), str(key)), head_timeout=30) as (_, port):
        held = half_sent(port, 20, data=b"")  # TCP connected, no ClientHello
        try:
            context = ssl.create_default_context(cafile=str(authority.cert))
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    assert b"pong" in tls.recv(4096) + tls.recv(4096)
        finally:
            for connection in held:
                connection.close()


@pytest.mark.parametrize("busy", [4])
def test_when_every_connection_is_busy_with_a_request_a_new_one_is_refused_not_queued_forever(busy):
    release, entered = threading.Event(), threading.Semaphore(0)
    app = Flask("busy")
    app.get("/slow")(lambda: (entered.release(), release.wait(10), "done")[2])
    with guarded_server(app, max_connections=busy) as (_, port):
        try:
            workers = [threading.Thread(target=requests.get, args=(f"http://127.0.0.1:{port}/slow",),
                                        kwargs={"timeout": 10}) for _ in range(busy)]
            for worker in workers:
                worker.start()
            # Every connection busy with a request, its head read: one still sending its head would be
            # closed to make room instead (the test above), which a loaded machine can make happen.
            for _ in range(busy):
                assert entered.acquire(timeout=10), "the busy requests to reach the app"
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{port}/slow", timeout=5)
        finally:
            release.set()


def test_a_port_taken_by_another_process_is_an_oserror_for_the_caller_to_name():
    """``python -m master`` and ``python -m slave`` turn it into "API_PORT: cannot listen on ..." and exit 2."""
    import socket

    from flask import Flask

    from common.serving import make_guarded_server
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(OSError) as raised:
            make_guarded_server("127.0.0.1", taken.getsockname()[1], Flask(__name__))
        assert raised.type is not AttributeError and raised.value.errno is not None
    finally:
        taken.close()
