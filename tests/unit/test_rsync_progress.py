"""Whole-transfer progress from rsync --info=progress2, kept out of the run log."""

import io

import pytest

from common.processes import copy_output
from common.rsync import _copy_output, _output_lines, parse_progress


@pytest.mark.parametrize("line, expected", [
    ("         32768   0%    0.00kB/s    0:00:00",
     {"bytes": 32768, "percent": 0, "rate": "0.00kB/s", "eta": "0:00:00"}),
    ("     8,000,000 100%    2.97MB/s    0:00:02 (xfr#2, to-chk=0/3)",
     {"bytes": 8000000, "percent": 100, "rate": "2.97MB/s", "eta": "0:00:02", "files_transferred": 2,
      "files_to_check": 0, "files_total": 3}),
    ("  1234  5%  1.00MB/s  1:02:03 (xfr#1, ir-chk=1000/2000)",
     {"bytes": 1234, "percent": 5, "rate": "1.00MB/s", "eta": "1:02:03", "files_transferred": 1,
      "files_to_check": 1000, "files_total": 2000}),
])
def test_progress_lines_are_parsed(line, expected):
    assert parse_progress(line) == expected


@pytest.mark.parametrize("line", ["Number of files: 3", "100% done", "rsync: connection refused", "",
                                  "sent 93 bytes  received 206 bytes  598.00 bytes/sec"])
def test_other_lines_are_not_progress(line):
    assert parse_progress(line) is None


def test_carriage_returns_split_progress_updates():
    stream = io.BytesIO(b"\r  10  1%  1kB/s  0:00:09\r  20  2%  1kB/s  0:00:08\nfile.txt\nlast")
    assert list(_output_lines(stream)) == [b"", b"  10  1%  1kB/s  0:00:09", b"  20  2%  1kB/s  0:00:08",
                                          b"file.txt", b"last"]


class Log:
    """The run log: the lines written into it."""

    def __init__(self):
        self.lines = []

    def write(self, line, from_output=False):
        self.lines.append(line)


class Tail:
    def add(self, line):
        pass


def logged(data, on_progress):
    """The lines ``_copy_output`` writes into the log out of rsync's output ``data``."""
    log = Log()
    _copy_output(io.BytesIO(data), log, Tail(), on_progress)
    return log.lines


def test_progress_goes_to_the_callback_and_the_rest_to_the_log():
    seen = []
    lines = logged(b"\r  10  1%  1kB/s  0:00:09\r  20  100%  1kB/s  0:00:00\nNumber of files: 3\n", seen.append)
    assert lines == ["Number of files: 3"]
    assert seen[0]["bytes"] == 10 and seen[-1]["bytes"] == 20, "the first and the final update are reported"


def test_a_failing_progress_callback_never_stops_the_log():

    def broken(progress):
        raise RuntimeError("no database here")
    lines = logged(b"\r  10  1%  1kB/s  0:00:09\nNumber of files: 3\nTotal bytes sent: 9\n", broken)
    assert lines == ["Number of files: 3", "Total bytes sent: 9"]


def test_a_line_rsync_prints_right_after_a_progress_update_keeps_its_own_line_in_the_log():
    seen = []
    # rsync ends a progress update with the next one's \r, or with nothing when a name follows.
    lines = logged(b"\r  13   0%   12.70kB/s    0:00:00 (xfr#1, to-chk=0/36)*deleting   small.txt\n"
                   b"\r  13 100%   12.70kB/s    0:00:00   >f+++++++++ a.txt\nNumber of files: 3\n", seen.append)
    assert lines == ["*deleting   small.txt", ">f+++++++++ a.txt", "Number of files: 3"]
    assert seen[-1]["percent"] == 100


def test_a_listing_pull_keeps_the_names_of_unchanged_entries_out_of_the_log():
    """With RsyncJob.listed rsync names every entry (--info=name2): those it left as they were go to the
    list (a line each would fill the log with the whole tree), a changed one and the rest to the log,
    also right after a progress update."""
    from common.rsync import _ProgressLines, _Unchanged
    seen, names, log = [], [], Log()
    copy_output(io.BytesIO(b".d          ./\n.f          a b\nhf          hard\n.d..t...... dir/\n"
                           b"\r  13 100%   12.70kB/s    0:00:00   .L          link\n"
                           b">f+++++++++ new\n.f...p..... mode\nNumber of files: 7\n"),
                log, Tail(), _Unchanged(names, _ProgressLines(seen.append)))
    assert names == ["./", "a b", "hard", "link"]
    assert log.lines == [".d..t...... dir/", ">f+++++++++ new", ".f...p..... mode", "Number of files: 7"]
    assert seen and seen[-1]["percent"] == 100


def test_a_listing_job_lets_rsync_delete_nothing_and_names_everything():
    from common.rsync import RsyncJob, build_command
    argv = build_command(RsyncJob(source="rsync://u/m", destination="/t", listed=[]))
    assert "--delete-delay" not in argv and {"--info=name2", "--out-format=%i %n", "--force"} <= set(argv)
    assert "--delete-delay" in build_command(RsyncJob(source="rsync://u/m", destination="/t"))
