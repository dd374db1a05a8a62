"""One upstream pull of a project: hooks, the unchanged-upstream check, the sync method, trace files.

services/syncs.py claims and finishes runs; this module does the pulling in
between, into the destination it is given.
"""

import dataclasses
import logging
import os
import socket
from dataclasses import dataclass

import sqlalchemy as sa
from flask import current_app

from common import filelists, hooks, humanize, traces
from common.methods import COMMAND, RSYNC, MethodSpec, Runners, SyncResult, method_for
from common.methods import rsync as rsync_method
from common.methods.markers import fetch_marker
from common.processes import ProgramRunner
from common.rsync import RsyncStats
from common.validation import upstream_host
from master.db import db
from master.models import Project
from master.paths import state_dir
from master.seams import current_seams, now

log = logging.getLogger(__name__)


@dataclass
class PullOutcome:
    result: SyncResult
    skipped: bool = False
    warnings: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()   # paths the master deleted itself (``delete_unlisted``, an upstream_filelist)
    written: tuple[str, ...] = ()   # paths the master wrote into the tree itself, rsync not naming them
    walk: bool = False   # the tree must be walked to be described: rsync's log cannot vouch for every change

    @property
    def warning(self):
        texts = [w for w in (self.result.warning, *self.warnings) if w]
        return "; ".join(texts) or None


def runners():
    seams = current_seams()
    return Runners(seams.rsync_runner, seams.program_runner or ProgramRunner())


def method_spec(project, run_id=None):
    """The MethodSpec of ``project``'s upstream pull. Raises ValueError when its script is missing."""
    config = current_app.config
    protect = traces.protected_paths(config["MIRROR_NAME"]) if project.trace == traces.DEBIAN else ()
    program, environment = None, {}
    if project.method == COMMAND:
        program = hooks.executable_in(config["SYNC_SCRIPTS_DIR"], project.command or "")
        environment = {"MIRRORSYNC_PROJECT": project.name, "MIRRORSYNC_UPSTREAM": project.upstream,
                       "MIRRORSYNC_RUN_ID": str(run_id or "")}
        if project.upstream_password:
            environment["MIRRORSYNC_UPSTREAM_PASSWORD"] = project.upstream_password
    return MethodSpec(method=project.method, source=project.upstream, options=tuple(project.rsync_options or ()),
                      excludes=tuple(project.excludes or ()), password=project.upstream_password,
                      timeout=project.timeout, stage1_profile=project.stage1_profile, protect=protect,
                      program=program, arguments=tuple(project.command_args or ()),
                      transient_exit_codes=frozenset(project.transient_exit_codes or ()),
                      environment=environment)


def _failed(error):
    return SyncResult(None, False, None, error, False, False, RsyncStats())


def run_hook(project, run_id, hook, state, destination, log_path, cancel=None):
    """Run ``project``'s ``hook`` if it has one; returns None or the sentence saying how it failed."""
    name = (project.hooks or {}).get(hook)
    if not name:
        return None
    config = current_app.config
    try:
        path = hooks.executable_in(config["HOOKS_DIR"], name)
    except ValueError as error:
        return f"hook {hook} ({name}): {error}"
    return hooks.run_hook(runners().programs, path, hook, project=project.name, run_id=run_id, state=state,
                          directory=destination, log_path=log_path, timeout=config["HOOK_TIMEOUT"], cancel=cancel)


def pull_upstream(run, destination, log_path, cancel=None, on_spawn=None, on_progress=None, options=(),
                  current=None, before_pull=None, listed=None, delete_unlisted=None, previous=None,
                  delete=None):
    """Pull ``run``'s project into ``destination``; returns a PullOutcome. Never raises for a failed pull.

    ``options`` go before the project's own rsync options (a snapshot's); ``before_pull()`` runs
    just before the pull itself (it starts the snapshot from the previous tree; an OSError from it
    fails the pull); an unchanged upstream copies its marker's companions into ``current``, the
    tree as it is, and never calls it. With ``listed`` (a list; method rsync), rsync deletes nothing
    and names every entry it found, the unchanged ones into ``listed`` (common.rsync.RsyncJob.listed);
    after a good pull, ``delete_unlisted(result)`` deletes what it did not name and returns those
    paths, or None when the names do not add up to rsync's count of the upstream's entries: the pull
    then runs again with rsync deleting, so nothing upstream deleted is ever kept.

    With an ``upstream_filelist`` (method rsync), ``previous()`` gives (path, manifest) of the tree the
    pull starts as, or None; the list is fetched with the marker, compared with the one in that tree
    (``common.filelists``), ``delete(paths)`` deletes what upstream no longer lists (returning the
    paths that went) and rsync transfers only what changed. Whatever cannot be vouched for that way
    is a full pull.
    """
    project = run.project
    started = now()
    failure = run_hook(project, run.id, hooks.PRE_SYNC, "syncing", destination, log_path, cancel)
    if failure is not None:
        return PullOutcome(_failed(failure))
    try:
        spec = method_spec(project, run.id)
    except ValueError as error:
        return PullOutcome(_failed(f"command: {error}"))
    fetched = None
    filelist = project.upstream_filelist if project.method == RSYNC else None
    marker = project.upstream_marker or filelist
    if marker and project.method != COMMAND:
        fetched = fetch_marker(spec, runners(), marker,
                               os.path.join(state_dir(current_app.config["DATA_DIR"]), "markers", project.name),
                               log_path, cancel, also=(filelist,) if filelist else (),
                               fresh=project.marker_digest is None)
        if _unchanged(project, fetched):
            return _skip(project, fetched, current or destination, log_path)
    # The snapshot's options are for the pull itself; the marker is fetched plainly.
    spec = dataclasses.replace(spec, options=(*options, *spec.options), listed=listed)
    if before_pull is not None:
        try:
            before_pull()
        except OSError as error:
            return PullOutcome(_failed(str(error)))
    changes = None
    if filelist and fetched is not None and previous is not None:
        changes = _filelist_plan(project, fetched, previous, spec.protect, log_path)
    deleted = written = ()
    walk = False
    if changes is not None:
        try:
            result, deleted, written = _pull_changes(spec, _listing_key(project), *changes, fetched, filelist,
                                                     destination, log_path, delete, cancel, on_spawn, on_progress)
        except OSError as error:
            return PullOutcome(_failed(str(error)))
        if not (result.ok or result.cancelled or result.timed_out):
            _log_line(log_path, "# upstream_filelist: the pull of the listed changes failed: pulling in full")
            deleted = written = ()
            walk = True   # what the master deleted before and what the full pull put back are not all named
            listed = None   # rsync deletes: the master's names would mix two pulls
            spec = dataclasses.replace(spec, listed=None)
            changes = None
    if changes is None:
        result = method_for(spec, runners()).run(destination, log_path, cancel=cancel, on_spawn=on_spawn,
                                                 on_progress=on_progress)
    if listed is not None and changes is None and result.ok:
        try:
            deleted = delete_unlisted(result)
        except OSError as error:
            return PullOutcome(_failed(str(error)))
        if deleted is None:
            deleted = ()
            spec = dataclasses.replace(spec, listed=None)
            result = method_for(spec, runners()).run(destination, log_path, cancel=cancel, on_spawn=on_spawn,
                                                     on_progress=on_progress)
    warnings = []
    if result.ok:
        _remember_marker(project.id, fetched.marker_digest if fetched is not None else None,
                         full_pull=started if filelist and changes is None else None)
        if project.trace == traces.DEBIAN:
            warnings += _write_trace(project, run, destination, started, result)
    return PullOutcome(result, warnings=tuple(warnings), deleted=tuple(deleted), written=tuple(written), walk=walk)


def _filelist_plan(project, fetched, previous, protect, log_path):
    """The filelists.Plan from the tree the pull starts as to the upstream's new list, or None (a full
    pull, the run log saying why)."""
    name = project.upstream_filelist.strip("/")

    def full(why):
        _log_line(log_path, f"# upstream_filelist {name}: {why}: pulling in full")
    if project.tree_dirty:
        return full("the tree is not the last good pull's")
    if project.marker_digest is None:   # reset by a change of settings (excludes, say), as for a marker
        return full("the project's settings changed since the last good pull")
    # Now and then the whole tree is compared with upstream, as a plain rsync does: what the lists
    # cannot say (a list out of step with its tree upstream, say) is mended then.
    interval = current_app.config["FILELIST_FULL_INTERVAL"]
    if project.last_full_pull is None:
        return full("no full pull of this tree is on record")
    if (now() - project.last_full_pull).total_seconds() >= interval:
        return full(f"the last full pull started {humanize.age(project.last_full_pull, now())} "
                    f"(FILELIST_FULL_INTERVAL: {humanize.span(interval)})")
    new_path = fetched.fetched(name) if fetched.result.ok else None   # not what an earlier fetch left
    if new_path is None:
        return full("it did not come from upstream")
    try:
        tree = previous()
    except OSError as error:
        return full(f"the previous tree cannot be read ({error.strerror or error})")
    if tree is None:
        return full("there is no previous tree to compare it with")
    root, held = tree
    old_path = os.path.join(root, name)
    if not os.path.isfile(old_path) or os.path.islink(old_path):
        return full("the previous tree has no list to compare it with")
    try:
        new = filelists.load(new_path)
        plan = filelists.plan(filelists.held(_listing_key(project), old_path), new, held, keep=(name, *protect))
    except (OSError, filelists.FilelistError) as error:
        return full(f"it cannot be read ({error})")
    compared = "every entry of the tree" if plan.every_entry else "the lines that differ"
    _log_line(log_path, f"# upstream_filelist {name}: {plan.listed} entries listed, {len(plan.transfer)} to "
                        f"transfer, {len(plan.delete)} to delete (from {compared}): pulling only those")
    return plan, new


def _listing_key(project):
    return current_app.config["DATA_DIR"], project.name


def _pull_changes(spec, key, plan, listing, fetched, filelist, destination, log_path, delete, cancel, on_spawn,
                  on_progress):
    """Delete what upstream no longer lists, rsync the listed changes, then put the list itself in place
    (``listing``, the one the plan was made from, never a newer one). Returns (SyncResult, deleted, written).
    The staged tree is served only once sealed: deleting first is safe, and lets a file take a
    directory's place. Raises OSError."""
    deleted = tuple(delete(plan.delete)) if plan.delete else ()
    name = filelist.strip("/")
    list_path = os.path.join(fetched.scratch, ".files-from")
    with open(list_path, "wb") as out:
        # "." with --no-recursive: the root's own times, and the top-level directories' (not their content).
        for path in (["."] if plan.root else []) + [path for path in plan.transfer if path != name]:
            out.write(os.fsencode(path) + b"\0")
    # Exactly the listed entries move: --no-recursive undoes every pull's --recursive; --force lets a
    # file or link take the place of a directory; rsync deletes nothing (the master did).
    options = (f"--files-from={list_path}", "--from0", "--no-recursive", "--force")
    job = rsync_method.job(dataclasses.replace(spec, listed=None), destination, extra_options=options, delete=False)
    result, _ = rsync_method.run_stage(runners(), job, log_path, "changes", cancel, on_spawn, on_progress)
    written = ()
    if result.ok and fetched.copy_into(destination, name):
        written = (name,)
        filelists.hold(key, os.path.join(destination, name), listing, paths=(name, *spec.protect),
                       absent=plan.absent_after(destination))
    return result, deleted, written


def run_post_hook(run, outcome, destination, log_path):
    """post_success or post_failure after the pull; a failure becomes a warning of the run."""
    hook, state = (hooks.POST_SUCCESS, "success") if outcome.result.ok else (hooks.POST_FAILURE, "failed")
    failure = run_hook(run.project, run.id, hook, state, destination, log_path)
    if failure is not None:
        outcome.warnings = (*outcome.warnings, failure)
    return outcome


def _unchanged(project, fetched):
    return (fetched.marker_digest is not None and project.marker_digest == fetched.marker_digest
            and project.tree_run_id is not None and not project.tree_dirty)


def _skip(project, fetched, destination, log_path):
    copied = []
    try:
        copied = fetched.copy_companions(destination)
    except OSError as error:
        log.warning("%s: cannot copy %s: %s", project.name, ", ".join(fetched.companions), error)
    _log_line(log_path, f"# {fetched.paths[0]} is unchanged since the last good pull: skipped"
              + (f" (copied {', '.join(copied)})" if copied else ""))
    return PullOutcome(fetched.result.replace(stats=RsyncStats(), stages=()), skipped=True)


def _remember_marker(project_id, digest, full_pull=None):
    values = {"marker_digest": digest}
    if full_pull is not None:
        values["last_full_pull"] = full_pull
    db.session.execute(sa.update(Project).where(Project.id == project_id).values(**values))
    db.session.commit()


def site(name):
    """This host as trace files name it, from the settings."""
    config = current_app.config
    return traces.Site(name=name, host=socket.getfqdn(), creator=traces.CREATOR,
                       maintainer=config["TRACE_MAINTAINER"], sponsor=config["TRACE_SPONSOR"],
                       country=config["TRACE_COUNTRY"], location=config["TRACE_LOCATION"],
                       throughput=config["TRACE_THROUGHPUT"])


def _write_trace(project, run, destination, started, result):
    rsync_stages = tuple(stage for stage in result.stages if stage[0] != "command")
    pull = traces.Pull(started=started, finished=now(), upstream=upstream_host(project.upstream),
                       trigger=run.trigger, bytes_received=result.stats.bytes_received, stages=rsync_stages)
    try:
        traces.write_traces(destination, site(current_app.config["MIRROR_NAME"]), pull)
    except OSError as error:
        log.error("%s: cannot write the trace files: %s", project.name, error)
        return [f"trace files not written: {error.strerror or error}"]
    return []


def _log_line(log_path, line):
    with open(log_path, "a", encoding="utf-8") as log_file:
        log_file.write(line + "\n")
