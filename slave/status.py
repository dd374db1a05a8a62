"""What this slave holds per project, from its own records: the read model of its public page and /jobs.

Only states and times leave this module, never a record's error text, log or
the master's rsync address: those are for the master and its operators.
"""

import dataclasses
import os
import threading

from common.humanize import as_utc
from common.tunasync import rsync_size, tunasync_time
from slave.publishing import SNAPSHOTS_DIR
from slave.syncs import ACCEPTED, FAILED, SUCCESS, SYNCING


@dataclasses.dataclass(frozen=True)
class Holding:
    project: str
    status: str              # success, failed, syncing or none (tunasync's words)
    run_id: int | None       # the run whose tree this slave published last
    last_success: object     # datetime of that publish, or None
    last_started: object
    last_ended: object
    size: int | None         # bytes of that tree, as rsync counted it


def _holding(project, records):
    """``records`` are the project's, newest first."""
    current = records[0]["state"]
    final = [record for record in records if record.get("state") in (SUCCESS, FAILED)]
    if current == SYNCING:
        status = "syncing"
    else:  # an accepted order waiting for a pull slot keeps the status it follows, as tunasync does
        status = final[0]["state"] if final else "none"
    success = next((record for record in records if record.get("state") == SUCCESS), None)
    started = next((record["started_at"] for record in records if record.get("started_at")), None)
    size = ((success or {}).get("stats") or {}).get("total_size")
    return Holding(project, status, success["run_id"] if success else None,
                   as_utc(success["finished_at"]) if success else None, as_utc(started),
                   as_utc(final[0]["finished_at"]) if final else None,
                   size if isinstance(size, int) else None)


def build_holdings(records, public_dir):
    """One Holding per project this slave has a record or a tree of, by name."""
    by_project = {}
    for record in records.newest_first():
        if record.get("state") in (ACCEPTED, SYNCING, SUCCESS, FAILED) and isinstance(record.get("project"), str):
            by_project.setdefault(record["project"], []).append(record)
    holdings = {project: _holding(project, found) for project, found in by_project.items()}
    # A tree whose records were pruned (a project that has not changed in a long while) still shows.
    try:
        names = os.listdir(public_dir)
    except OSError:
        names = []
    for name in names:
        if name not in holdings and not name.startswith(".") and name != SNAPSHOTS_DIR \
                and os.path.isdir(os.path.join(public_dir, name)):
            holdings[name] = Holding(name, "none", None, None, None, None, None)
    return [holdings[name] for name in sorted(holdings)]


def jobs_feed(holdings):
    """tunasync's /jobs shape for this host: one entry per project it holds."""
    jobs = []
    for holding in holdings:
        entry = {"name": holding.project, "is_master": False, "status": holding.status,
                 "upstream": "", "size": rsync_size(holding.size)}
        for field, moment in (("last_update", holding.last_success), ("last_started", holding.last_started),
                              ("last_ended", holding.last_ended), ("next_schedule", None)):
            entry[field], entry[f"{field}_ts"] = tunasync_time(moment)
        jobs.append(entry)
    return jobs


class StatusBoard:
    """Builds the holdings on demand, again only when a record or a tree came, went or was rewritten."""

    def __init__(self, records, public_dir):
        self.records = records
        self.public_dir = public_dir
        self._lock = threading.Lock()
        self._built = None   # (key, holdings)

    def _key(self):
        # Records are replaced by rename, so a rewritten one has a new inode: names and inodes
        # say exactly when to rebuild, from directory entries alone, without reading a file.
        key = []
        for directory in (self.records.directory, self.public_dir):
            try:
                with os.scandir(directory) as entries:
                    key.append(frozenset((entry.name, entry.inode()) for entry in entries))
            except OSError:
                key.append(None)
        return tuple(key)

    def holdings(self):
        key = self._key()
        with self._lock:
            if self._built and self._built[0] == key:
                return self._built[1]
        built = build_holdings(self.records, self.public_dir)
        with self._lock:
            self._built = (key, built)
        return built

    def jobs(self):
        return jobs_feed(self.holdings())
