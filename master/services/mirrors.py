"""The visitors' list of mirrors: each project's files, description, help, state, freshness and size.

Reads the project rows only (never run history or per-slave rows), so it can
be built once per change and served from a cache. Nothing in it comes from a
run's error, a log, the upstream URL or the master's paths.
"""

import dataclasses

from master.services import projects

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
    files_url: str          # SITE_URL + public_path, or the path alone on the page's own host
    state: str              # success, syncing, failed, paused or new
    last_success: object
    next_run: object
    size: int | None

    @property
    def search_text(self):
        return f"{self.name} {self.description or ''}".lower()


def _visitor_state(project):
    status = project.status
    if status == "queued":
        # A queued run keeps the state before it until it starts, as tunasync shows it.
        if project.last_ended is None:
            return "new"
        good = project.last_success is not None and project.last_success >= project.last_ended
        return "success" if good else "failed"
    return VISITOR_STATES.get(status, "new")


def mirror_entries(site_url=None):
    """One MirrorEntry per project, by name."""
    base = site_url or ""
    return [MirrorEntry(name=project.name, description=project.description, help_url=project.help_url,
                        files_url=base + (project.public_path or projects.default_public_path(project.name)),
                        state=_visitor_state(project), last_success=project.last_success,
                        next_run=project.next_run, size=project.size)
            for project in projects.list_projects()]


def matches(entry, query):
    """Whether every word of ``query`` is in the entry's name or description, ignoring case."""
    return all(word in entry.search_text for word in query.lower().split())
