"""What master and slave send each other: one schema per message, unknown fields refused."""

import re

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from common.validation import validate_host, validate_slug

SLAVE_REPORT_STATES = ("syncing", "success", "failed")
# How a slave publishes a new tree: rsync's --delay-updates in place, or a
# snapshot built beside the old one and swapped in by renaming one symlink.
PUBLISH_MODES = ("delay", "atomic")
# How a slave pulls from the master: a command project's tree is plain rsync there.
SLAVE_METHODS = ("rsync", "two-stage")
STAGE1_PROFILES = ("debian",)


MAX_ID = 2**63 - 1  # what a 64-bit id column holds
DIGEST = r"^sha256:[0-9a-f]{64}$"
_URL = re.compile(r"^(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?(/[A-Za-z0-9._~-]+)*/?$")
# Control characters other than tab and newline: terminal escapes, NUL...
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def validate_http_url(value):
    """An http(s) URL of a host: a valid host name or address, a port 1-65535, a plain path."""
    message = "Must be an http:// or https:// URL of this host, such as http://mirror1:7000."
    match = _URL.match(value or "")
    if not match or len(value) > 512:
        raise ValidationError(message)
    host, port = match.group(2), match.group(3)
    path = value[match.end(3) if port else match.end(2):]
    validate_host(host)
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValidationError("The port must be between 1 and 65535.")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise ValidationError(message)


class StrictBoolean(fields.Boolean):
    """JSON true or false only; marshmallow's Boolean also takes "yes", 1 and "on"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class ReportText(fields.String):
    """Text a slave copied from rsync's output: control characters become U+FFFD, not errors,
    so a file name with an escape sequence in it cannot make a report unacceptable."""

    def _deserialize(self, value, attr, data, **kwargs):
        return _CONTROL.sub("\ufffd", super()._deserialize(value, attr, data, **kwargs))


def _count():
    return fields.Integer(allow_none=True, strict=True, validate=validate.Range(min=0, max=MAX_ID))


class StatsSchema(Schema):
    files_total = _count()
    files_created = _count()
    files_deleted = _count()
    files_transferred = _count()
    total_size = _count()
    bytes_sent = _count()
    bytes_received = _count()


EXCHANGE_FIELDS = ("public_key", "timestamp", "nonce", "proof")


class RegistrationSchema(Schema):
    """Slave -> master: with a key exchange (common/enrollment.py), or with the join token as
    bearer token (older slaves; only over HTTPS or from the master's own host)."""
    name = fields.String(required=True, validate=validate_slug)
    url = fields.String(required=True, validate=validate_http_url)
    public_key = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_-]{43}$", error="Must be an X25519 "
                                                        "public key in unpadded base64url (43 characters)."))
    timestamp = fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_ID))
    nonce = fields.String(validate=validate.Regexp(r"^[0-9a-f]{16,64}$", error="Must be 16-64 hex digits."))
    proof = fields.String(validate=validate.Regexp(r"^[0-9a-f]{64}$", error="Must be 64 hex digits."))

    @validates_schema
    def _exchange_complete(self, data, **kwargs):
        given = [name for name in EXCHANGE_FIELDS if name in data]
        if given and len(given) != len(EXCHANGE_FIELDS):
            missing = [name for name in EXCHANGE_FIELDS if name not in data]
            raise ValidationError({name: ["Required with a key exchange."] for name in missing})


class CredentialsSchema(Schema):
    """Master -> slave, once, in answer to a bearer-token registration."""
    name = fields.String(required=True)
    signing_key = fields.String(required=True)
    rsync_user = fields.String(required=True)
    rsync_password = fields.String(required=True)


class SealedCredentialsSchema(Schema):
    """Master -> slave, once, in answer to a key-exchange registration: nothing secret in clear."""
    name = fields.String(required=True)
    rsync_user = fields.String(required=True)
    public_key = fields.String(required=True)
    sealed_rsync_password = fields.String(required=True)


# An order carries its run's change list when it is at most this many paths long; a longer one
# the slave fetches from the master's module (.changes-<snapshot>/).
INLINE_CHANGES = 1000
_PATH = validate.Length(min=1, max=4096)


class ChangeListSchema(Schema):
    """What changed from snapshot ``base`` (digest ``base_digest``) to the run's: see common/changes.py."""

    error_messages = {"type": "Must be an object (base, base_digest, ...) or null."}
    base = fields.String(required=True, validate=validate.Regexp(r"^[0-9A-Za-z._-]{1,64}$"))
    base_digest = fields.String(required=True, validate=validate.Regexp(DIGEST))
    changed = fields.List(fields.String(validate=_PATH), required=True, validate=validate.Length(max=INLINE_CHANGES))
    deleted = fields.List(fields.String(validate=_PATH), required=True, validate=validate.Length(max=INLINE_CHANGES))
    touch = fields.List(fields.Tuple((fields.String(validate=_PATH), fields.Integer(strict=True))),
                        load_default=list, validate=validate.Length(max=INLINE_CHANGES))


class OrderSchema(Schema):
    """Master -> slave: pull this run's tree of ``project`` from the master's rsync daemon."""
    run_id = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=MAX_ID))
    project = fields.String(required=True, validate=validate_slug)
    rsyncd_host = fields.String(required=True, validate=validate_host)
    rsyncd_port = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=65535))
    timeout = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=30 * 86400))
    catchup = StrictBoolean(load_default=False)
    publish = fields.String(load_default="delay", validate=validate.OneOf(PUBLISH_MODES))
    # Sent only when not the default, so that a slave from before them still takes plain orders.
    method = fields.String(load_default="rsync", validate=validate.OneOf(SLAVE_METHODS))
    stage1_profile = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(STAGE1_PROFILES))
    trace = fields.String(load_default="none", validate=validate.OneOf(("none", "debian")))
    upstream_name = fields.String(load_default=None, allow_none=True, validate=validate_host)
    # The run's snapshot inside the project's module (its run id); None: the module root,
    # as masters that pulled in place served it.
    snapshot = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(r"^[0-9]{1,19}$"))
    # The digest of the run's tree (common/digests.py): what the slave's published tree must match.
    digest = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(DIGEST))
    # A change list from the previous snapshot is in the module (.changes-<snapshot>/): a slave that
    # holds exactly that previous tree transfers and deletes only what it names.
    changes = StrictBoolean(load_default=False)
    # That change list itself, when it is short: the slave then needs no rsync connection to fetch it.
    change_list = fields.Nested(ChangeListSchema, load_default=None, allow_none=True)


class CancelSchema(Schema):
    """Master -> slave: stop pulling ``project`` for this run (the run id is in the path)."""
    project = fields.String(required=True, validate=validate_slug)


class ProgressSchema(Schema):
    """How far a pull has come: rsync's whole-transfer progress (common/rsync.py parse_progress)."""
    bytes = _count()
    percent = fields.Integer(allow_none=True, strict=True, validate=validate.Range(min=0, max=100))
    rate = fields.String(allow_none=True, validate=validate.Regexp(
        r"^[0-9][0-9.,]{0,20}[kMGTPE]?i?B/s$", error="Must be a transfer rate such as 12.34MB/s."))
    eta = fields.String(allow_none=True, validate=validate.Regexp(
        r"^[0-9]{1,6}:[0-9]{2}:[0-9]{2}$", error="Must be a duration such as 0:01:05."))
    files_transferred = _count()
    files_to_check = _count()
    files_total = _count()
    # Two-stage pulls: which stage this is.
    stage = fields.Integer(strict=True, validate=validate.Range(min=1, max=2))
    stages = fields.Integer(strict=True, validate=validate.Range(min=1, max=2))


class ReportSchema(Schema):
    """Slave -> master: what became of one order."""
    run_id = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=MAX_ID))
    project = fields.String(required=True, validate=validate_slug)
    state = fields.String(required=True, validate=validate.OneOf(SLAVE_REPORT_STATES))
    started_at = fields.AwareDateTime(allow_none=True, load_default=None)
    finished_at = fields.AwareDateTime(allow_none=True, load_default=None)
    # rsync's exit code, or minus the signal that killed it.
    exit_code = fields.Integer(allow_none=True, load_default=None, strict=True,
                               validate=validate.Range(min=-64, max=255))
    error = ReportText(allow_none=True, load_default=None, validate=validate.Length(max=4000))
    warning = ReportText(allow_none=True, load_default=None, validate=validate.Length(max=4000))
    stats = fields.Nested(StatsSchema, allow_none=True, load_default=None)
    # The digest of the tree the slave published; slaves of earlier releases send none.
    digest = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(DIGEST))
    # With ``syncing`` while the pull runs (every PROGRESS_INTERVAL); slaves of earlier releases send none.
    progress = fields.Nested(ProgressSchema, load_default=None, allow_none=True)


class EditSchema(Schema):
    """The last edit a slave saw to one of its published trees behind its back, and its repair."""
    project = fields.String(required=True, validate=validate_slug)
    path = ReportText(required=True, validate=validate.Length(min=1, max=4096))   # the first path seen
    seen_at = fields.AwareDateTime(required=True)
    # When a pull (the slave's own repair, or the project's next pull) had the run's tree public again.
    repaired_at = fields.AwareDateTime(load_default=None, allow_none=True)


class HeartbeatSchema(Schema):
    """Slave -> master, every HEARTBEAT_INTERVAL: I am alive, reachable at ``url``."""
    url = fields.String(required=True, validate=validate_http_url)
    syncing = fields.List(fields.String(validate=validate_slug), load_default=list,
                          validate=validate.Length(max=10000))
    # Sent once the master said it takes it (``takes_edits`` in its answer); earlier masters refuse it.
    last_edit = fields.Nested(EditSchema, load_default=None, allow_none=True)


registration_schema = RegistrationSchema()
credentials_schema = CredentialsSchema()
sealed_credentials_schema = SealedCredentialsSchema()
order_schema = OrderSchema()
cancel_schema = CancelSchema()
edit_schema = EditSchema()
report_schema = ReportSchema()
progress_schema = ProgressSchema()
heartbeat_schema = HeartbeatSchema()
