"""The master's REST API v1: one blueprint per area, one error shape for all of them."""

import logging

from flask import current_app, jsonify, request
from flask_smorest import Api, Blueprint
from marshmallow import Schema, fields
from webargs.flaskparser import FlaskParser, abort, is_json_request
from werkzeug.exceptions import NotFound
from werkzeug.routing import BaseConverter

from common.answers import DuplicateKey, loads_strict
from common.errors import MirrorSyncError, describe_field_errors, http_error_message
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

    # A query schema refuses unknown names as a body schema does: a mistyped ``?limt=5`` is an answer, not
    # a silent default. A schema may still say otherwise (``Meta.unknown``).
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": None, "querystring": None}


class ApiBlueprint(Blueprint):
    ARGUMENTS_PARSER = JsonBodyParser()


def reads_its_own_input(view):
    """Marks a view that takes whatever query and body its caller sends (an upstream's webhook, a
    public feed behind cache-busting parameters): ``refuse_unread_input`` leaves it alone."""
    view.reads_its_own_input = True
    return view


def _declared_parameters():
    """The view's ``blp.arguments``, as flask-smorest notes them; None for a view that reads its own."""
    view = current_app.view_functions.get(request.endpoint)
    handler = getattr(getattr(view, "view_class", None), request.method.lower(), view)
    if handler is None or getattr(handler, "reads_its_own_input", False):
        return None
    return getattr(handler, "_apidoc", {}).get("arguments", {}).get("parameters", [])


def _field_names(schema):
    schema = schema() if isinstance(schema, type) else schema
    return [field.data_key or name for name, field in schema.fields.items()]


def refuse_unread_input():
    """before_request, after authentication: a body or query parameters sent to an endpoint that reads
    none are refused, so that ``{"force": true}`` in a body, say, is never silently dropped."""
    parameters = _declared_parameters()
    if parameters is None:
        return
    by_location = {parameter["in"]: parameter["schema"] for parameter in parameters}
    if "json" not in by_location and request.get_data(cache=True).strip():
        query = by_location.get("query")
        where = ("its options go in the query string: " + ", ".join(f"?{name}=" for name in _field_names(query))
                 if query is not None else "send none")
        abort(400, messages={"json": [f"This request takes no body; {where}."]})
    if "query" not in by_location and request.args:
        abort(422, messages={"query": {name: ["Unknown field."] for name in request.args}})  # as a schema's


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
            body = error_body(code, f"Invalid request: {describe_field_errors(field_errors)}.", field_errors)
            return jsonify(body), error.code
        message = http_error_message(error, current_app.config.get("MAX_CONTENT_LENGTH"))
        return jsonify(error_body(_error_code(error), message)), error.code


api = MirrorSyncApi()


def handle_domain_error(error):
    response = jsonify(error.to_dict())
    if getattr(error, "retry_after", None):
        response.headers["Retry-After"] = str(error.retry_after)
    return response, error.status


class IdConverter(BaseConverter):
    """``<id:run_id>``: ASCII digits (werkzeug's int also takes "１"); one beyond a 64-bit id is a 404 that says so."""

    regex = r"[0-9]{1,40}"

    def to_python(self, value):
        number = int(value)
        if number > MAX_ID:
            raise NotFound(f"{value} is not an id here: ids go up to {MAX_ID}.")
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
        app.before_request_funcs.setdefault(blueprint.name, []).append(refuse_unread_input)  # after auth
    app.register_blueprint(health.blp)
    app.register_blueprint(feeds.blp)
    app.register_blueprint(pages.blp)
    app.register_blueprint(mirrors.blp)
    app.register_blueprint(docs.blp)
