"""The public status feed: every project's state and each slave's freshness, one piece per project."""

import json

from common.validation import public_rsync_url
from master.compression import Deflated
from master.services import readmodel


def _time(moment):
    return moment.isoformat() if moment is not None else None


def status_piece(snapshot, model):
    """One project's entry of /api/v1/status (StatusSchema's shape), as JSON."""
    return Deflated(json.dumps({
        "name": snapshot.name, "status": snapshot.status, "last_success": _time(snapshot.last_success),
        "last_started": _time(snapshot.last_started), "last_ended": _time(snapshot.last_ended),
        "next_run": _time(snapshot.next_run), "upstream": public_rsync_url(snapshot.upstream),
        "size": snapshot.size,
        "slaves": {name: {"state": held["state"], "run_id": held["run_id"], "since": _time(held["since"]),
                          "last_error": held["last_error"]} for name, held in snapshot.slaves.items()},
    }, separators=(",", ":")).encode())


def status_document():
    """/api/v1/status: one entry per project; ``slaves`` maps each enabled slave to its freshness."""
    (body, gzipped), etag = readmodel.current_model().assembled("status")
    return readmodel.Document(body, etag, "application/json", "public, max-age=10", gzipped=gzipped)
