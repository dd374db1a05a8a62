"""The built-in server keeps an HTTP/1.1 connection alive for the next request, and never reads into it."""

import contextlib
import socket
import ssl

from flask import Flask, request

from common import serving
from tests.support.guarded import guarded_server
from tests.support.tls import CertificateAuthority


def app():
    app = Flask("keep-alive")
    app.add_url_rule("/read", "read", lambda: f"read {len(request.get_data())}", methods=["POST"])
    app.add_url_rule("/unread", "unread", lambda: ("refused unread", 401), methods=["POST"])
    app.add_url_rule("/nodelay", "nodelay", lambda: str(request.environ["werkzeug.socket"].getsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY)))
    return app


@contextlib.contextmanager
def serving_on_a_port(ssl_context=None, **limits):
    with guarded_server(app(), ssl_context=ssl_context, **limits) as (_, port):
        yield port


def post(path, body, version="HTTP/1.1"):
    return (f"POST {path} {version}\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


class Answers:
    """Reads HTTP answers (with a Content-Length) off one socket."""

    def __init__(self, connection):
        self.connection = connection
        self.buffer = b""

    def _fill(self):
        data = self.connection.recv(65536)
        self.buffer += data
        return bool(data)

    def next(self):
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"the connection closed before an answer; got {self.buffer!r}"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines[1:])}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            assert self._fill(), "the connection closed mid-answer"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), headers, body.decode()

    def closed(self):
        return not self.buffer and not self._fill()


def connect(port):
    connection = socket.create_connection(("127.0.0.1", port))
    connection.settimeout(10)
    return connection


def test_one_connection_carries_request_after_request_whether_or_not_the_application_read_the_body():
    with serving_on_a_port() as port, connect(port) as connection:
        answers = Answers(connection)
        for path, body, expected in [("/read", b"a" * 100, (200, "read 100")),
                                     ("/unread", b"b" * 5000, (401, "refused unread")),
                                     ("/read", b"c" * 10, (200, "read 10")),
                                     ("/missing", b"d" * 300, (404, None)),
                                     ("/read", b"", (200, "read 0"))]:
            connection.sendall(post(path, body))
            status, headers, text = answers.next()
            assert status == expected[0], (path, text)
            if expected[1] is not None:
                assert text == expected[1]
            assert headers.get("connection", "").lower() != "close", path


def test_a_request_sent_right_behind_an_unread_body_is_answered_not_swallowed():
    """werkzeug reads whatever is on the socket after an answer; the body ends that reading."""
    with serving_on_a_port() as port, connect(port) as connection:
        connection.sendall(post("/unread", b"x" * 2000) + post("/read", b"second") + post("/read", b"third!!"))
        answers = Answers(connection)
        assert answers.next()[0] == 401
        assert answers.next()[2] == "read 6"
        assert answers.next()[2] == "read 7"


def test_a_body_past_the_keep_alive_limit_closes_its_connection_after_the_answer(monkeypatch):
    monkeypatch.setattr(serving, "KEEP_ALIVE_BODY", 1000)
    with serving_on_a_port() as port, connect(port) as connection:
        connection.sendall(post("/read", b"y" * 1001))
        answers = Answers(connection)
        status, headers, text = answers.next()
        assert (status, text, headers["connection"].lower()) == (200, "read 1001", "close")
        assert answers.closed()


def test_an_http_1_0_request_or_one_asking_to_close_gets_its_connection_closed():
    with serving_on_a_port() as port:
        for request_bytes in (post("/read", b"z", version="HTTP/1.0"),
                              b"POST /read HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1\r\n\r\nz"):
            with connect(port) as connection:
                connection.sendall(request_bytes)
                answers = Answers(connection)
                assert answers.next()[2] == "read 1"
                assert answers.closed()


def test_a_kept_connection_is_closed_when_it_idles_past_keep_alive_idle_not_the_longer_head_timeout():
    """Clients send every 10 s (progress) or 15 s (heartbeats): a server closing after as long would close
    just as some of them send. Closed well before, the client sees it and connects again."""
    with serving_on_a_port(head_timeout=30, keep_alive_idle=0.3) as port, connect(port) as connection:
        connection.sendall(post("/read", b"1"))
        answers = Answers(connection)
        assert answers.next()[2] == "read 1"
        assert answers.closed(), "an idle connection must not hold a thread for ever"


def test_the_default_keep_alive_idle_is_shorter_than_the_clients_cadences():
    import settings
    assert serving.KEEP_ALIVE_IDLE <= min(settings.PROGRESS_INTERVAL, settings.HEARTBEAT_INTERVAL) / 2


def test_answers_go_out_without_waiting_for_the_clients_acknowledgement():
    """TCP_NODELAY: an answer's head and body are two writes, and on a kept-alive connection Nagle's
    algorithm would hold the body back until the client's delayed ACK (40 ms on Linux)."""
    with serving_on_a_port() as port, connect(port) as connection:
        connection.sendall(b"GET /nodelay HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Answers(connection).next()[2] == "1"


def test_one_tls_connection_carries_several_requests_after_one_handshake(tmp_path):
    authority = CertificateAuthority(tmp_path / "ca", "ca")
    cert, key = authority.issue("server")
    context = ssl.create_default_context(cafile=str(authority.cert))
    with serving_on_a_port(ssl_context=(str(cert), str(key))) as port, connect(port) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        answers = Answers(tls)
        for body in (b"first", b"second!", b""):
            tls.sendall(post("/read", body))
            assert answers.next()[2] == f"read {len(body)}"
