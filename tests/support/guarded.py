"""The built-in API server (``common.serving``) on a loopback port the kernel picks, serving in a thread."""

import contextlib
import threading

from common.serving import make_guarded_server


@contextlib.contextmanager
def guarded_server(app, ssl_context=None, **limits):
    """Serve ``app``; yields (server, port), and shuts the server down at the end."""
    server = make_guarded_server("127.0.0.1", 0, app, ssl_context=ssl_context, **limits)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, server.socket.getsockname()[1]
    finally:
        server.shutdown()
        server.server_close()
