"""What master and slave send each other: one schema per message, unknown fields refused."""

import re

from marshmallow import Schema, ValidationError, fields, validate

from common.validation import validate_host, validate_slug

SLAVE_REPORT_STATES = ("syncing", "success", "failed")
# How a slave publishes a new tree: rsync's --delay-updates in place, or a
# snapshot built beside the old one and swapped in by renaming one symlink.
PUBLISH_MODES = ("delay", "atomic")


def validate_http_url(value):
    if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?", value or "") \
            or len(value) > 512:
        raise ValidationError("Must be an http:// or https:// URL of this host, such as http://mirror1:7000.")


class StatsSchema(Schema):
    files_total = fields.Integer(allow_none=True)
    files_created = fields.Integer(allow_none=True)
    files_deleted = fields.Integer(allow_none=True)
    files_transferred = fields.Integer(allow_none=True)
    total_size = fields.Integer(allow_none=True)
    bytes_sent = fields.Integer(allow_none=True)
    bytes_received = fields.Integer(allow_none=True)


class RegistrationSchema(Schema):
    """Slave -> master, with the join token as bearer token."""
    name = fields.String(required=True, validate=validate_slug)
    url = fields.String(required=True, validate=validate_http_url)


class CredentialsSchema(Schema):
    """Master -> slave, once, in answer to a registration."""
    name = fields.String(required=True)
    signing_key = fields.String(required=True)
    rsync_user = fields.String(required=True)
    rsync_password = fields.String(required=True)


class OrderSchema(Schema):
    """Master -> slave: pull this run's tree of ``project`` from the master's rsync daemon."""
    run_id = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    project = fields.String(required=True, validate=validate_slug)
    rsyncd_host = fields.String(required=True, validate=validate_host)
    rsyncd_port = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=65535))
    timeout = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=30 * 86400))
    catchup = fields.Boolean(load_default=False)
    publish = fields.String(load_default="delay", validate=validate.OneOf(PUBLISH_MODES))


class ReportSchema(Schema):
    """Slave -> master: what became of one order."""
    run_id = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    project = fields.String(required=True, validate=validate_slug)
    state = fields.String(required=True, validate=validate.OneOf(SLAVE_REPORT_STATES))
    started_at = fields.DateTime(allow_none=True, load_default=None)
    finished_at = fields.DateTime(allow_none=True, load_default=None)
    exit_code = fields.Integer(allow_none=True, load_default=None)
    error = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=4000))
    warning = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=4000))
    stats = fields.Nested(StatsSchema, allow_none=True, load_default=None)


class HeartbeatSchema(Schema):
    """Slave -> master, every HEARTBEAT_INTERVAL: I am alive, reachable at ``url``."""
    url = fields.String(required=True, validate=validate_http_url)
    syncing = fields.List(fields.String(validate=validate_slug), load_default=list,
                          validate=validate.Length(max=10000))


registration_schema = RegistrationSchema()
credentials_schema = CredentialsSchema()
order_schema = OrderSchema()
report_schema = ReportSchema()
heartbeat_schema = HeartbeatSchema()
