"""HTML status pages rendered on the server: /, /projects/<name> and /runs/<id>.

They refresh themselves with a meta tag, so they work with JavaScript off. With
STATUS_PUBLIC false they need a bearer token, like the API, and only then does a
run's page show its log and error texts; public pages show summaries.
"""

from flask import Blueprint, current_app, render_template

from common import humanize
from common.errors import MirrorSyncError, NotFound
from master.api.documents import serve
from master.auth import authorize_request
from master.schemas import MAX_ID
from master.seams import now
from master.services import pages

blp = Blueprint("pages", __name__)
REFRESH_SECONDS = pages.REFRESH_SECONDS


@blp.before_request
def require_token_unless_public():
    if not current_app.config["STATUS_PUBLIC"]:
        authorize_request()


@blp.errorhandler(MirrorSyncError)
def error_page(error):
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        headers["Retry-After"] = str(retry_after)
    return render_template("error.html", error=error), error.status, headers


@blp.get("/")
def index():
    return serve(pages.overview_page())


@blp.get("/projects/<name>")
def project(name):
    row, recent = pages.project_detail(name)
    return render_template("project.html", row=row, runs=recent, refresh=REFRESH_SECONDS)


@blp.get("/runs/<run_id>")
def run(run_id):
    # Any text is accepted here so that a bad id gets this page's 404, not the API's JSON one.
    if not (run_id.isascii() and run_id.isdigit() and len(run_id) <= 19 and 0 < int(run_id) <= MAX_ID):
        raise NotFound(f"There is no run {run_id}.")
    found, tail = pages.run_detail(int(run_id), with_log=_detailed())
    final = pages.run_is_final(found)
    return render_template("run.html", run=found, tail=tail, refresh=None if final else REFRESH_SECONDS)


def _detailed():
    """Public pages show summaries; logs and rsync's error texts stay behind a token."""
    return not current_app.config["STATUS_PUBLIC"]


@blp.context_processor
def detail_level():
    return {"detailed": _detailed()}


blp.add_app_template_filter(pages.run_summary, "outcome")
blp.app_template_global("slot")(pages.slot)


@blp.app_template_filter("age")
def age(moment):
    """'3 h ago', 'in 5 min' or 'never'."""
    return humanize.age(moment, now())


blp.add_app_template_filter(humanize.iso, "iso")
blp.add_app_template_filter(humanize.absolute, "absolute")
human_size = humanize.binary_size
blp.add_app_template_filter(human_size, "human_size")


@blp.app_template_filter("duration")
def duration(run_or_none):
    """How long a run took (or has taken so far), as '1 h 2 min 3 s'."""
    if run_or_none is None or run_or_none.started_at is None:
        return ""
    end = run_or_none.finished_at or now()
    seconds = max(0, int((humanize.as_utc(end) - humanize.as_utc(run_or_none.started_at)).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if hours or minutes:
        parts.append(f"{minutes} min")
    parts.append(f"{seconds} s")
    return " ".join(parts)
