"""Numbers and times as people read them: '1.2 GiB', '3m ago', 'in 2h', '1m 15s'."""

from datetime import datetime, timezone

SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
NONE = "-"


def parse_time(value):
    """An API timestamp (ISO 8601) as an aware datetime, or None; unreadable values give None."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def human_size(value):
    """1288490189 -> '1.2 GiB'; None -> '-'."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return NONE if value is None else str(value)
    size = float(value)
    for unit in SIZE_UNITS:
        if abs(size) < 1024 or unit == SIZE_UNITS[-1]:
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds):
    """75.3 -> '1m 15s', 4.25 -> '4.2s', 7322 -> '2h 02m', 200000 -> '2d 07h'; None -> '-'."""
    if seconds is None:
        return NONE
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def _span(seconds):
    """One unit, rounded down: 59 -> '59s', 3599 -> '59m', 90000 -> '1d'."""
    for limit, size, unit in ((60, 1, "s"), (3600, 60, "m"), (86400, 3600, "h")):
        if seconds < limit:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds // 86400)}d"


def human_age(value, now):
    """A timestamp relative to ``now``: '3m ago', 'in 2h', 'just now'; missing -> '-'."""
    moment = parse_time(value)
    if moment is None:
        return NONE
    seconds = (now - moment).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    return f"{_span(seconds)} ago" if seconds > 0 else f"in {_span(-seconds)}"


def clock(value):
    """A timestamp as 'HH:MM:SS' UTC, or '-'."""
    moment = parse_time(value)
    return moment.astimezone(timezone.utc).strftime("%H:%M:%S") if moment else NONE


def utc_now():
    return datetime.now(timezone.utc)
