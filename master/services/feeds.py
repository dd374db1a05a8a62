"""Read-only feeds for others' tools: tunasync's mirror-web job list and Prometheus metrics.

Both read the project and slave rows only (never run history), so a scrape
costs the same after a year as on the first day.
"""

import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from common.states import RunState
from common.validation import public_rsync_url
from master.seams import now
from master.services import distribution, projects, slaves

# tunasync's statuses: none, failed, success, syncing, pre-syncing, paused, disabled.
TUNASYNC_STATUS = {
    "none": "none", "disabled": "disabled", "queued": "pre-syncing", "syncing": "syncing",
    "distributing": "syncing", "success": "success", "partial": "failed", "failed": "failed",
    "interrupted": "failed", "cancelled": "failed",
}
# What Go prints for a zero time.Time, which mirror-web front-ends already expect.
ZERO_TIME_TEXT = "0001-01-01 00:00:00 +0000"
ZERO_TIMESTAMP = -62135596800


def _tunasync_time(moment):
    if moment is None:
        return ZERO_TIME_TEXT, ZERO_TIMESTAMP
    moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S %z"), int(moment.timestamp())


def human_size(size):
    """tunasync-style sizes: 512, 1.5K, 12.3G, or "unknown"."""
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("", "K", "M", "G", "T", "P"):
        if value < 1024 or unit == "P":
            return f"{value:.0f}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1024


def jobs_feed():
    """One entry per project, in the shape of tunasync's ``/jobs``."""
    jobs = []
    for project in projects.list_projects():
        entry = {"name": project.name, "is_master": True, "status": TUNASYNC_STATUS[project.status],
                 "upstream": public_rsync_url(project.upstream), "size": human_size(project.size)}
        for field, moment in (("last_update", project.last_success), ("last_started", project.last_started),
                              ("last_ended", project.last_ended), ("next_schedule", project.next_run)):
            entry[field], entry[f"{field}_ts"] = _tunasync_time(moment)
        jobs.append(entry)
    return jobs


class MetricsCollector:
    """A prometheus_client collector that reads the database at scrape time."""

    def collect(self):
        stamp = now()
        project_rows = projects.list_projects()
        last_success = GaugeMetricFamily("mirrorsync_project_last_success_timestamp_seconds",
                                         "When the project last synced successfully (Unix time).",
                                         labels=["project"])
        duration = GaugeMetricFamily("mirrorsync_project_last_run_duration_seconds",
                                     "How long the project's newest finished run took.", labels=["project"])
        transferred = GaugeMetricFamily("mirrorsync_project_last_run_bytes_received",
                                        "Bytes the newest finished upstream pull received.", labels=["project"])
        size = GaugeMetricFamily("mirrorsync_project_size_bytes", "Size of the project's tree.",
                                 labels=["project"])
        next_run = GaugeMetricFamily("mirrorsync_project_next_run_timestamp_seconds",
                                     "When the project's schedule fires next (Unix time).", labels=["project"])
        totals = CounterMetricFamily("mirrorsync_project_runs", "Finished runs by result.",
                                     labels=["project", "result"])
        state = GaugeMetricFamily("mirrorsync_project_state",
                                  "1 for the project's current state, 0 for the others.",
                                  labels=["project", "state"])
        states = ["none", "disabled", *(s.value for s in RunState)]
        for project in project_rows:
            name = project.name
            if project.last_success is not None:
                last_success.add_metric([name], project.last_success.timestamp())
            if project.last_duration is not None:
                duration.add_metric([name], project.last_duration)
            if project.last_bytes is not None:
                transferred.add_metric([name], project.last_bytes)
            if project.size is not None:
                size.add_metric([name], project.size)
            if project.next_run is not None:
                next_run.add_metric([name], project.next_run.timestamp())
            for result in ("success", "partial", "failed", "interrupted", "cancelled"):
                totals.add_metric([name, result], (project.run_totals or {}).get(result, 0))
            for candidate in states:
                state.add_metric([name, candidate], 1.0 if project.status == candidate else 0.0)
        yield from (last_success, duration, transferred, size, next_run, totals, state)
        yield from self._slave_metrics(project_rows, stamp)

    def _slave_metrics(self, project_rows, stamp):
        last_seen = GaugeMetricFamily("mirrorsync_slave_last_seen_timestamp_seconds",
                                      "When the slave last sent a heartbeat (Unix time).", labels=["slave"])
        up = GaugeMetricFamily("mirrorsync_slave_up", "1 when the slave is online.", labels=["slave"])
        lag = GaugeMetricFamily("mirrorsync_slave_lag_seconds",
                                "How long the master has had a tree this slave does not (0 when fresh).",
                                labels=["slave", "project"])
        freshness = distribution.freshness_by_project()
        enabled = slaves.enabled_slaves()
        for slave in slaves.list_slaves():
            if slave.last_seen is not None:
                last_seen.add_metric([slave.name], slave.last_seen.timestamp())
            up.add_metric([slave.name], 1.0 if slaves.slave_state(slave, stamp) == "online" else 0.0)
        for project in project_rows:
            if project.tree_run_id is None or project.tree_at is None:
                continue
            held = freshness.get(project.id, {})
            for slave in enabled:
                holding = held.get(slave.name)
                fresh = holding is not None and holding.run_id == project.tree_run_id
                lag.add_metric([slave.name, project.name],
                               0.0 if fresh else max(0.0, (stamp - project.tree_at).total_seconds()))
        yield from (last_seen, up, lag)
