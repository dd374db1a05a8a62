"""The public documents (/api/v1/status, /jobs, /metrics, mirrorz.json and the status page) and
the projects list, built once per change and served from that build.

Writers call ``note_changed`` in the transaction that changes what the documents
show: it moves the one ``feed_state`` row's generation and stamps the changed
projects with it. Each process keeps its own build; before serving, it reads the
generation (one primary-key query) and rebuilds only the entries of projects
stamped since its build, or every entry when the layout moved (a slave enrolled,
changed or removed, a project deleted). What changes without a write - slave
liveness from ``last_seen``, lag that grows with the clock, a pull's progress,
"3 h ago" - is filled in per request from a few small queries, never per
project x slave pair.
"""

import bisect
import dataclasses
import hashlib
import threading

import sqlalchemy as sa
from flask import current_app

from common.states import RunState
from master.db import db
from master.models import FeedState, Project, Run, Slave, SlaveProject
from master.schedules import next_fire_time
from master.seams import now

ACTIVE_VALUES = (RunState.SYNCING.value, RunState.DISTRIBUTING.value)
STALE = {"state": "stale", "run_id": None, "since": None, "last_error": None}
# The newest change a build has seen, when the feed_state row is missing (a database made by hand).
NO_STATE = (0, 0)


def note_changed(project_ids=(), layout=False):
    """Mark, in the caller's transaction, that the public documents of ``project_ids`` changed
    (or every entry, with ``layout``). The caller commits."""
    values = {"generation": FeedState.generation + 1}
    if layout:
        values["layout"] = FeedState.layout + 1
    ids = sorted(set(project_ids))
    if ids:
        # Lock order, as in move_run: the projects' rows (by id) before the one shared feed row.
        db.session.execute(sa.select(Project.id).where(Project.id.in_(ids)).order_by(Project.id)
                           .with_for_update(key_share=True))
    db.session.execute(sa.update(FeedState).where(FeedState.id == 1).values(**values))
    if ids:
        generation = sa.select(FeedState.generation).where(FeedState.id == 1).scalar_subquery()
        db.session.execute(sa.update(Project).where(Project.id.in_(ids)).values(feed_generation=generation))


@dataclasses.dataclass
class ProjectSnapshot:
    """What the documents show of one project, read once per change."""

    id: int
    name: str
    upstream: str
    schedule: str | None
    enabled: bool
    status: str
    last_success: object
    last_started: object
    last_ended: object
    last_full_success: object
    size: int | None
    tree_run_id: int | None
    tree_at: object
    last_duration: float | None
    last_bytes: int | None
    run_totals: dict
    description: str | None
    help_url: str | None
    public_path: str | None
    next_run: object           # the schedule's next fire time while enabled, else None
    next_schedule: object      # the schedule's next fire time even while disabled (tunasync keeps it)
    slaves: dict               # enabled slave name -> freshness dict, in name order
    active_run_id: int | None  # the run syncing or distributing now
    row: object = None         # the Project row, while its entry is being built


@dataclasses.dataclass
class Entry:
    """One project's pieces of every document, and until when they hold."""

    snapshot: ProjectSnapshot
    parts: dict                # document name -> its piece (bytes, or what its assembler wants)
    digest: bytes              # of every piece: a document's ETag is made of its entries' digests
    valid_until: object        # the next fire time, after which next_run moves on


@dataclasses.dataclass
class Document:
    body: bytes
    etag: str
    content_type: str
    cache_control: str
    headers: dict = dataclasses.field(default_factory=dict)
    gzipped: bytes | None = None   # the same body as one gzip member, for clients that accept it


def freshness_of(tree_run_id, held):
    """How one slave stands for one project: fresh, stale or failed, with what it holds."""
    if held is None:
        return STALE
    run_id, synced_at, last_state, last_error = held
    if run_id is not None and run_id == tree_run_id:
        state = "fresh"
    elif last_state == "failed":
        state = "failed"
    else:
        state = "stale"
    return {"state": state, "run_id": run_id, "since": synced_at,
            "last_error": last_error if state != "fresh" else None}


class ReadModel:
    """One process's build of the public documents; ``builders`` turn a snapshot into pieces."""

    def __init__(self, builders, assemblers):
        self.builders = builders        # document name -> fn(snapshot, model) -> piece
        self.assemblers = assemblers    # document name -> fn(model, pieces in name order) -> body
        self._lock = threading.RLock()
        self.seen = None                # (generation, layout) of the build
        self.entries = {}               # project id -> Entry
        self.order = []                 # project ids by name
        self.names = []                 # their names, in the same order
        self.slave_names = []           # enabled slaves by name
        self.slaves = []                # (id, name) of every slave by name, for the status page
        self.version = 0                # moves whenever an entry or the order changes
        self.valid_until = None
        self._assembled = {}            # document name -> (version, assembled value)
        self.builds = 0                 # entries built so far, for tests

    # Reading the database

    def refresh(self):
        """Bring the build up to the database's generation; one query when nothing changed."""
        row = db.session.execute(sa.select(FeedState.generation, FeedState.layout)
                                 .where(FeedState.id == 1)).first()
        seen = tuple(row) if row is not None else NO_STATE
        stamp = now()
        with self._lock:
            if self.seen is None or seen[1] != self.seen[1] or row is None:
                self._build_all()
            elif seen[0] != self.seen[0]:
                self._build_changed(self.seen[0])
            # A schedule's next run holds up to its moment, and moves on once that has passed.
            if self.valid_until is not None and stamp > self.valid_until:
                self._build_projects([entry.snapshot.id for entry in self.entries.values()
                                      if entry.valid_until is not None and entry.valid_until < stamp])
            self.seen = seen
        return self

    def _build_all(self):
        slaves = db.session.execute(sa.select(Slave.id, Slave.name, Slave.enabled).order_by(Slave.name)).all()
        self.slaves = [(row.id, row.name) for row in slaves]
        self.slave_names = [row.name for row in slaves if row.enabled]
        self.entries = {}
        self._build_projects(None)

    def _build_changed(self, since):
        changed = db.session.execute(sa.select(Project.id).where(Project.feed_generation > since)).scalars().all()
        self._build_projects(changed)

    def _build_projects(self, project_ids):
        """Rebuild the entries of ``project_ids`` (None: of every project)."""
        if project_ids is not None and not project_ids:
            return
        query = sa.select(Project)
        held_query = sa.select(SlaveProject.project_id, Slave.name, SlaveProject.run_id, SlaveProject.synced_at,
                               SlaveProject.last_state, SlaveProject.last_error).join(
            Slave, Slave.id == SlaveProject.slave_id).where(Slave.enabled.is_(True))
        active_query = sa.select(Run.project_id, Run.id).where(Run.state.in_(ACTIVE_VALUES))
        if project_ids is not None:
            ids = sorted(set(project_ids))
            query = query.where(Project.id.in_(ids))
            held_query = held_query.where(SlaveProject.project_id.in_(ids))
            active_query = active_query.where(Run.project_id.in_(ids))
        projects = db.session.execute(query).scalars().all()
        held = {}
        for project_id, name, *fields in db.session.execute(held_query):
            held.setdefault(project_id, {})[name] = fields
        active = dict(db.session.execute(active_query).all())
        stamp = now()
        for project in projects:
            snapshot = self._snapshot(project, held.get(project.id, {}), active.get(project.id), stamp)
            self.entries[project.id] = self._entry(snapshot)
        if project_ids is not None:
            found = {project.id for project in projects}
            for project_id in set(project_ids) - found:
                self.entries.pop(project_id, None)  # deleted after it was stamped
        ordered = sorted(self.entries.values(), key=lambda entry: entry.snapshot.name)
        self.order = [entry.snapshot.id for entry in ordered]
        self.names = [entry.snapshot.name for entry in ordered]
        upcoming = [entry.valid_until for entry in self.entries.values() if entry.valid_until is not None]
        self.valid_until = min(upcoming) if upcoming else None
        self.version += 1

    def _snapshot(self, project, held, active_run_id, stamp):
        next_schedule = next_fire_time(project.schedule, stamp) if project.schedule else None
        return ProjectSnapshot(
            id=project.id, name=project.name, upstream=project.upstream, schedule=project.schedule,
            enabled=project.enabled, status=project.status, last_success=project.last_success,
            last_started=project.last_started, last_ended=project.last_ended,
            last_full_success=project.last_full_success, size=project.size, tree_run_id=project.tree_run_id,
            tree_at=project.tree_at, last_duration=project.last_duration, last_bytes=project.last_bytes,
            run_totals=dict(project.run_totals or {}), description=project.description,
            help_url=project.help_url, public_path=project.public_path,
            next_run=next_schedule if project.enabled else None, next_schedule=next_schedule,
            slaves={name: freshness_of(project.tree_run_id, held.get(name)) for name in self.slave_names},
            active_run_id=active_run_id, row=project)

    def _entry(self, snapshot):
        parts = {name: build(snapshot, self) for name, build in self.builders.items()}
        digest = hashlib.blake2b(digest_size=16)
        for name in sorted(parts):
            piece = parts[name]
            piece = getattr(piece, "raw", piece)
            digest.update(piece if isinstance(piece, bytes) else repr(piece).encode())
            digest.update(b"\x00")
        self.builds += 1
        snapshot.row = None
        return Entry(snapshot, parts, digest.digest(), snapshot.next_schedule if snapshot.enabled else None)

    # Serving

    def page(self, name, limit, after=None):
        """(up to ``limit`` pieces of document ``name`` by project name after ``after``, the name to
        continue after or None)."""
        with self._lock:
            start = bisect.bisect_right(self.names, after) if after is not None else 0
            ids = self.order[start:start + limit]
            more = start + limit < len(self.order)
            return [self.entries[project_id].parts[name] for project_id in ids], \
                (self.names[start + limit - 1] if more else None)

    def assembled(self, name):
        """(value the document's assembler made of every entry, ETag of those entries)."""
        with self._lock:
            cached = self._assembled.get(name)
            if cached is not None and cached[0] == self.version:
                return cached[1], cached[2]
            entries = [self.entries[project_id] for project_id in self.order]
            value = self.assemblers[name](self, [entry.parts[name] for entry in entries])
            digest = hashlib.blake2b(digest_size=16)
            digest.update(name.encode())
            for entry in entries:
                digest.update(entry.digest)
            digest.update(repr(self.slaves).encode())
            etag = digest.hexdigest()
            self._assembled[name] = (self.version, value, etag)
            return value, etag


def current_model():
    """This app's read model, brought up to date."""
    return current_app.extensions["mirrorsync_readmodel"].refresh()


def install(app):
    """Give ``app`` its read model of the five public documents."""
    from master.services import feeds, pages, projects, status
    builders = {"projects": projects.project_piece, "status": status.status_piece, "jobs": feeds.jobs_piece, "mirrorz": feeds.mirrorz_piece,
                "metrics": feeds.metrics_piece, "page": pages.page_piece}
    assemblers = {"status": feeds.json_list, "jobs": feeds.json_list, "mirrorz": feeds.mirrorz_body,
                  "metrics": feeds.metrics_assembly, "page": pages.page_assembly}
    app.extensions["mirrorsync_readmodel"] = ReadModel(builders, assemblers)


def slave_liveness():
    """(id, name, enabled, last_seen) of every slave by name: what liveness is computed from per request."""
    return db.session.execute(sa.select(Slave.id, Slave.name, Slave.enabled, Slave.last_seen)
                              .order_by(Slave.name)).all()


def heartbeat_timeout():
    return current_app.config["HEARTBEAT_TIMEOUT"]
