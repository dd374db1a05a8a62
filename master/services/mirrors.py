"""The visitors' list of mirrors: each project's files, description, help, state, freshness and size.

Reads the project rows only (never run history or per-slave rows), so it can
be built once per change and served from a cache. Nothing in it comes from a
run's error, a log, the upstream URL or the master's paths.
"""

import dataclasses

import sqlalchemy as sa

from master.db import db
from master.models import Project
from master.schedules import next_fire_time
from master.seams import now
from master.services import projects, slaves

# What a visitor reads, from the project's status: tunasync's words, which mirror users know.
VISITOR_STATES = {
    "success": "success", "syncing": "syncing", "distributing": "syncing", "partial": "failed",
    "failed": "failed", "interrupted": "failed", "cancelled": "failed", "disabled": "paused", "none": "new",
}
MAX_QUERY = 100


@dataclasses.dataclass(frozen=True)
class MirrorEntry:
    name: str
    description: str | None
    help_url: str | None
    files_url: str          # SITE_URL + public_path, else the first host's, else the path alone
    hosts: tuple            # (slave name, that host's URL of the files) for each slave with a public_url
    state: str              # success, syncing, failed, paused or new
    last_success: object
    next_run: object
    size: int | None

    @property
    def search_text(self):
        return f"{self.name} {self.description or ''}".lower()


def _visitor_state(row):
    status = "disabled" if not row.enabled else row.last_state or "none"
    if status == "queued":
        # A queued run keeps the state before it until it starts, as tunasync shows it.
        if row.last_ended is None:
            return "new"
        good = row.last_full_success is not None and row.last_full_success >= row.last_ended
        return "success" if good else "failed"
    return VISITOR_STATES.get(status, "new")


_COLUMNS = (Project.name, Project.description, Project.help_url, Project.public_path, Project.enabled,
            Project.schedule, Project.last_state, Project.last_success, Project.last_full_success, Project.last_ended,
            Project.size)


def mirror_entries(site_url=None):
    """One MirrorEntry per project, by name; reads only the columns it shows (no JSON, no history)."""
    bases = [(slave.name, slave.public_url.rstrip("/")) for slave in slaves.enabled_slaves() if slave.public_url]
    stamp = now()
    next_by_schedule = {}  # most projects share a few schedules
    entries = []
    for row in db.session.execute(sa.select(*_COLUMNS).order_by(Project.name)):
        path = row.public_path or projects.default_public_path(row.name)
        hosts = tuple((name, base + path) for name, base in bases)
        files_url = (site_url + path) if site_url else hosts[0][1] if hosts else path
        next_run = None
        if row.enabled and row.schedule:
            if row.schedule not in next_by_schedule:
                next_by_schedule[row.schedule] = next_fire_time(row.schedule, stamp)
            next_run = next_by_schedule[row.schedule]
        entries.append(MirrorEntry(name=row.name, description=row.description, help_url=row.help_url,
                                   files_url=files_url, hosts=hosts, state=_visitor_state(row),
                                   last_success=row.last_success, next_run=next_run, size=row.size))
    return entries


def matches(entry, query):
    """Whether every word of ``query`` is in the entry's name or description, ignoring case."""
    return all(word in entry.search_text for word in query.lower().split())
