"""Debian trace files (``project/trace/`` in the tree), in ftpsync's format, for master and slaves.

After a complete pull a host writes ``project/trace/<its name>``, then
``_hierarchy`` (upstream's ``_hierarchy.mirror`` plus its own line, also saved
as ``_hierarchy.mirror``) and ``_traces`` (the trace names, oldest first).
Each file is written to ``<name>.new`` and renamed into place. Upstream's
``project/trace/master`` is only ever read.
"""

import datetime
import email.utils
import os
import re
from dataclasses import dataclass

TRACE_DIR = "project/trace"
HIERARCHY = "_hierarchy"
HIERARCHY_MIRROR = "_hierarchy.mirror"
TRACES = "_traces"
MASTER_TRACE = "master"
NEW_SUFFIX = ".new"
NONE, DEBIAN = "none", "debian"
CREATOR = "mirror-sync 0.1.0"
TRACE_MODES = (NONE, DEBIAN)
# date(1)'s output in the POSIX locale: English names whatever this process's locale is.
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SERIAL = re.compile(r"^Archive serial: *(\S+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Site:
    """Who writes the trace: settings MIRROR_NAME/PUBLIC_NAME and TRACE_*."""

    name: str
    host: str                       # this host's FQDN ("Running on host")
    creator: str
    maintainer: str | None = None
    sponsor: str | None = None
    country: str | None = None
    location: str | None = None
    throughput: str | None = None


@dataclass(frozen=True)
class Pull:
    """What the trace tells about the pull that just ended."""

    started: datetime.datetime
    finished: datetime.datetime
    upstream: str                   # the host pulled from
    trigger: str
    bytes_received: int | None = None
    stages: tuple[tuple[str, float], ...] = ()   # (name, seconds); rsync stages only


def protected_paths(name):
    """What rsync must never delete (relative to the tree): this host's own trace, as ftpsync protects it.

    ``_hierarchy*`` and ``_traces`` are not protected: pulled from upstream or deleted
    with it, they are rebuilt after every pull, so they never grow a stale line.
    """
    return (f"{TRACE_DIR}/{name}",)


def date_line(moment):
    """``date -u`` in the POSIX locale: ``Sun Feb  7 09:40:29 UTC 2016``."""
    moment = moment.astimezone(datetime.timezone.utc)
    return (f"{_DAYS[moment.weekday()]} {_MONTHS[moment.month - 1]} {moment.day:2d} "
            f"{moment:%H:%M:%S} UTC {moment.year}")


def rfc2822(moment):
    """``date -u -R``: ``Sun, 07 Feb 2016 09:40:29 +0000``."""
    return email.utils.format_datetime(moment.astimezone(datetime.timezone.utc).replace(microsecond=0))


def archive_serial(tree):
    """The ``Archive serial`` of upstream's master trace in ``tree``, or None."""
    try:
        with open(os.path.join(tree, TRACE_DIR, MASTER_TRACE), encoding="utf-8", errors="replace") as trace:
            match = _SERIAL.search(trace.read(65536))
    except OSError:
        return None
    return match.group(1) if match else None


def architectures(tree):
    """Architectures the tree's indices cover (``dists/**/binary-*`` and ``source``), sorted."""
    found = set()
    for _, directories, _ in os.walk(os.path.join(tree, "dists")):
        for name in directories:
            if name.startswith("binary-") and len(name) > len("binary-"):
                found.add(name[len("binary-"):])
            elif name == "source":
                found.add("source")
    return sorted(found)


def render_trace(tree, site, pull):
    """The text of ``project/trace/<site.name>`` for ``pull`` into ``tree``."""
    lines = [date_line(pull.finished), f"Date: {rfc2822(pull.finished)}",
             f"Date-Started: {rfc2822(pull.started)}"]
    serial = archive_serial(tree)
    if serial:
        lines.append(f"Archive serial: {serial}")
    lines += [f"Creator: {site.creator}", f"Running on host: {site.host}"]
    for key, value in (("Maintainer", site.maintainer), ("Sponsor", site.sponsor), ("Country", site.country),
                       ("Location", site.location), ("Throughput", site.throughput)):
        if value:
            lines.append(f"{key}: {value}")
    lines.append(f"Trigger: {pull.trigger}")
    archs = architectures(tree)
    if archs:
        lines += [f"Architectures: {' '.join(archs)}", "Architectures-Configuration: ALL"]
    lines += [f"Upstream-mirror: {pull.upstream}"]
    if pull.stages:
        lines.append("Rsync-Transport: plain")
        if pull.bytes_received is not None:
            lines.append(f"Total bytes received in rsync: {pull.bytes_received}")
        seconds = {name: value for name, value in pull.stages}
        for stage in ("stage1", "stage2"):
            if stage in seconds:
                lines.append(f"Total time spent in {stage} rsync: {round(seconds[stage])}")
        total = sum(seconds.values())
        lines.append(f"Total time spent in rsync: {round(total)}")
        if pull.bytes_received is not None:
            lines.append(f"Average rate: {round(pull.bytes_received / total) if total > 0 else 0} B/s")
    return "\n".join(lines) + "\n"


def write_traces(tree, site, pull):
    """Write this host's trace, ``_hierarchy``, ``_hierarchy.mirror`` and ``_traces`` into ``tree``.

    Raises OSError; a file already in place is then the complete old one.
    """
    directory = os.path.join(tree, TRACE_DIR)
    os.makedirs(directory, exist_ok=True)
    _write_atomically(directory, site.name, render_trace(tree, site, pull))
    try:
        with open(os.path.join(directory, HIERARCHY_MIRROR), encoding="utf-8", errors="replace") as upstream:
            hierarchy = upstream.read()
    except FileNotFoundError:
        hierarchy = ""
    if hierarchy and not hierarchy.endswith("\n"):
        hierarchy += "\n"
    hierarchy += f"{site.name} {site.name} {site.host} {pull.upstream}\n"
    _write_atomically(directory, HIERARCHY, hierarchy)
    _write_atomically(directory, HIERARCHY_MIRROR, hierarchy)
    _write_atomically(directory, TRACES, "".join(f"{name}\n" for name in _trace_names(directory)))


def _trace_names(directory):
    """Trace files not starting with ``_``, oldest first (``ls -1rt | grep -v '^_'``)."""
    entries = []
    for entry in os.scandir(directory):
        if entry.name.startswith(("_", ".")) or entry.name.endswith(NEW_SUFFIX):
            continue
        if entry.is_file(follow_symlinks=False):
            entries.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
    return [name for _, name in sorted(entries)]


def _write_atomically(directory, name, text):
    staging = os.path.join(directory, name + NEW_SUFFIX)
    with open(staging, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.chmod(staging, 0o644)
    os.replace(staging, os.path.join(directory, name))
