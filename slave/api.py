"""The slave's API: signed orders and their records for the master, liveness for everyone.

Errors are ``{"error", "message", "fields"}`` with a 4xx for every bad request, as on the master.
"""

import ipaddress
import logging

from flask import Blueprint, current_app, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from common.answers import DuplicateKey, loads_strict
from common.errors import (BadRequest, ConfigError, MirrorSyncError, NotEnrolled, NotFound, Unauthorized,
                           UnsupportedMediaType, ValidationFailed, describe_field_errors, http_error_message)
from common.signing import SignatureError, verify_signature
from common.validation import validate_slug
from common.wire import cancel_schema, order_schema
from slave.syncs import public_record

log = logging.getLogger(__name__)

blp = Blueprint("slave_api", __name__)


def _services():
    return current_app.extensions["mirrorsync_slave"]


def require_master_signature():
    """Check that the master signed this request with this slave's key.

    Raises NotEnrolled before enrollment (there is no key yet), Unauthorized otherwise.
    """
    services = _services()
    try:
        credentials = services.credentials.load()
    except ConfigError:
        credentials = None
    if credentials is None:
        raise NotEnrolled("This slave is not enrolled with the master yet.")

    def secret_for(key_id):
        return credentials.signing_key if key_id == credentials.name else None

    # The master signs the URL's whole path; behind a proxy that mounts the app under a
    # prefix, that prefix is in script_root.
    path = request.script_root + request.full_path.rstrip("?")
    try:
        verify_signature(request.headers, request.method, path, request.get_data(cache=True), secret_for,
                         services.nonces.remember, max_age=services.settings["SIGNATURE_MAX_AGE"])
    except SignatureError as error:
        log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote_addr, error)
        raise Unauthorized(f"Signature refused: {error}.") from None


def load_order(schema=order_schema):
    """The order (or cancel) in the request body; raises UnsupportedMediaType, BadRequest, ValidationFailed."""
    if not request.is_json:
        raise UnsupportedMediaType("Send a JSON object with 'Content-Type: application/json'.",
                                   {"json": ["Send a JSON object with 'Content-Type: application/json'."]})
    raw = request.get_data(cache=True)
    try:
        body = loads_strict(raw)
    except DuplicateKey as error:
        raise BadRequest(f"The request body is not valid JSON: {error}.",
                         {"json": [f"The request body is not valid JSON: {error}."]}) from None
    except (ValueError, RecursionError):
        raise BadRequest("The request body is not valid JSON.",
                         {"json": ["The request body is not valid JSON."]}) from None
    if not isinstance(body, dict):
        raise ValidationFailed("Invalid request: the body must be a JSON object.",
                               {"body": ["Must be a JSON object."]})
    try:
        return schema.load(_bracket_bare_ipv6(body))
    except ValidationError as error:
        raise ValidationFailed(f"Invalid request: {describe_field_errors(error.messages)}.", error.messages) from None


def _check_slug(name, value):
    """Raises ValidationFailed naming ``name``."""
    try:
        validate_slug(value)
    except ValidationError as error:
        raise ValidationFailed(f"Invalid request: {name}: {error.messages[0].rstrip('.')}.",
                               {name: error.messages}) from None


def _bracket_bare_ipv6(body):
    # A master with RSYNCD_ADDRESS = "::1" sends the address bare; rsync URLs need brackets.
    host = body.get("rsyncd_host")
    if isinstance(host, str) and ":" in host and not host.startswith("[") and "%" not in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return body
        return {**body, "rsyncd_host": f"[{host}]"}
    return body


@blp.post("/api/v1/syncs")
def order_sync():
    """An order from the master: 202 at once, the pull happens in the background."""
    require_master_signature()
    record = _services().worker.accept(load_order())
    return jsonify(run_id=record["run_id"], project=record["project"], state=record["state"]), 202


@blp.get("/api/v1/syncs/<int:run_id>")
def get_sync(run_id):
    """What this slave did for run ``run_id`` (of ``?project=``; without it, its newest order of that id)."""
    require_master_signature()
    project = request.args.get("project")
    if project is not None:
        _check_slug("project", project)
    record = _services().worker.records.get(run_id, project)
    if record is None:
        of = f" of {project!r}" if project else ""
        raise NotFound(f"This slave has no record of run {run_id}{of}.")
    return jsonify(public_record(record))


@blp.post("/api/v1/syncs/<int:run_id>/cancel")
def cancel_sync(run_id):
    """The master cancelled the run: stop pulling it (202), or 404 when this slave never had the order."""
    require_master_signature()
    record = _services().worker.cancel(load_order(cancel_schema)["project"], run_id)
    return jsonify(run_id=record["run_id"], project=record["project"], state=record["state"]), 202


@blp.get("/healthz")
def healthz():
    services = _services()
    try:
        credentials = services.credentials.load()
    except ConfigError:
        credentials = None
    name = credentials.name if credentials else services.settings["SLAVE_NAME"]
    return jsonify(status="ok", enrolled=credentials is not None, name=name)


def handle_domain_error(error):
    return jsonify(error.to_dict()), error.status


def handle_http_error(error):
    code = (error.name or "error").lower().replace(" ", "_")
    message = http_error_message(error, current_app.config.get("MAX_CONTENT_LENGTH"))
    return jsonify(error=code, message=message, fields={}), error.code


def handle_unexpected_error(error):
    log.exception("unhandled error")
    return jsonify(error="internal_error", message="The slave hit an internal error; see its log.",
                   fields={}), 500


def register_api(app):
    app.register_blueprint(blp)
    app.register_error_handler(MirrorSyncError, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected_error)
