"""Times and sizes as people read them on the status pages: '2026-05-09 07:35 UTC', '3 h ago', '1.2 GiB'."""

import datetime

BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def as_utc(moment):
    """An aware UTC datetime; naive ones are taken as UTC, ISO strings are parsed; None stays None."""
    if moment is None:
        return None
    if isinstance(moment, str):
        try:
            moment = datetime.datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def iso(moment):
    """'2026-05-09T07:35:25Z', or '' for None."""
    moment = as_utc(moment)
    return "" if moment is None else moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def absolute(moment):
    """'2026-05-09 07:35 UTC', or '' for None."""
    moment = as_utc(moment)
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def span(seconds):
    seconds = abs(int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def age(moment, now):
    """'3 h ago', 'in 5 min', 'just now' or 'never'."""
    moment = as_utc(moment)
    if moment is None:
        return "never"
    delta = (as_utc(now) - moment).total_seconds()
    if abs(delta) < 5:
        return "just now"
    return f"{span(delta)} ago" if delta > 0 else f"in {span(delta)}"


def binary_size(size):
    """1288490189 -> '1.2 GiB'; None -> 'unknown'."""
    if size is None:
        return "unknown"
    value = float(size)
    for unit in BINARY_UNITS:
        if value < 1024 or unit == BINARY_UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
