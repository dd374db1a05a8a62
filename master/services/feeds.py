"""Feeds for others' tools: tunasync's /jobs (mirror-web), mirrorz.json, and Prometheus /metrics.

Each is made of one piece per project, built by the read model once per change;
what moves with the clock (lag, liveness) is filled in per request.
"""

import datetime
import hashlib
import json

from flask import current_app

from common.errors import NotFound
from common.states import RunState
from common.tunasync import rsync_size
from common.validation import public_rsync_url
from master.compression import Deflated, gzip_join, joined
from master.seams import now
from master.services import readmodel

# tunasync's statuses: none, failed, success, syncing, pre-syncing, paused, disabled. A queued
# run has no slot yet: tunasync reports the previous status until it starts (see _tunasync_status).
TUNASYNC_STATUS = {
    "none": "none", "disabled": "disabled", "syncing": "syncing",
    "distributing": "syncing", "success": "success", "partial": "failed", "failed": "failed",
    "interrupted": "failed", "cancelled": "failed",
}
# What Go prints for a zero time.Time, which mirror-web front-ends already expect.
ZERO_TIME_TEXT = "0001-01-01 00:00:00 +0000"
ZERO_TIMESTAMP = -62135596800
MIRRORZ_VERSION = 1.7
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The metrics' fixed text is compressed whole once per change: fast rather than small.
ASSEMBLY_LEVEL = 1
RESULTS = ("success", "partial", "failed", "interrupted", "cancelled")
STATES = ("none", "disabled", *(state.value for state in RunState))


def _tunasync_time(moment):
    if moment is None:
        return ZERO_TIME_TEXT, ZERO_TIMESTAMP
    moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S %z"), int(moment.timestamp())


def _settled_status(snapshot):
    """The status of the newest run that ended: what tunasync shows while the next one waits."""
    if snapshot.last_ended is None:
        return "none"
    return "success" if snapshot.last_full_success == snapshot.last_ended else "failed"


def _tunasync_status(snapshot):
    if snapshot.status == RunState.QUEUED.value:
        return _settled_status(snapshot)
    return TUNASYNC_STATUS[snapshot.status]


def jobs_piece(snapshot, model):
    """One project in the shape of a tunasync ``/jobs`` entry, as JSON."""
    entry = {"name": snapshot.name, "is_master": True, "status": _tunasync_status(snapshot),
             "upstream": public_rsync_url(snapshot.upstream), "size": rsync_size(snapshot.size)}
    for field, moment in (("last_update", snapshot.last_full_success), ("last_started", snapshot.last_started),
                          ("last_ended", snapshot.last_ended), ("next_schedule", snapshot.next_schedule)):
        entry[field], entry[f"{field}_ts"] = _tunasync_time(moment)
    return Deflated(json.dumps(entry, separators=(",", ":")).encode())


def json_list(model, pieces, opening=b"[", closing=b"]"):
    """(the JSON list of deflated ``pieces``, the same as gzip)."""
    body = opening + b",".join(piece.raw for piece in pieces) + closing
    return body, gzip_join(joined(pieces, b",", opening, closing))


def jobs_document():
    (body, gzipped), etag = readmodel.current_model().assembled("jobs")
    return readmodel.Document(body, etag, "application/json", "public, max-age=10", gzipped=gzipped)


# mirrorz

def _seconds(moment):
    return int(moment.timestamp())


def mirrorz_status(snapshot):
    """mirrorz's status string: S/Y/F/D/P/U with its time, then O (last success) and X (next sync)."""
    status = snapshot.status
    if not snapshot.enabled:
        return "P"
    if status == RunState.QUEUED.value:
        main = "D"
    elif status in (RunState.SYNCING.value, RunState.DISTRIBUTING.value):
        main = f"Y{_seconds(snapshot.last_started)}" if snapshot.last_started else "Y"
    elif status == RunState.SUCCESS.value:
        main = f"S{_seconds(snapshot.last_full_success or snapshot.last_success)}"
    elif status == "none":
        main = "U"
    else:
        main = f"F{_seconds(snapshot.last_ended)}" if snapshot.last_ended else "F"
    if main[0] in "YFD" and snapshot.last_full_success is not None:
        main += f"O{_seconds(snapshot.last_full_success)}"
    if snapshot.next_run is not None:
        main += f"X{_seconds(snapshot.next_run)}"
    return main


def mirrorz_piece(snapshot, model):
    mirror = {"cname": snapshot.name, "url": snapshot.public_path or f"/{snapshot.name}",
              "status": mirrorz_status(snapshot)}
    if snapshot.description:
        mirror["desc"] = snapshot.description
    if snapshot.help_url:
        mirror["help"] = snapshot.help_url
    mirror["upstream"] = public_rsync_url(snapshot.upstream)
    mirror["size"] = rsync_size(snapshot.size)
    return Deflated(json.dumps(mirror, separators=(",", ":")).encode())


def mirrorz_body(model, pieces):
    config = current_app.config
    site = {"url": config.get("SITE_URL"), "abbr": config.get("SITE_ABBR")}
    if config.get("SITE_NAME"):
        site["name"] = config["SITE_NAME"]
    head = json.dumps({"version": MIRRORZ_VERSION, "site": site, "info": []}, separators=(",", ":")).encode()
    return json_list(model, pieces, head[:-1] + b',"mirrors":[', b"]}")


def mirrorz_document():
    """mirrorz.json (v1.7); raises NotFound until SITE_URL and SITE_ABBR say who the site is."""
    config = current_app.config
    missing = [name for name in ("SITE_URL", "SITE_ABBR") if not config.get(name)]
    if missing:
        raise NotFound(f"mirrorz.json needs the settings {' and '.join(missing)} (MIRRORSYNC_{missing[0]}).")
    (body, gzipped), etag = readmodel.current_model().assembled("mirrorz")
    return readmodel.Document(body, etag, "application/json", "public, max-age=60",
                              {"Access-Control-Allow-Origin": "*"}, gzipped)


# Prometheus

def _label(value):
    return str(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _number(value):
    return repr(float(value))


# (name, type, help) of the per-project families, in the order they are written.
PROJECT_FAMILIES = (
    ("mirrorsync_project_last_success_timestamp_seconds", "gauge",
     "When the project last synced successfully (Unix time)."),
    ("mirrorsync_project_last_run_duration_seconds", "gauge", "How long the project's newest finished run took."),
    ("mirrorsync_project_last_run_received_bytes", "gauge", "Bytes the newest finished upstream pull received."),
    ("mirrorsync_project_size_bytes", "gauge", "Size of the project's tree."),
    ("mirrorsync_project_next_run_timestamp_seconds", "gauge",
     "When the project's schedule fires next (Unix time)."),
    ("mirrorsync_project_runs_total", "counter", "Finished runs by result."),
    ("mirrorsync_project_state", "gauge", "1 for the project's current state, 0 for the others."),
)
SLAVE_FAMILIES = (
    ("mirrorsync_slave_last_seen_timestamp_seconds", "gauge", "When the slave last sent a heartbeat (Unix time)."),
    ("mirrorsync_slave_up", "gauge", "1 when the slave is online."),
)
LAG = ("mirrorsync_slave_lag_seconds", "gauge",
       "How long the master has had a tree this slave does not (0 when fresh).")
EXPORTED_METRICS = tuple(name for name, _, _ in PROJECT_FAMILIES + SLAVE_FAMILIES + (LAG,))


def _header(name, kind, text):
    return f"# HELP {name} {text}\n# TYPE {name} {kind}\n"


def metrics_piece(snapshot, model):
    """One project's samples: fixed lines per family, fresh lag lines, and the stale pairs' prefixes."""
    label = f'project="{_label(snapshot.name)}"'
    values = {
        "mirrorsync_project_last_success_timestamp_seconds":
            snapshot.last_success.timestamp() if snapshot.last_success else None,
        "mirrorsync_project_last_run_duration_seconds": snapshot.last_duration,
        "mirrorsync_project_last_run_received_bytes": snapshot.last_bytes,
        "mirrorsync_project_size_bytes": snapshot.size,
        "mirrorsync_project_next_run_timestamp_seconds": snapshot.next_run.timestamp() if snapshot.next_run else None,
    }
    families = {name: f"{name}{{{label}}} {_number(value)}\n" if value is not None else ""
                for name, value in values.items()}
    families["mirrorsync_project_runs_total"] = "".join(
        f'mirrorsync_project_runs_total{{{label},result="{result}"}} {_number(snapshot.run_totals.get(result, 0))}\n'
        for result in RESULTS)
    families["mirrorsync_project_state"] = "".join(
        f'mirrorsync_project_state{{{label},state="{state}"}} {"1.0" if snapshot.status == state else "0.0"}\n'
        for state in STATES)
    fresh, stale = [], []
    if snapshot.tree_run_id is not None and snapshot.tree_at is not None:
        for name, held in snapshot.slaves.items():
            prefix = f'{LAG[0]}{{slave="{_label(name)}",{label}}}'
            if held["run_id"] == snapshot.tree_run_id:
                fresh.append(f"{prefix} 0.0\n")
            else:
                stale.append(prefix)
    tree_at = snapshot.tree_at.timestamp() if snapshot.tree_at is not None else None
    return {"families": families, "fresh": "".join(fresh), "stale": tuple(stale), "tree_at": tree_at}


def metrics_assembly(model, pieces):
    """Every project family and the fresh lag samples, compressed once; what stale lag needs per scrape."""
    fixed = "".join(_header(*family) + "".join(piece["families"][family[0]] for piece in pieces)
                    for family in PROJECT_FAMILIES)
    fixed += _header(*LAG) + "".join(piece["fresh"] for piece in pieces)
    return {"fixed": Deflated(fixed.encode(), ASSEMBLY_LEVEL),
            "stale": [(piece["tree_at"], piece["stale"]) for piece in pieces if piece["stale"]]}


def metrics_document():
    """The Prometheus text: the build's fixed samples, then lag and slave liveness as of now."""
    assembly, etag = readmodel.current_model().assembled("metrics")
    stamp = now()
    now_seconds = stamp.timestamp()
    moving = []
    for tree_at, prefixes in assembly["stale"]:
        separator = f" {_number(max(0.0, now_seconds - tree_at))}\n"
        moving.append(separator.join(prefixes) + separator)
    timeout = readmodel.heartbeat_timeout()
    seen, up = [_header(*SLAVE_FAMILIES[0])], [_header(*SLAVE_FAMILIES[1])]
    for slave in readmodel.slave_liveness():
        name = _label(slave.name)
        if slave.last_seen is not None:
            seen.append(f'{SLAVE_FAMILIES[0][0]}{{slave="{name}"}} {_number(slave.last_seen.timestamp())}\n')
        online = slave.enabled and slave.last_seen is not None and \
            (stamp - slave.last_seen).total_seconds() <= timeout
        up.append(f'{SLAVE_FAMILIES[1][0]}{{slave="{name}"}} {"1.0" if online else "0.0"}\n')
    moving = "".join(moving + seen + up).encode()
    laid = [assembly["fixed"], Deflated(moving, 1)]
    return readmodel.Document(assembly["fixed"].raw + moving, f"{etag}-{_digest(moving)}",
                              METRICS_CONTENT_TYPE, "no-cache", gzipped=gzip_join(laid))


def _digest(data):
    return hashlib.blake2b(data, digest_size=8).hexdigest()
