"""The built-in HTTP(S) server of ``python -m master`` and ``python -m slave``, safe against slow clients.

werkzeug's threaded server gives every connection a thread for as long as the
client likes, so idle or half-sent requests (slowloris) stop the API. Here:

- a request's head (TLS handshake, request line and headers) must arrive
  within ``head_timeout`` seconds, or the connection is closed;
- every read waits at most ``idle_timeout`` seconds (a body that stalls, a
  keep-alive connection that idles);
- at most ``max_connections`` connections are open at once; when they all are,
  the oldest one still waiting for its head is closed to make room (idle and
  half-sent connections never starve a client that sends its request), and
  only when every connection is busy with a real request is a new one refused;
- an HTTP/1.1 connection is kept alive for the next request (werkzeug's own
  handler closes every one): the master's orders to a slave and a slave's reports
  to the master skip a TCP and TLS handshake each. A connection is kept
  ``keep_alive_idle`` seconds after an answer (5 s, as Apache's KeepAliveTimeout):
  shorter than the clients' own cadences (a slave's progress reports every 10 s,
  heartbeats every 15 s), so that a client never sends on a connection just as the
  server closes it, it finds the connection closed long before and opens another.
  Only a request whose body is framed by its
  Content-Length (or has none) and is at most ``KEEP_ALIVE_BODY`` bytes keeps
  its connection: what the application did not read of it is read and dropped
  before the next request, and nothing past it ever is.
"""

import errno
import io
import logging
import os
import socket
import threading
import time

from werkzeug.serving import (ThreadedWSGIServer, WSGIRequestHandler, get_sockaddr, load_ssl_context,
                              select_address_family)

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256
HEAD_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0
KEEP_ALIVE_IDLE = 5.0
KEEP_ALIVE_BODY = 1 << 20   # a longer body closes its connection after the answer, as werkzeug does
_WATCH_INTERVAL = 0.25


class _Body(io.RawIOBase):
    """The request body: the first ``length`` bytes of the connection, then end of file, so neither the
    application nor werkzeug's drain after the answer reads into the next request."""

    def __init__(self, stream, length):
        super().__init__()
        self._stream = stream
        self.remaining = length
        self.cut_short = False

    def readable(self):
        return True

    def read(self, size=-1):
        size = self.remaining if size is None or size < 0 else min(size, self.remaining)
        if size <= 0:
            return b""
        data = self._stream.read(size)
        self.remaining -= len(data)
        if len(data) < size:
            self.remaining = 0   # the client closed mid-body: nothing is left to keep alive
            self.cut_short = True
        return data

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def drain(self):
        """Read what is left of the body; returns whether it all came."""
        while self.remaining and self.read(min(self.remaining, 1 << 16)):
            pass
        return not self.cut_short


class _GuardedHandler(WSGIRequestHandler):
    _keep_alive = False   # whether the connection stays open after the answer being made
    def setup(self):
        self.timeout = self.server.idle_timeout  # StreamRequestHandler applies it to the socket
        super().setup()

    def handle(self):
        try:
            if hasattr(self.connection, "do_handshake"):
                self.connection.do_handshake()
        except OSError:
            return  # a TLS client that never finished its handshake, or the watchdog closed it
        super().handle()

    def handle_one_request(self):
        self.server.waiting_for_head(self.connection, kept=self._keep_alive)
        super().handle_one_request()

    def parse_request(self):
        parsed = super().parse_request()
        self.server.head_received(self.connection)
        return parsed

    def _body_length(self):
        """The request body's length when the connection may be kept alive after it, else None."""
        if self.close_connection or self.request_version != "HTTP/1.1" or "Transfer-Encoding" in self.headers \
                or self.headers.get("Expect"):
            return None
        length = self.headers.get("Content-Length", "0").strip()
        if not length.isdigit() or int(length) > KEEP_ALIVE_BODY:
            return None
        return int(length)

    def run_wsgi(self):
        length = self._body_length()
        self._keep_alive = length is not None
        if not self._keep_alive:
            return super().run_wsgi()
        connection, body = self.rfile, _Body(self.rfile, length)
        self.rfile = body   # werkzeug's environ takes it as wsgi.input, and its drain reads it to its end
        try:
            super().run_wsgi()
            if not self.close_connection and not body.drain():
                self.close_connection = True
        finally:
            self.rfile = connection

    def send_header(self, keyword, value):
        # werkzeug sends "Connection: close" with every answer (and http.server then closes).
        if keyword.lower() == "connection" and value.lower() == "close" and self._keep_alive:
            return
        super().send_header(keyword, value)

    def log_request(self, *args, **kwargs):
        pass  # one line per request floods the log; errors are still logged


class GuardedWSGIServer(ThreadedWSGIServer):
    daemon_threads = True

    def __init__(self, host, port, app, ssl_context=None, max_connections=MAX_CONNECTIONS,
                 head_timeout=HEAD_TIMEOUT, idle_timeout=IDLE_TIMEOUT, keep_alive_idle=KEEP_ALIVE_IDLE):
        # Set before the socket is bound: a bind that fails closes the server from inside
        # werkzeug's __init__, and server_close must find them (the caller then gets the OSError).
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.keep_alive_idle = keep_alive_idle
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._open = set()
        self._head_deadlines = {}  # connection -> monotonic deadline, while its head is awaited
        self._stopping = threading.Event()
        super().__init__(host, port, app, handler=_GuardedHandler)
        # The TLS handshake happens in the connection's own thread, under the head deadline,
        # never in the accepting thread (werkzeug's own wrapping would block it there).
        self.ssl_context = load_ssl_context(*ssl_context) if isinstance(ssl_context, tuple) else ssl_context
        self._watchdog = threading.Thread(target=self._watch, name="api-watchdog", daemon=True)
        self._watchdog.start()

    def get_request(self):
        connection, address = self.socket.accept()
        if connection.family in (socket.AF_INET, socket.AF_INET6):
            # An answer's head and body are two writes: on a kept-alive connection Nagle's algorithm would
            # hold the body until the client's delayed ACK of the head, 40 ms later.
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            connection = self.ssl_context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def verify_request(self, request, client_address):
        with self._lock:
            if len(self._open) >= self.max_connections:
                victim = min(self._head_deadlines, key=self._head_deadlines.get, default=None)
                if victim is None:
                    log.warning("API: %d connections busy with requests; refusing one from %s",
                                len(self._open), client_address[0])
                    return False
                self._drop(victim)
            self._open.add(request)
            self._head_deadlines[request] = time.monotonic() + self.head_timeout
        return True

    def waiting_for_head(self, connection, kept=False):
        """The connection waits for a request's head: its first, or (``kept``) the next one after an answer."""
        timeout = min(self.keep_alive_idle, self.head_timeout) if kept else self.head_timeout
        with self._lock:
            if connection in self._open:
                self._head_deadlines[connection] = time.monotonic() + timeout

    def head_received(self, connection):
        with self._lock:
            self._head_deadlines.pop(connection, None)

    def shutdown_request(self, request):
        with self._lock:
            self._open.discard(request)
            self._head_deadlines.pop(request, None)
        super().shutdown_request(request)

    def _drop(self, connection):
        """Close a connection from another thread; its handler then ends. Call with the lock held."""
        self._head_deadlines.pop(connection, None)
        self._open.discard(connection)
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _watch(self):
        while not self._stopping.wait(_WATCH_INTERVAL):
            now = time.monotonic()
            with self._lock:
                for connection in [c for c, deadline in self._head_deadlines.items() if deadline <= now]:
                    self._drop(connection)

    def server_close(self):
        self._stopping.set()
        super().server_close()


def make_guarded_server(host, port, app, ssl_context=None, **limits):
    """The API server for ``app`` on host:port; ``ssl_context`` is a (cert, key) pair or None.

    Raises OSError when the address cannot be bound (werkzeug itself would print its own advice
    and exit, so the address is tried first).
    """
    family = select_address_family(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(get_sockaddr(host, int(port), family))
    try:
        return GuardedWSGIServer(host, port, app, ssl_context=ssl_context, **limits)
    except SystemExit:  # taken in the instant between the two
        raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)) from None
