"""marshmallow schemas of the master's API: what comes in is checked, what goes out is shaped."""

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from common.hooks import HOOKS
from common.methods import METHODS, RSYNC
from common.methods.twostage import PROFILES
from common.traces import NONE, TRACE_MODES
from common.validation import (public_rsync_url, validate_argument, validate_description, validate_executable_name,
                               validate_help_url, validate_pattern, validate_project_name, validate_public_path,
                               validate_push_token, validate_relative_path, validate_rsync_option,
                               validate_secret, validate_slug, validate_upstream_url)
from common.wire import MAX_ID, PUBLISH_MODES, StatsSchema, StrictBoolean, validate_http_url
from master.schedules import validate_crontab

MAX_TIMEOUT = 30 * 86400
PROJECT_PAGE = 100
MAX_PROJECT_PAGE = 10000


def _hook_field(hook):
    return fields.String(allow_none=True, validate=validate_executable_name, metadata={
        "description": f"name of an executable in HOOKS_DIR run as the {hook} hook, or null"})


HooksSchema = Schema.from_dict({hook: _hook_field(hook) for hook in HOOKS}, name="HooksSchema")
HooksSchema.error_messages = {"type": f"Must be an object whose keys are hooks ({', '.join(HOOKS)})."}


class ProjectSchema(Schema):
    name = fields.String(required=True, validate=validate_project_name)
    upstream = fields.String(required=True, validate=validate_upstream_url, metadata={
        "description": "rsync://[user@]host[:port]/module[/path]; with method command, also an "
                       "http(s)/ftp/git/ssh URL the script is given as MIRRORSYNC_UPSTREAM"})
    schedule = fields.String(allow_none=True, load_default=None, validate=validate_crontab,
                             metadata={"description": "5-field crontab (UTC), or null for manual syncs only"})
    enabled = StrictBoolean(load_default=True)
    rsync_options = fields.List(fields.String(validate=validate_rsync_option), load_default=list,
                                validate=validate.Length(max=32))
    excludes = fields.List(fields.String(validate=validate_pattern), load_default=list,
                           validate=validate.Length(max=256))
    timeout = fields.Integer(strict=True, allow_none=True, load_default=None,
                             validate=validate.Range(min=1, max=MAX_TIMEOUT),
                             metadata={"description": "wall-clock limit of one pull, in seconds"})
    upstream_password = fields.String(load_only=True, allow_none=True, validate=validate_secret)
    publish = fields.String(load_default="delay", validate=validate.OneOf(PUBLISH_MODES), metadata={
        "description": "how slaves publish a new tree: 'delay' (in place, rsync --delay-updates) or "
                       "'atomic' (a snapshot swapped in by renaming one symlink)"})
    retries = fields.Integer(strict=True, load_default=3, validate=validate.Range(min=0, max=10), metadata={
        "description": "further tries after a transient upstream failure, with exponential backoff"})
    splay = fields.Integer(strict=True, load_default=0, validate=validate.Range(min=0, max=86400), metadata={
        "description": "up to this many seconds of random delay on each scheduled start"})
    description = fields.String(allow_none=True, load_default=None, validate=validate_description, metadata={
        "description": "a short text for visitors (up to 200 characters, one line)"})
    help_url = fields.String(allow_none=True, load_default=None, validate=validate_help_url, metadata={
        "description": "an http(s) page that tells visitors how to use this mirror"})
    public_path = fields.String(allow_none=True, load_default=None, validate=validate_public_path, metadata={
        "description": "where the files are on the site, joined to SITE_URL; null means /<name>"})
    method = fields.String(load_default=RSYNC, validate=validate.OneOf(METHODS), metadata={
        "description": "rsync, two-stage (Debian's ftpsync: all but the indices first, without deleting, "
                       "then the rest with deletions; master and slaves) or command (a sync script)"})
    stage1_profile = fields.String(allow_none=True, load_default=None, validate=validate.OneOf(sorted(PROFILES)),
                                   metadata={"description": "the stage-1 filter list of method two-stage"})
    command = fields.String(allow_none=True, load_default=None, validate=validate_executable_name, metadata={
        "description": "method command: name of an executable in SYNC_SCRIPTS_DIR (never a path)"})
    command_args = fields.List(fields.String(validate=validate_argument), load_default=list,
                               validate=validate.Length(max=64), metadata={
                                   "description": "the arguments the command is run with"})
    transient_exit_codes = fields.List(fields.Integer(strict=True, validate=validate.Range(min=1, max=255)),
                                       load_default=list, validate=validate.Length(max=32), metadata={
                                           "description": "exit codes of the command worth a retry"})
    hooks = fields.Nested(HooksSchema, load_default=dict)
    upstream_marker = fields.String(allow_none=True, load_default=None, validate=validate_relative_path,
                                    metadata={"description": "a file of the upstream fetched first: unchanged "
                                                             "since the last good pull, the pull is skipped"})
    upstream_filelist = fields.String(allow_none=True, load_default=None, validate=validate_relative_path,
                                      metadata={"description": "method rsync: the upstream's list of its tree "
                                                               "(Fedora's fullfiletimelist-<module>); a pull "
                                                               "transfers and deletes what it says changed"})
    trace = fields.String(load_default=NONE, validate=validate.OneOf(TRACE_MODES), metadata={
        "description": "debian: master and slaves write ftpsync's trace files in project/trace/"})
    push_token = fields.String(load_only=True, allow_none=True, validate=validate_push_token, metadata={
        "description": "write-only: the bearer token for POST /api/v1/projects/<name>/push; null removes it"})
    has_push_token = fields.Method("_has_push_token", dump_only=True)
    has_password = fields.Method("_has_password", dump_only=True)
    status = fields.String(dump_only=True)
    last_success = fields.DateTime(dump_only=True)
    last_started = fields.DateTime(dump_only=True)
    last_ended = fields.DateTime(dump_only=True)
    next_run = fields.DateTime(dump_only=True)
    size = fields.Integer(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)

    def _has_password(self, project):
        return bool(project.upstream_password)

    def _has_push_token(self, project):
        return bool(project.push_token_hash)


class ProjectPatchSchema(ProjectSchema):
    class Meta:
        exclude = ("name",)


class SlaveRunSchema(Schema):
    slave = fields.String()
    state = fields.String()
    attempts = fields.Integer()
    dispatched_at = fields.DateTime()
    started_at = fields.DateTime()
    finished_at = fields.DateTime()
    exit_code = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    warning = fields.String(allow_none=True, metadata={
        "description": "what the slave said of a pull that succeeded all the same"})
    stats = fields.Nested(StatsSchema, allow_none=True)
    digest = fields.String(allow_none=True, metadata={"description": "digest of the tree the slave published"})
    progress = fields.Dict(allow_none=True, metadata={
        "description": "latest progress the slave reported while it pulled: bytes, percent, rate, eta, files"})


class RunSchema(Schema):
    id = fields.Integer(dump_only=True)
    project = fields.String(attribute="project_name", dump_only=True)
    trigger = fields.String(dump_only=True)
    state = fields.String(dump_only=True)
    coalesced = fields.Integer(dump_only=True, metadata={
        "description": "how many further triggers were folded into this run while it was queued"})
    attempt = fields.Integer(dump_only=True, metadata={"description": "1 for a first try, then 2, 3..."})
    retry_of = fields.Integer(dump_only=True, allow_none=True, metadata={
        "description": "the run this one retries"})
    retried_by = fields.Integer(dump_only=True, allow_none=True, metadata={
        "description": "the run that tries again after this one failed"})
    not_before = fields.DateTime(dump_only=True, allow_none=True, metadata={
        "description": "a queued retry waits until then"})
    force = fields.Boolean(dump_only=True, metadata={
        "description": "starts even when MAX_CONCURRENT_SYNCS pulls already run"})
    created_at = fields.DateTime(dump_only=True)
    started_at = fields.DateTime(dump_only=True)
    finished_at = fields.DateTime(dump_only=True)
    duration = fields.Method("_duration", dump_only=True, metadata={"description": "seconds"})
    exit_code = fields.Integer(dump_only=True, allow_none=True)
    error = fields.String(dump_only=True, allow_none=True)
    warning = fields.String(dump_only=True, allow_none=True)
    skipped = fields.Boolean(dump_only=True, metadata={
        "description": "the upstream marker was unchanged: nothing was pulled and no slave was ordered"})
    stats = fields.Nested(StatsSchema, dump_only=True, allow_none=True)
    digest = fields.String(dump_only=True, allow_none=True, metadata={
        "description": "sha256 of the pulled tree's sorted list of paths, types, sizes, times, modes, "
                       "link targets and hard links; each slave's must match"})
    progress = fields.Dict(dump_only=True, allow_none=True, metadata={
        "description": "latest progress of the upstream pull: bytes, percent, rate, eta, files"})
    slaves = fields.List(fields.Nested(SlaveRunSchema), dump_only=True, dump_default=list)

    def _duration(self, run):
        if run.started_at is None or run.finished_at is None:
            return None
        return round((run.finished_at - run.started_at).total_seconds(), 3)


class AsciiInteger(fields.Integer):
    """An integer from a query string, in ASCII digits only (Python's int() also reads "１")."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and not value.isascii():
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class SyncArgs(Schema):
    force = fields.Boolean(load_default=False, truthy={"true", "1"}, falsy={"false", "0"}, metadata={
        "description": "start even when MAX_CONCURRENT_SYNCS pulls already run (the project's own "
                       "active run is still waited for)"})


def _printable_query(value):
    if not value.isprintable():
        raise ValidationError("The search must be printable text.")


class MirrorListArgs(Schema):
    """The visitors' page: ``?q=`` words to look for in names and descriptions."""

    class Meta:
        unknown = EXCLUDE  # a link with tracking parameters still opens the page

    q = fields.String(load_default="", validate=[validate.Length(max=100), _printable_query])


class RunListArgs(Schema):
    limit = AsciiInteger(load_default=50, validate=validate.Range(min=1, max=500))
    before = AsciiInteger(load_default=None, validate=validate.Range(min=1, max=MAX_ID))


class ProjectListArgs(Schema):
    limit = AsciiInteger(load_default=PROJECT_PAGE, validate=validate.Range(min=1, max=MAX_PROJECT_PAGE),
                         metadata={"description": f"projects per page (default {PROJECT_PAGE}); ask for up to "
                                                  f"{MAX_PROJECT_PAGE} to get every project in one answer"})
    cursor = fields.String(load_default=None, validate=validate_slug, metadata={
        "description": "the X-Next-Cursor of the previous page: projects whose name sorts after it"})


class LogArgs(Schema):
    offset = AsciiInteger(load_default=0, validate=validate.Range(min=0, max=MAX_ID))


class DeleteProjectArgs(Schema):
    force = fields.Boolean(load_default=False, truthy={"true", "1"}, falsy={"false", "0"},
                           metadata={"description": "cancel a run in progress first, instead of answering 409"})


class EditOutSchema(Schema):
    project = fields.String()
    path = fields.String(metadata={"description": "the first path seen edited"})
    seen_at = fields.String(metadata={"description": "when the slave saw it (ISO 8601)"})
    repaired_at = fields.String(allow_none=True, metadata={
        "description": "when the run's tree was public again (ISO 8601); null: not yet"})


class SlaveSchema(Schema):
    name = fields.String(dump_only=True)
    url = fields.String(dump_only=True)
    enabled = StrictBoolean()
    state = fields.String(dump_only=True, metadata={"description": "online, offline, new or disabled"})
    last_seen = fields.DateTime(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    rsync_user = fields.String(dump_only=True)
    public_url = fields.String(dump_only=True, allow_none=True, metadata={
        "description": "where visitors fetch this host's files, such as https://mirror1.example.org; each "
                       "project's public_path joins it on the visitors' page"})
    last_edit = fields.Nested(EditOutSchema, dump_only=True, allow_none=True, metadata={
        "description": "the last edit the slave saw to one of its published trees outside mirror-sync "
                       "(a file written, removed or its mode changed by someone else), and when a pull "
                       "had the run's tree public again; null: none seen"})


class SlavePatchSchema(Schema):
    enabled = StrictBoolean()
    public_url = fields.String(allow_none=True, validate=validate_http_url)


class SlaveFreshnessSchema(Schema):
    state = fields.String(metadata={"description": "fresh, stale or failed"})
    run_id = fields.Integer(allow_none=True, metadata={"description": "run whose tree the slave holds"})
    since = fields.DateTime(allow_none=True)
    last_error = fields.String(allow_none=True)


class StatusSchema(Schema):
    name = fields.String()
    status = fields.String()
    last_success = fields.DateTime()
    last_started = fields.DateTime()
    last_ended = fields.DateTime()
    next_run = fields.DateTime()
    upstream = fields.Function(lambda project: public_rsync_url(project.upstream))
    size = fields.Integer()
    slaves = fields.Dict(keys=fields.String(), values=fields.Nested(SlaveFreshnessSchema))


class PushSchema(Schema):
    run = fields.Integer(attribute="id", metadata={"description": "the run that will pull"})
    state = fields.String()
    coalesced = fields.Integer(metadata={"description": "further triggers folded into it"})
