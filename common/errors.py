"""Domain errors raised by services and mapped to the JSON error shape by the apps.

Every error a user can cause is one of these, so it becomes a 4xx with
``{"error": code, "message": sentence, "fields": {...}}`` and never a traceback.
"""


def describe_field_errors(field_errors):
    """marshmallow's messages, nested or not, as "field.sub[2]: first message" for a one-sentence summary.

    A nested schema's own message (its ``_schema`` key: a list or a string where an object belongs) is the
    field's: "hooks: Invalid input type", not "hooks._schema: ..."."""
    for field, messages in field_errors.items():
        while isinstance(messages, dict) and messages:
            key, messages = next(iter(messages.items()))
            if key != "_schema":
                field = f"{field}[{key}]" if str(key).isdigit() else f"{field}.{key}"
        if isinstance(messages, list) and messages:
            messages = messages[0]
        return f"{field}: {str(messages).rstrip('.')}"
    return "the request is not valid"


def http_error_message(error, max_content_length=None):
    """The sentence for one of werkzeug's HTTP errors: a body over the limit says what the limit is."""
    if error.code == 413 and max_content_length:
        return (f"The request body is over the limit of {max_content_length} bytes; "
                "the limit is the MAX_CONTENT_LENGTH setting.")
    return error.description or error.name


class MirrorSyncError(Exception):
    """Base of all domain errors; ``status`` is the HTTP status the API answers with."""

    status = 400
    code = "bad_request"

    def __init__(self, message, fields=None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}

    def to_dict(self):
        return {"error": self.code, "message": self.message, "fields": self.fields}


class ValidationFailed(MirrorSyncError):
    status = 422
    code = "validation_error"


class BadRequest(MirrorSyncError):
    status = 400
    code = "bad_request"


class Unauthorized(MirrorSyncError):
    status = 401
    code = "unauthorized"


class UnknownSlave(Unauthorized):
    """A request signed as a slave the master does not know (deleted, or never enrolled)."""
    code = "unknown_slave"


class Forbidden(MirrorSyncError):
    status = 403
    code = "forbidden"


class NotFound(MirrorSyncError):
    status = 404
    code = "not_found"


class Conflict(MirrorSyncError):
    status = 409
    code = "conflict"


class UnsupportedMediaType(MirrorSyncError):
    status = 415
    code = "unsupported_media_type"


class NotEnrolled(MirrorSyncError):
    """A slave was called before it enrolled with the master."""
    status = 503
    code = "not_enrolled"


class TooManyRequests(MirrorSyncError):
    """Too many failed authentications from one address; ``retry_after`` is in seconds."""
    status = 429
    code = "too_many_requests"

    def __init__(self, message, retry_after):
        super().__init__(message)
        self.retry_after = retry_after


class Gone(MirrorSyncError):
    status = 410
    code = "gone"


class ConfigError(Exception):
    """Bad or missing configuration; the message is one line naming the setting."""
