"""What the HTML status pages show: projects with their slaves' freshness, a project's runs, a run.

Reads only; raises NotFound for a project or run that does not exist.
"""

import dataclasses
import os

from common import runlogs
from common.rsync import EXIT_MEANINGS
from common.errors import Gone
from common.states import RunState
from common.validation import public_rsync_url
from master.paths import logs_root
from master.services import projects, runs, slaves, status

LOG_TAIL_LINES = 200
# Bytes read from the end of a run log for its tail: enough for LOG_TAIL_LINES of rsync output.
LOG_TAIL_BYTES = 64 * 1024
RECENT_RUNS = 30


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


def _active_runs_by_project():
    return {run.project_id: run for run in runs.active_runs()}


def overview():
    """(slave names, one ProjectRow per project) for the front page."""
    feed = status.status_feed()
    active = _active_runs_by_project()
    names = sorted(slave.name for slave in slaves.enabled_slaves())
    rows = [ProjectRow(entry.project, _safe_upstream(entry.project.upstream), entry.slaves,
                       active.get(entry.project.id)) for entry in feed]
    return names, rows


def slave_list():
    """(slave, state) for every enrolled slave: online, offline, new or disabled."""
    return [(slave, slaves.slave_state(slave)) for slave in slaves.list_slaves()]


def project_detail(name):
    """(ProjectRow, recent runs newest first); raises NotFound."""
    project = projects.get_project(name)
    entry = next((item for item in status.status_feed() if item.project.id == project.id), None)
    per_slave = entry.slaves if entry else {}
    active = _active_runs_by_project().get(project.id)
    return ProjectRow(project, _safe_upstream(project.upstream), per_slave, active), \
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
