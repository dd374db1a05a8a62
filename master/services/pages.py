"""What the HTML status pages show: projects with their slaves' freshness, a project's runs, a run.

Reads only; raises NotFound for a project or run that does not exist.
"""

import dataclasses
import datetime
import hashlib
import os

import markupsafe
import sqlalchemy as sa
from flask import current_app, get_template_attribute, render_template

from common import humanize, runlogs
from common.rsync import EXIT_MEANINGS
from common.errors import Gone
from common.states import RunState
from common.validation import public_rsync_url
from master.db import db
from master.models import Run, Slave, SlaveProject
from master.paths import logs_root
from master.seams import now
from master.services import projects, readmodel, runs, slaves

LOG_TAIL_LINES = 200
# Bytes read from the end of a run log for its tail: enough for LOG_TAIL_LINES of rsync output.
LOG_TAIL_BYTES = 64 * 1024
RECENT_RUNS = 30
REFRESH_SECONDS = 10
# With more enabled slaves than this, the front page counts their copies per project in one
# column instead of one column per slave; each project's page still lists every slave.
FOLD_SLAVES_AT = 12
# How many not-fresh slaves a folded cell names in its tooltip.
FOLDED_NAMES = 10
SLOT = "\x00"


@dataclasses.dataclass
class ProjectRow:
    project: object
    upstream: str
    slaves: dict          # slave name -> freshness dict (state, run_id, since, last_error)
    active_run: object    # the run syncing or distributing now, or None


@dataclasses.dataclass
class LogTail:
    text: str
    truncated: bool       # older lines were left out
    missing: str | None   # why there is no log to show


def _safe_upstream(url):
    try:
        return public_rsync_url(url)
    except Exception:  # noqa: BLE001 - a page must never show a URL it cannot strip the user from
        return "(hidden)"


def slot(kind, value):
    """A mark in a built page that the read model fills in per request (see fill_slots)."""
    return markupsafe.Markup(f"{SLOT}{kind}{value}{SLOT}")


@dataclasses.dataclass
class FoldedSummary:
    counts: list          # (state, how many slaves) for fresh, stale, failed, leaving out zeros
    title: str


def _fold(per_slave):
    counts = {"fresh": 0, "stale": 0, "failed": 0}
    behind = []
    for name, held in per_slave.items():
        counts[held["state"]] += 1
        if held["state"] != "fresh":
            behind.append(f"{name} ({held['state']})")
    title = ", ".join(behind[:FOLDED_NAMES]) + (f" and {len(behind) - FOLDED_NAMES} more"
                                                if len(behind) > FOLDED_NAMES else "")
    return FoldedSummary([(state, count) for state, count in counts.items() if count],
                         f"not fresh: {title}" if behind else "every slave holds the newest tree")


def page_piece(snapshot, model):
    """One project's row of the front page, with slots for its times and progress."""
    folded = len(model.slave_names) > FOLD_SLAVES_AT
    row = ProjectRow(snapshot, _safe_upstream(snapshot.upstream), snapshot.slaves, None)
    row.active_run_id = snapshot.active_run_id
    row.summary = _fold(snapshot.slaves) if folded else None
    # Rendered outside the pages' own requests: what their context processor adds is given here.
    module = current_app.jinja_env.get_template("_project_row.html").make_module(
        {"detailed": not current_app.config["STATUS_PUBLIC"]})
    return str(module.project_row(row, model.slave_names, folded))


def page_assembly(model, pieces):
    """The whole front page cut at its slots: text at even places, slot names at odd ones."""
    folded = len(model.slave_names) > FOLD_SLAVES_AT
    html = render_template("index.html", detailed=not current_app.config["STATUS_PUBLIC"],
                           slave_names=model.slave_names, folded=folded, fold_at=FOLD_SLAVES_AT,
                           rows=[markupsafe.Markup(piece) for piece in pieces],
                           slaves=[{"id": slave_id, "name": name} for slave_id, name in model.slaves],
                           refresh=REFRESH_SECONDS)
    return html.split(SLOT)


def overview_page():
    """The front page as of now: the build's text with ages, slave states and progress filled in."""
    parts, etag = readmodel.current_model().assembled("page")
    stamp = now()
    timeout = datetime.timedelta(seconds=readmodel.heartbeat_timeout())
    liveness = {}
    for slave in readmodel.slave_liveness():
        state = "disabled" if not slave.enabled else "new" if slave.last_seen is None else \
            "online" if stamp - slave.last_seen <= timeout else "offline"
        liveness[slave.id] = (state, slave.last_seen)
    progress = _progress_of_syncing_runs()
    filled = fill_slots(parts, stamp, liveness, progress)
    body = "".join(filled).encode()
    moving = hashlib.blake2b("\x00".join(filled[1::2]).encode(), digest_size=8).hexdigest()
    return readmodel.Document(body, f"{etag}-{moving}", "text/html; charset=utf-8",
                              "public, max-age=5" if current_app.config["STATUS_PUBLIC"] else "private, no-cache")


def _progress_of_syncing_runs():
    """Run id -> progress HTML of the pulls running now (at most MAX_CONCURRENT_SYNCS)."""
    macro = get_template_attribute("_macros.html", "progress")
    syncing = db.session.execute(sa.select(Run).where(Run.state == RunState.SYNCING.value)).scalars().all()
    return {run.id: str(macro(run)) for run in syncing}


def fill_slots(parts, stamp, liveness, progress):
    """Copy of ``parts`` with each slot (odd places) replaced by its text as of ``stamp``."""
    filled = list(parts)
    now_seconds = int(stamp.timestamp())
    for index in range(1, len(parts), 2):
        kind, value = parts[index][0], parts[index][1:]
        if kind == "A":
            filled[index] = seconds_ago_text(now_seconds - int(value))
        elif kind == "P":
            filled[index] = progress.get(int(value), "")
        elif kind == "S":
            state = liveness.get(int(value), ("disabled", None))[0]
            filled[index] = f'<span class="badge state-{state}">{state}</span>'
        elif kind == "L":
            seen = liveness.get(int(value), (None, None))[1]
            filled[index] = '<span class="muted">never</span>' if seen is None else (
                f'<time datetime="{humanize.iso(seen)}" title="{humanize.iso(seen)}">{humanize.age(seen, stamp)}</time>')
    return filled


def seconds_ago_text(delta):
    """'3 h ago', 'in 5 min' or 'just now', for a moment ``delta`` seconds ago."""
    if abs(delta) < 5:
        return "just now"
    return f"{humanize.span(delta)} ago" if delta > 0 else f"in {humanize.span(delta)}"



def _freshness_of_project(project):
    """Enabled slave name -> freshness of ``project``: one query, one project."""
    rows = db.session.execute(
        sa.select(Slave.name, SlaveProject.run_id, SlaveProject.synced_at, SlaveProject.last_state,
                  SlaveProject.last_error)
        .select_from(Slave).outerjoin(SlaveProject, sa.and_(SlaveProject.slave_id == Slave.id,
                                                             SlaveProject.project_id == project.id))
        .where(Slave.enabled.is_(True)).order_by(Slave.name)).all()
    return {name: readmodel.freshness_of(project.tree_run_id, held) for name, *held in rows}


def project_detail(name):
    """(ProjectRow, recent runs newest first); raises NotFound."""
    project = projects.get_project(name)
    active = next((run for run in runs.active_runs() if run.project_id == project.id), None)
    return ProjectRow(project, _safe_upstream(project.upstream), _freshness_of_project(project), active), \
        runs.list_runs(project, limit=RECENT_RUNS)


def run_is_final(run):
    return RunState(run.state).is_final


def log_tail(run, lines=LOG_TAIL_LINES):
    """The last ``lines`` lines of the run's log, decoded leniently."""
    path = runlogs.log_path(logs_root(), run.project_name, run.id)
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    offset = max(0, size - LOG_TAIL_BYTES)
    try:
        data, _ = runs.read_run_log(run.id, offset)
    except Gone as error:
        return LogTail("", False, error.message)
    text = data.decode("utf-8", errors="replace")
    all_lines = text.splitlines()
    truncated = offset > 0 or len(all_lines) > lines
    if offset > 0 and all_lines:
        all_lines = all_lines[1:]  # the first line was cut by the byte offset
    return LogTail("\n".join(all_lines[-lines:]), truncated, None)


def run_detail(run_id, with_log):
    """(run, LogTail or None); raises NotFound. Public pages get no log (``with_log`` False)."""
    run = runs.get_run(run_id)
    return run, log_tail(run) if with_log else None


def run_summary(run):
    """What a public page says about how a run ended: never rsync's own words, which name
    users, paths and options, only the exit code and what it means."""
    if run.exit_code is None or run.exit_code == 0:
        return None
    meaning = EXIT_MEANINGS.get(run.exit_code)
    return f"rsync exit code {run.exit_code}" + (f" ({meaning})" if meaning else "")
