"""A real HTTP server on loopback that answers with whatever a test scripts: the hostile other side."""

import contextlib
import http.server
import threading
import time


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self):
        server = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        server.requests.append((self.command, self.path, dict(self.headers), body))
        status, headers, chunks = server.script(self)
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            # One answer per connection: a client never reuses one this server is closing.
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
                server.sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            server.cut_off = True
        self.close_connection = True

    do_GET = do_POST = _answer


class ScriptedServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, script):
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.script = script
        self.requests = []
        self.sent = 0
        self.cut_off = False

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextlib.contextmanager
def scripted_server(script):
    """``script(handler)`` returns (status, headers dict, iterable of body chunks)."""
    server = ScriptedServer(script)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def json_answer(status, body, extra_headers=None):
    data = body if isinstance(body, bytes) else body.encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **(extra_headers or {})}
    return lambda handler: (status, headers, [data])


def endless(status, chunk=b"A" * 65536, total=256 * 1024 * 1024):
    """An answer of ``total`` bytes with no Content-Length, sent as fast as the reader takes it."""
    def script(handler):
        return status, {"Content-Type": "application/json"}, (chunk for _ in range(total // len(chunk)))
    return script


def dripping(status, pause=0.2, count=100):
    """One byte every ``pause`` seconds: each read is quick, the whole answer never ends."""
    def chunks():
        for _ in range(count):
            time.sleep(pause)
            yield b" "
    return lambda handler: (status, {"Content-Type": "application/json"}, chunks())
