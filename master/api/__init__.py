"""The master's REST API v1: one blueprint per area, one error shape for all of them."""

import logging

from flask import jsonify
from flask_smorest import Api, Blueprint
from marshmallow import Schema, fields
from webargs.flaskparser import FlaskParser, abort, is_json_request
from werkzeug.routing import BaseConverter, ValidationError

from common.answers import DuplicateKey, loads_strict
from common.errors import MirrorSyncError
from common.wire import MAX_ID

log = logging.getLogger(__name__)


class ErrorSchema(Schema):
    error = fields.String(metadata={"description": "short error code"})
    message = fields.String(metadata={"description": "one sentence saying what went wrong"})
    fields_ = fields.Dict(data_key="fields", metadata={"description": "messages per request field"})


def error_body(code, message, field_errors=None):
    return {"error": code, "message": message, "fields": field_errors or {}}


def _error_code(error):
    return (error.name or "error").lower().replace(" ", "_")


def _describe(field_errors):
    """First field and message, for the one-sentence summary."""
    for field, messages in field_errors.items():
        while isinstance(messages, dict) and messages:
            key, messages = next(iter(messages.items()))
            field = f"{field}[{key}]" if str(key).isdigit() else f"{field}.{key}"
        if isinstance(messages, list) and messages:
            messages = messages[0]
        return f"{field}: {str(messages).rstrip('.')}"
    return "the request is not valid"


class JsonBodyParser(FlaskParser):
    """Like webargs' parser, but a body that is not a JSON document is refused, never ignored."""

    def load_json(self, req, schema):
        if not is_json_request(req):
            abort(415, messages={"json": ["Send a JSON object with 'Content-Type: application/json'."]})
        body = req.get_data(cache=True)
        if not body.strip():
            abort(400, messages={"json": ["The request body is empty; send a JSON object."]})
        try:
            return loads_strict(body)
        except DuplicateKey as error:
            abort(400, messages={"json": [f"The request body is not valid JSON: {error}."]})
        except (ValueError, RecursionError, UnicodeDecodeError):
            abort(400, messages={"json": ["The request body is not valid JSON."]})


class ApiBlueprint(Blueprint):
    ARGUMENTS_PARSER = JsonBodyParser()


class MirrorSyncApi(Api):
    """flask-smorest's Api with our error shape instead of its own."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error):
        data = getattr(error, "data", None) or {}
        messages = data.get("messages") or data.get("errors")
        if messages:
            # webargs groups messages by location (json, query, ...); callers want field names.
            field_errors = {}
            for location_errors in messages.values():
                if isinstance(location_errors, dict):
                    field_errors.update(location_errors)
                else:
                    field_errors.setdefault("_schema", []).extend(location_errors)
            field_errors = {("body" if k == "_schema" else k): v for k, v in field_errors.items()}
            code = "validation_error" if error.code == 422 else _error_code(error)
            body = error_body(code, f"Invalid request: {_describe(field_errors)}.", field_errors)
            return jsonify(body), error.code
        return jsonify(error_body(_error_code(error), error.description or error.name)), error.code


api = MirrorSyncApi()


def handle_domain_error(error):
    response = jsonify(error.to_dict())
    if getattr(error, "retry_after", None):
        response.headers["Retry-After"] = str(error.retry_after)
    return response, error.status


class IdConverter(BaseConverter):
    """``<id:run_id>``: ASCII digits that fit a 64-bit id (werkzeug's int also takes "１")."""

    regex = r"[0-9]{1,19}"

    def to_python(self, value):
        number = int(value)
        if number > MAX_ID:
            raise ValidationError()  # no such route: a 404
        return number

    def to_url(self, value):
        return str(int(value))


def register_api(app):
    from master.api import docs, feeds, health, mirrors, pages, projects, push, runs, slaves, status, tokens

    app.url_map.converters["id"] = IdConverter
    app.config.update(OPENAPI_SWAGGER_UI_URL=docs.ASSETS_URL, OPENAPI_SWAGGER_UI_CONFIG=docs.SWAGGER_UI_CONFIG)
    api.init_app(app)
    api.register_converter(IdConverter, lambda converter: {"type": "integer", "minimum": 0,
                                                           "maximum": MAX_ID})
    api.spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    app.register_error_handler(MirrorSyncError, handle_domain_error)
    for blueprint in (projects.blp, push.blp, runs.blp, status.blp, slaves.channel, slaves.blp, tokens.blp):
        api.register_blueprint(blueprint, url_prefix="/api/v1")
    app.register_blueprint(health.blp)
    app.register_blueprint(feeds.blp)
    app.register_blueprint(pages.blp)
    app.register_blueprint(mirrors.blp)
    app.register_blueprint(docs.blp)
