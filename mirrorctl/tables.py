"""What people read: aligned tables and detail blocks for projects, runs, slaves and the status feed.

Every function takes the API's JSON as it is and ``now`` (for '3m ago'), and
returns text; fields the master adds later show up at the end of detail blocks.
"""

from common.texts import printable
from mirrorctl.units import NONE, clock, human_age, human_duration, human_size, parse_time

ERROR_WIDTH = 60


def table(headers, rows):
    """Columns padded to their widest cell; None and '' show as '-'."""
    cells = [tuple(_cell(value) for value in row) for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *cells)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [tuple(headers), *cells])


def details(title, pairs):
    """A title line, then '  key:  value' lines with the values aligned."""
    width = max((len(key) for key, _ in pairs), default=0) + 1
    return "\n".join([title] + [f"  {key + ':':<{width}} {_cell(value)}" for key, value in pairs])


def _cell(value):
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _short(text, width=ERROR_WIDTH):
    text = printable(" ".join(str(text).split())) if text else ""
    return text if len(text) <= width else text[:width - 3] + "..."


def _moment(value, now):
    """'2026-05-09 07:35:25 UTC (3m ago)', or '-'."""
    moment = parse_time(value)
    if moment is None:
        return NONE
    return f"{moment.strftime('%Y-%m-%d %H:%M:%S UTC')} ({human_age(value, now)})"


def _extra(document, shown):
    """Fields not laid out above, so a newer master's additions still show."""
    return [(key, value) for key, value in document.items() if key not in shown]


# Projects

PROJECT_FIELDS = ("name", "upstream", "schedule", "enabled", "status", "last_success", "last_started",
                  "last_ended", "next_run", "size", "timeout", "retries", "splay", "publish", "rsync_options",
                  "excludes", "has_password", "description", "help_url", "public_path", "created_at",
                  "updated_at")


def project_table(projects, now):
    headers = ("NAME", "STATUS", "SCHEDULE", "LAST SUCCESS", "NEXT RUN", "SIZE", "UPSTREAM")
    return table(headers, [(
        project.get("name"),
        project.get("status"),
        project.get("schedule") or "manual",
        human_age(project.get("last_success"), now),
        human_age(project.get("next_run"), now) if project.get("enabled", True) else NONE,
        human_size(project.get("size")),
        project.get("upstream"),
    ) for project in projects])


def project_details(project, now):
    size = project.get("size")
    timeout = project.get("timeout")
    pairs = [
        ("upstream", project.get("upstream")),
        ("schedule", project.get("schedule") or "manual only"),
        ("enabled", project.get("enabled")),
        ("status", project.get("status")),
        ("last success", _moment(project.get("last_success"), now)),
        ("last started", _moment(project.get("last_started"), now)),
        ("last ended", _moment(project.get("last_ended"), now)),
        ("next run", _moment(project.get("next_run"), now)),
        ("size", f"{human_size(size)} ({size} bytes)" if isinstance(size, int) else size),
        ("timeout", f"{human_duration(timeout)} ({timeout}s)" if isinstance(timeout, int) else timeout),
        ("retries", project.get("retries")),
        ("splay", f"{project['splay']}s" if isinstance(project.get("splay"), int) else project.get("splay")),
        ("publish", project.get("publish")),
        ("rsync options", " ".join(project.get("rsync_options") or [])),
        ("excludes", " ".join(project.get("excludes") or [])),
        ("password", "set" if project.get("has_password") else "none"),
        ("description", project.get("description")),
        ("help url", project.get("help_url")),
        ("public path", project.get("public_path")),
        ("created", _moment(project.get("created_at"), now)),
        ("updated", _moment(project.get("updated_at"), now)),
    ]
    return details(f"project {project.get('name')}", pairs + _extra(project, PROJECT_FIELDS))


# Runs

RUN_FIELDS = ("id", "project", "trigger", "state", "coalesced", "attempt", "retry_of", "not_before",
              "created_at", "started_at", "finished_at", "duration", "exit_code", "error", "warning",
              "stats", "progress", "slaves")


def slave_summary(run):
    """'2/3 ok' over the run's slaves, or '-' when it has none."""
    entries = run.get("slaves") or []
    if not entries:
        return NONE
    done = sum(1 for entry in entries if entry.get("state") == "success")
    return f"{done}/{len(entries)} ok"


def run_table(runs, now):
    headers = ("ID", "STATE", "TRIGGER", "CREATED", "DURATION", "FILES", "RECEIVED", "SLAVES", "ERROR")
    return table(headers, [(
        run.get("id"),
        run.get("state"),
        run.get("trigger"),
        human_age(run.get("created_at"), now),
        human_duration(run.get("duration")),
        (run.get("stats") or {}).get("files_transferred"),
        human_size((run.get("stats") or {}).get("bytes_received")),
        slave_summary(run),
        _short(run.get("error") or run.get("warning")),
    ) for run in runs])


def run_details(run, now):
    stats = run.get("stats") or {}
    pairs = [
        ("project", run.get("project")),
        ("state", run.get("state")),
        ("trigger", run.get("trigger")),
        ("attempt", run.get("attempt")),
    ]
    if run.get("retry_of"):
        pairs.append(("retry of", f"run {run['retry_of']}"))
    if run.get("not_before"):
        pairs.append(("not before", _moment(run["not_before"], now)))
    if run.get("coalesced"):
        pairs.append(("coalesced", f"{run['coalesced']} more trigger(s)"))
    pairs += [
        ("created", _moment(run.get("created_at"), now)),
        ("started", _moment(run.get("started_at"), now)),
        ("finished", _moment(run.get("finished_at"), now)),
        ("duration", human_duration(run.get("duration"))),
        ("exit code", run.get("exit_code")),
    ]
    if run.get("progress") and run.get("state") == "syncing":
        pairs.append(("progress", describe_progress(run["progress"])))
    if run.get("error"):
        pairs.append(("error", run["error"]))
    if run.get("warning"):
        pairs.append(("warning", run["warning"]))
    if stats:
        pairs += [
            ("files", f"{_cell(stats.get('files_total'))} total, {_cell(stats.get('files_transferred'))} "
                      f"transferred, {_cell(stats.get('files_created'))} created, "
                      f"{_cell(stats.get('files_deleted'))} deleted"),
            ("tree size", human_size(stats.get("total_size"))),
            ("received", human_size(stats.get("bytes_received"))),
            ("sent", human_size(stats.get("bytes_sent"))),
        ]
    text = details(f"run {run.get('id')}", pairs + _extra(run, RUN_FIELDS))
    entries = run.get("slaves") or []
    if not entries:
        return text + "\n\nno slaves took part in this run"
    return text + "\n\n" + slave_run_table(entries)


def describe_progress(progress):
    """rsync's whole-transfer progress: '45% (1.2 GiB), 12.34MB/s, eta 0:00:05'."""
    parts = [f"{progress.get('percent', '?')}% ({human_size(progress.get('bytes'))})"]
    parts += [text for text in (progress.get("rate"), progress.get("eta") and f"eta {progress['eta']}") if text]
    return ", ".join(parts)


def _slave_duration(entry):
    started, finished = parse_time(entry.get("started_at")), parse_time(entry.get("finished_at"))
    return (finished - started).total_seconds() if started and finished else None


def slave_run_table(entries):
    """One row per slave of a run; times are UTC clock times; ERROR shows a success's warning too."""
    headers = ("SLAVE", "STATE", "ATTEMPTS", "STARTED", "FINISHED", "DURATION", "FILES", "EXIT", "PROGRESS",
               "ERROR")
    return table(headers, [(
        entry.get("slave"),
        entry.get("state"),
        entry.get("attempts"),
        clock(entry.get("started_at")),
        clock(entry.get("finished_at")),
        human_duration(_slave_duration(entry)),
        (entry.get("stats") or {}).get("files_transferred"),
        entry.get("exit_code"),
        _part_progress(entry),
        _short(entry.get("error") or (entry.get("warning") and f"warning: {entry['warning']}")),
    ) for entry in entries])


def _part_progress(entry):
    """How far a slave's pull has come, while it runs: '45% at 12.34MB/s'."""
    progress = entry.get("progress") if entry.get("state") == "syncing" else None
    if not isinstance(progress, dict) or not isinstance(progress.get("percent"), int):
        return None
    rate = progress.get("rate")
    return f"{progress['percent']}%" + (f" at {printable(str(rate))}" if rate else "")


# Slaves

SLAVE_FIELDS = ("name", "url", "enabled", "state", "last_seen", "created_at", "rsync_user", "public_url",
                "last_edit")


def slave_table(slaves, now):
    headers = ("NAME", "STATE", "LAST SEEN", "ENROLLED", "URL")
    return table(headers, [(
        slave.get("name"),
        slave.get("state"),
        human_age(slave.get("last_seen"), now),
        human_age(slave.get("created_at"), now),
        slave.get("url"),
    ) for slave in slaves])


def slave_details(slave, now):
    pairs = [
        ("state", slave.get("state")),
        ("enabled", slave.get("enabled")),
        ("url", slave.get("url")),
        ("last seen", _moment(slave.get("last_seen"), now)),
        ("enrolled", _moment(slave.get("created_at"), now)),
        ("rsync user", slave.get("rsync_user")),
        ("public url", slave.get("public_url")),
        ("last edit", _edit(slave.get("last_edit"), now)),
    ]
    return details(f"slave {slave.get('name')}", pairs + _extra(slave, SLAVE_FIELDS))


def _edit(edit, now):
    """The last edit a slave saw behind its back, on one line."""
    if not edit:
        return "-"
    repaired = f"repaired {_moment(edit.get('repaired_at'), now)}" if edit.get("repaired_at") else "not repaired yet"
    return (f"{edit.get('project')}, first at {edit.get('path')!r}, seen {_moment(edit.get('seen_at'), now)}; "
            f"{repaired}")


# The public status feed

def status_tables(feed, now):
    """One row per project, then one row per project and slave with that slave's freshness."""
    headers = ("PROJECT", "STATUS", "LAST SUCCESS", "NEXT RUN", "SIZE", "SLAVES", "UPSTREAM")
    projects = table(headers, [(
        entry.get("name"),
        entry.get("status"),
        human_age(entry.get("last_success"), now),
        human_age(entry.get("next_run"), now),
        human_size(entry.get("size")),
        _freshness_summary(entry.get("slaves") or {}),
        entry.get("upstream"),
    ) for entry in feed])
    rows = [(
        entry.get("name"),
        slave,
        freshness.get("state"),
        human_age(freshness.get("since"), now),
        freshness.get("run_id"),
        _short(freshness.get("last_error")),
    ) for entry in feed for slave, freshness in sorted((entry.get("slaves") or {}).items())]
    if not rows:
        return projects
    return projects + "\n\n" + table(("PROJECT", "SLAVE", "FRESHNESS", "SINCE", "RUN", "ERROR"), rows)


def _freshness_summary(slaves):
    if not slaves:
        return NONE
    fresh = sum(1 for freshness in slaves.values() if freshness.get("state") == "fresh")
    return f"{fresh}/{len(slaves)} fresh"
