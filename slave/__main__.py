"""``python -m slave``: enroll with the master if needed, then serve orders until SIGTERM or SIGINT.

A stop cancels running pulls, which are reported as failed ("interrupted: the
slave was stopped"); reports not yet delivered wait on disk for the next start.
"""

import logging
import signal
import sys
import threading


from common.config import tls_context
from common.errors import ConfigError
from common.serving import make_guarded_server
from slave.master_client import EnrollmentRefused

log = logging.getLogger("slave")


def fail(message, status):
    print(f"mirror-sync slave: {message}", file=sys.stderr)
    return status


def main():
    from slave import create_app
    try:
        app = create_app({"START_BACKGROUND": False})
    except ConfigError as error:
        return fail(error, 2)
    services = app.extensions["mirrorsync_slave"]
    config = app.config

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    # The port first: a slave that enrolled and then could not listen would leave the master a
    # slave it orders in vain.
    try:
        server = make_guarded_server(config["API_HOST"], config["API_PORT"], app,
                                     ssl_context=tls_context(config))
    except OSError as error:
        services.stop()
        return fail(f"API_PORT: cannot listen on {config['API_HOST']}:{config['API_PORT']}: {error.strerror}", 2)

    try:
        credentials = services.enroll(stop)
    except EnrollmentRefused as error:
        server.server_close()
        services.stop()
        return fail(f"cannot enroll with the master at {config['MASTER_URL']}: {error}", 1)
    except (ConfigError, OSError) as error:
        server.server_close()
        services.stop()
        return fail(f"cannot keep this slave's identity: {error}", 2)
    if credentials is None:
        server.server_close()
        services.stop()
        return 0

    threading.Thread(target=server.serve_forever, name="api", daemon=True).start()
    services.start_background()
    log.info("slave %s listening on %s://%s:%s", credentials.name, "https" if tls_context(config) else "http",
             config["API_HOST"], config["API_PORT"])

    while not stop.wait(3600):
        pass
    log.info("stopping: no new orders, cancelling running pulls")
    server.shutdown()
    server.server_close()
    services.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
