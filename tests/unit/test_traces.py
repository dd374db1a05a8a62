"""Debian trace files as Debian's mirror-status checker reads them."""

import datetime
import os

from common import traces
from common.traces import Pull, Site

UTC = datetime.timezone.utc
SITE = Site(name="mirror.example.org", host="mirror.example.org", creator="mirror-sync 1.0",
            maintainer="Admins <admins@example.org>", sponsor="Example Lab", country="DE",
            location="Berlin", throughput="10Gb")


def parse_like_the_checker(text):
    """Debian mirror-status: line 1 is ``date -u``, then keys lower-cased, split on the first colon."""
    first, *rest = text.splitlines()
    date = datetime.datetime.strptime(first, "%a %b %d %H:%M:%S UTC %Y")
    fields = {}
    for line in rest:
        key, _, value = line.partition(":")
        fields[key.lower()] = value.strip()
    return date, fields


def make_upstream(tree, serial="2026120101"):
    trace_dir = tree / "project" / "trace"
    trace_dir.mkdir(parents=True)
    (trace_dir / "master").write_text(
        f"Tue Dec  1 08:00:00 UTC 2026\nDate: Tue, 01 Dec 2026 08:00:00 +0000\nArchive serial: {serial}\n")
    (trace_dir / "_hierarchy.mirror").write_text("master ftp-master.debian.org ftp-master.debian.org file\n")
    for arch in ("binary-amd64", "binary-arm64", "source"):
        (tree / "dists" / "bookworm" / "main" / arch).mkdir(parents=True)
    return trace_dir


def test_a_trace_parses_the_way_the_mirror_checker_reads_it(tmp_path):
    trace_dir = make_upstream(tmp_path)
    master_before = (trace_dir / "master").read_bytes()
    started = datetime.datetime(2026, 12, 1, 9, 0, 5, tzinfo=UTC)
    finished = datetime.datetime(2026, 12, 1, 9, 3, 7, tzinfo=UTC)
    traces.write_traces(str(tmp_path), SITE, Pull(started, finished, "ftp.de.debian.org", "schedule",
                                                  bytes_received=123456, stages=(("stage1", 100.4),
                                                                                 ("stage2", 81.2))))
    text = (trace_dir / "mirror.example.org").read_text()
    date, fields = parse_like_the_checker(text)
    assert date == datetime.datetime(2026, 12, 1, 9, 3, 7)
    assert text.splitlines()[0] == "Tue Dec  1 09:03:07 UTC 2026", "date -u pads the day with a space"
    assert fields["date"] == "Tue, 01 Dec 2026 09:03:07 +0000"
    assert fields["date-started"] == "Tue, 01 Dec 2026 09:00:05 +0000"
    assert "Archive serial: 2026120101" in text.splitlines(), "spelled as ftpsync's wrapper matches it"
    assert fields["creator"] == "mirror-sync 1.0"
    assert fields["running on host"] == "mirror.example.org"
    assert fields["maintainer"] == "Admins <admins@example.org>"
    assert (fields["sponsor"], fields["country"], fields["location"], fields["throughput"]) == (
        "Example Lab", "DE", "Berlin", "10Gb")
    assert fields["trigger"] == "schedule"
    assert fields["architectures"] == "amd64 arm64 source"
    assert fields["architectures-configuration"] == "ALL"
    assert fields["upstream-mirror"] == "ftp.de.debian.org"
    assert fields["total bytes received in rsync"] == "123456"
    assert fields["total time spent in stage1 rsync"] == "100"
    assert fields["total time spent in stage2 rsync"] == "81"
    assert fields["total time spent in rsync"] == "182"
    assert fields["average rate"] == "680 B/s"
    assert list(fields)[:3] == ["date", "date-started", "archive serial"], "ftpsync's order"
    assert (trace_dir / "master").read_bytes() == master_before, "upstream's master trace is never rewritten"


def test_hierarchy_is_upstreams_plus_one_line_and_traces_lists_oldest_first(tmp_path):
    trace_dir = make_upstream(tmp_path)
    os.utime(trace_dir / "master", (1_000, 1_000))
    now = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    traces.write_traces(str(tmp_path), SITE, Pull(now, now, "ftp.de.debian.org", "push"))
    hierarchy = (trace_dir / "_hierarchy").read_text()
    assert hierarchy == ("master ftp-master.debian.org ftp-master.debian.org file\n"
                         "mirror.example.org mirror.example.org mirror.example.org ftp.de.debian.org\n")
    assert (trace_dir / "_hierarchy.mirror").read_text() == hierarchy
    assert (trace_dir / "_traces").read_text() == "master\nmirror.example.org\n"
    assert not [name for name in os.listdir(trace_dir) if name.endswith(".new")], "nothing half-written stays"

    # A slave pulls the master's tree, then writes its own line under the master's.
    slave = Site(name="www1.example.org", host="www1.example.org", creator="mirror-sync 1.0")
    traces.write_traces(str(tmp_path), slave, Pull(now, now, "mirror.example.org", "master"))
    assert (trace_dir / "_hierarchy").read_text().splitlines()[-2:] == [
        "mirror.example.org mirror.example.org mirror.example.org ftp.de.debian.org",
        "www1.example.org www1.example.org www1.example.org mirror.example.org"]
    assert (trace_dir / "_traces").read_text().splitlines() == ["master", "mirror.example.org",
                                                                 "www1.example.org"]


def test_a_trace_without_an_upstream_master_trace_has_no_serial_and_still_parses(tmp_path):
    now = datetime.datetime(2026, 2, 28, 9, 40, 29, tzinfo=UTC)
    traces.write_traces(str(tmp_path), Site(name="m", host="m.example", creator="mirror-sync"),
                        Pull(now, now, "up.example", "manual"))
    text = (tmp_path / "project" / "trace" / "m").read_text()
    date, fields = parse_like_the_checker(text)
    assert text.startswith("Sat Feb 28 09:40:29 UTC 2026\n")
    assert "archive serial" not in fields and "maintainer" not in fields
    assert traces.protected_paths("m") == ("project/trace/m",)
