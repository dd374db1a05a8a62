"""Readable text for projects and runs as the REST API returns them."""

from datetime import datetime, timezone

_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def parse_time(value):
    """An ISO 8601 timestamp from the API as an aware datetime, or None."""
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def human_size(value):
    """1536 -> '1.5 KiB'; anything that is not a number is shown as it is."""
    if value is None:
        return "-"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    size = float(value)
    for unit in _SIZE_UNITS:
        if abs(size) < 1024 or unit == _SIZE_UNITS[-1]:
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def human_duration(seconds):
    """75.3 -> '1m 15s'."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def run_duration(run):
    """Seconds from start to finish (or to now while running), or None before it starts."""
    if run.get("duration") is not None:
        return run["duration"]
    started = parse_time(run.get("started_at"))
    if started is None:
        return None
    finished = parse_time(run.get("finished_at")) or datetime.now(timezone.utc)
    return (finished - started).total_seconds()


def _show(value):
    return "-" if value is None or value == "" else str(value)


def _stat_value(key, value):
    if isinstance(value, (int, float)) and ("bytes" in key or "size" in key):
        return f"{human_size(value)} ({value})"
    return _show(value)


def describe_run(run, list_slaves=True):
    """Several lines describing one run: state, times, stats and, unless told not to, one line per slave."""
    lines = [
        f"run {run.get('id')} of project {run.get('project')} ({_show(run.get('trigger'))} trigger)",
        f"  state:     {run.get('state')}",
        f"  created:   {_show(run.get('created_at'))}",
        f"  started:   {_show(run.get('started_at'))}",
        f"  finished:  {_show(run.get('finished_at'))}",
        f"  duration:  {human_duration(run_duration(run))}",
        f"  exit code: {_show(run.get('exit_code'))}",
    ]
    if run.get("error"):
        lines.append(f"  error:     {run['error']}")
    if run.get("warning"):
        lines.append(f"  warning:   {run['warning']}")
    stats = run.get("stats") or {}
    if stats:
        lines.append("  stats:")
        width = max(len(key) for key in stats)
        lines += [f"    {key:<{width}}  {_stat_value(key, stats[key])}" for key in sorted(stats)]
    slaves = run.get("slaves") or []
    lines.append(f"  slaves:    {len(slaves) if slaves else 'none'}")
    for slave in slaves if list_slaves else ():
        detail = f" ({slave['error']})" if slave.get("error") else ""
        lines.append(f"    {slave.get('slave')}: {slave.get('state')}{detail}")
    return "\n".join(lines)


def _clock(value):
    """An API timestamp as 'HH:MM:SS' UTC, or '-'."""
    moment = parse_time(value)
    return moment.astimezone(timezone.utc).strftime("%H:%M:%S") if moment else "-"


def _slave_duration(entry):
    started, finished = parse_time(entry.get("started_at")), parse_time(entry.get("finished_at"))
    if started is None or finished is None:
        return None
    return (finished - started).total_seconds()


def slave_table(run):
    """A fixed-width table of the run's per-slave results, one slave a row; times in UTC."""
    headers = ("SLAVE", "STATE", "STARTED UTC", "FINISHED UTC", "DURATION", "TRANSFERRED", "EXIT", "ERROR")
    rows = [
        (
            entry.get("slave"),
            entry.get("state"),
            _clock(entry.get("started_at")),
            _clock(entry.get("finished_at")),
            human_duration(_slave_duration(entry)),
            (entry.get("stats") or {}).get("files_transferred"),
            entry.get("exit_code"),
            entry.get("error"),
        )
        for entry in run.get("slaves") or []
    ]
    return _table(headers, rows)


def _table(headers, rows):
    rows = [tuple(_show(cell) for cell in row) for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [headers, *rows]
    )


def describe_project(project):
    """Several lines describing one project, every field the API returned."""
    lines = [f"project {project.get('name')}"]
    order = ["upstream", "schedule", "enabled", "status", "next_run", "last_started",
             "last_ended", "last_success", "size", "timeout", "rsync_options", "excludes"]
    keys = [key for key in order if key in project]
    keys += sorted(key for key in project if key not in keys and key != "name")
    width = max(len(key) for key in keys) + 2 if keys else 0
    for key in keys:
        value = project[key]
        if key == "size":
            value = human_size(value)
        elif key == "schedule" and value is None:
            value = "manual only"
        elif isinstance(value, list):
            value = " ".join(value) if value else "-"
        lines.append(f"  {key + ':':<{width}}{_show(value)}")
    return "\n".join(lines)


def project_table(projects):
    """A fixed-width table, one project a row."""
    headers = ("NAME", "STATUS", "ENABLED", "SCHEDULE", "LAST SUCCESS", "NEXT RUN", "SIZE", "UPSTREAM")
    rows = [
        (
            project.get("name"),
            project.get("status"),
            "yes" if project.get("enabled") else "no",
            project.get("schedule") or "manual",
            project.get("last_success"),
            project.get("next_run"),
            human_size(project.get("size")),
            project.get("upstream"),
        )
        for project in projects
    ]
    return _table(headers, rows)


def _retry_links(run):
    links = []
    if run.get("retry_of"):
        links.append(f"retry of {run['retry_of']}")
    if run.get("retried_by"):
        links.append(f"retried by {run['retried_by']}")
    return ", ".join(links)


def run_table(runs):
    """A fixed-width table, one run a row, newest first as the API gives them; times in UTC."""
    headers = ("RUN", "TRIGGER", "STATE", "ATTEMPT", "CREATED", "DURATION", "EXIT", "RETRIES", "ERROR")
    rows = [
        (
            run.get("id"),
            run.get("trigger"),
            run.get("state"),
            run.get("attempt"),
            run.get("created_at"),
            human_duration(run_duration(run)),
            run.get("exit_code"),
            _retry_links(run),
            run.get("error"),
        )
        for run in runs
    ]
    return _table(headers, rows)


def slave_list_table(slaves):
    """A fixed-width table, one slave a row."""
    headers = ("NAME", "STATE", "ENABLED", "LAST SEEN", "URL")
    rows = [
        (
            slave.get("name"),
            slave.get("state"),
            "yes" if slave.get("enabled") else "no",
            slave.get("last_seen"),
            slave.get("url"),
        )
        for slave in slaves
    ]
    return _table(headers, rows)


def token_table(tokens):
    """A fixed-width table, one token a row; the token values themselves are never listed."""
    headers = ("ID", "NAME", "ROLE", "CREATED", "EXPIRES", "LAST USED", "REVOKED")
    rows = [
        (
            token.get("id"),
            token.get("name"),
            token.get("role"),
            token.get("created_at"),
            token.get("expires_at") or "never",
            token.get("last_used_at") or "never",
            token.get("revoked_at"),
        )
        for token in tokens
    ]
    return _table(headers, rows)


def describe_status(entry):
    """Lines for one project of the public feed: its state, then one line per slave's freshness."""
    lines = [
        f"{entry.get('name')}: {entry.get('status')}",
        f"  upstream:     {_show(entry.get('upstream'))}",
        f"  last success: {_show(entry.get('last_success'))}",
        f"  next run:     {_show(entry.get('next_run'))}",
        f"  size:         {human_size(entry.get('size'))}",
    ]
    slaves = entry.get("slaves") or {}
    if not slaves:
        lines.append("  slaves:       none")
    for name in sorted(slaves):
        held = slaves[name] or {}
        since = f" since {held['since']}" if held.get("since") else ""
        run = f" at run {held['run_id']}" if held.get("run_id") is not None else ""
        error = f" ({held['last_error']})" if held.get("last_error") else ""
        lines.append(f"  slave {name}: {held.get('state')}{run}{since}{error}")
    return "\n".join(lines)
