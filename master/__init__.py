"""The master: API, scheduler and executor over one database.

The app is only ever built by ``create_app(test_config=None)``.
"""

import logging
import os
import sys

from common.dependencies import require_installed

require_installed()

from flask import Flask, jsonify
from werkzeug.middleware.proxy_fix import ProxyFix

from common import texts
from common.clock import SystemClock
from common.config import load_settings, tls_verify
from common.errors import ConfigError
from common.headers import install_security_headers
from common.processes import ProgramRunner
from common.rsync import RsyncRunner, check_rsync_version
from master import schema
from master.db import db, init_database
from master.paths import default_database_url, state_dir
from master.seams import Seams
from master.slave_client import SlaveClient
from master.wakeups import Wakeups

log = logging.getLogger(__name__)


def configure_logging(level):
    texts.configure_logging(level)
    # APScheduler logs every job run at INFO; ours are logged by the services.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def create_app(test_config=None):
    """Build the master app; raises ConfigError naming a bad setting or a database that is behind."""
    try:
        return _build_app(dict(test_config or {}))
    except ConfigError as error:
        if "gunicorn.arbiter" in sys.modules:
            # gunicorn prints this kind of error as one line and stops, instead of a traceback
            # and a worker respawned over and over.
            from gunicorn.errors import AppImportError
            raise AppImportError(f"mirror-sync master: {error}") from None
        raise


def _run_ids_after_disk(data_dir):
    """A database restored from a backup numbers new runs after what DATA_DIR holds (master.runids),
    from whichever process starts first. One that cannot write now leaves it to the scheduler's start."""
    from sqlalchemy.exc import DBAPIError
    from master import runids
    try:
        runids.next_after_disk(data_dir)
    except DBAPIError as error:
        db.session.rollback()
        log.warning("cannot check the next run id against DATA_DIR now (%s); the scheduler does at its start",
                    error.orig)


def _build_app(test_config):
    clock = test_config.pop("CLOCK", None) or SystemClock()
    runner = test_config.pop("RSYNC_RUNNER", None)
    slave_client = test_config.pop("SLAVE_CLIENT", None)
    program_runner = test_config.pop("PROGRAM_RUNNER", None)
    # Admin commands act on an existing database only: a typo in DATA_DIR must not make a new one.
    create_database = test_config.pop("CREATE_DATABASE", True)
    settings = load_settings("master", test_config)
    if runner is None:
        check_rsync_version(settings["RSYNC_BINARY"])
    configure_logging(settings["LOG_LEVEL"])

    database_url = settings["DATABASE_URL"] or default_database_url(settings["DATA_DIR"])
    if not create_database:
        schema.require_existing(database_url)
    os.makedirs(state_dir(settings["DATA_DIR"]), mode=0o700, exist_ok=True)
    app = Flask(__name__)
    app.config.update(settings)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        API_TITLE="mirror-sync master",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        JSON_SORT_KEYS=False,
    )
    app.extensions["mirrorsync"] = Seams(
        clock=clock, rsync_runner=runner or RsyncRunner(binary=settings["RSYNC_BINARY"]),
        slave_client=slave_client or SlaveClient(workers=settings["DISPATCH_WORKERS"],
                                                 timeout=settings["DISPATCH_TIMEOUT"],
                                                 verify=tls_verify(settings)),
        wakeups=Wakeups(settings["DATA_DIR"]),
        program_runner=program_runner or ProgramRunner())

    if settings["TRUSTED_PROXIES"]:
        hops = settings["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    db.init_app(app)
    install_security_headers(app)
    from master.api import register_api
    register_api(app)
    from master.services import readmodel
    readmodel.install(app)

    @app.errorhandler(Exception)
    def internal_error(error):
        db.session.rollback()
        from master.services.transactions import cannot_write, lost_a_race
        if cannot_write(error) or lost_a_race(error):
            log.warning("answered 503: the database cannot take a write now: %s", getattr(error, "orig", error))
            response = jsonify(error="database_unavailable", fields={}, message=(
                "The master's database cannot be written right now (the disk may be full); reads still "
                "work, try this again later."))
            response.headers["Retry-After"] = "5"
            return response, 503
        log.exception("unhandled error")
        return jsonify(error="internal_error", message="The master hit an internal error; see its log.",
                       fields={}), 500

    with app.app_context():
        init_database(app, create=create_database)
        _run_ids_after_disk(settings["DATA_DIR"])
        if settings["ADMIN_TOKEN"]:
            from master.services.tokens import seed_admin_token
            seed_admin_token(settings["ADMIN_TOKEN"])
    return app
