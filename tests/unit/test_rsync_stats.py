"""parse_stats and result_from_exit on output captured from rsync 3.5.0 (and the 3.0 layout)."""

from common.rsync import (
    EXIT_MEANINGS,
    TRANSIENT_EXIT_CODES,
    RsyncStats,
    last_error_line,
    parse_stats,
    result_from_exit,
)

# rsync 3.5.0, DEFAULT_OPTIONS (--no-human-readable): a second pull after upstream changes.
PLAIN_DIGITS = """
Number of files: 39 (reg: 26, dir: 6, link: 7)
Number of created files: 6 (reg: 4, dir: 2)
Number of deleted files: 9 (reg: 5, dir: 3, link: 1)
Number of regular files transferred: 7
Total file size: 524863 bytes
Total transferred file size: 524384 bytes
Literal data: 524384 bytes
Matched data: 0 bytes
File list size: 0
File list generation time: 0.001 seconds
File list transfer time: 0.000 seconds
Total bytes sent: 525796
Total bytes received: 379

sent 525796 bytes  received 379 bytes  1052350.00 bytes/sec
total size is 524863  speedup is 1.00
"""

# rsync 3.5.0 -a --stats (its default digit grouping).
THOUSANDS_GROUPED = """
Number of files: 1,203 (reg: 1,201, dir: 2)
Number of created files: 1,203 (reg: 1,201, dir: 2)
Number of deleted files: 0
Number of regular files transferred: 1,201
Total file size: 2,504,893 bytes
Total transferred file size: 2,504,893 bytes
Literal data: 2,504,893 bytes
Matched data: 0 bytes
File list size: 0
File list generation time: 0.001 seconds
File list transfer time: 0.000 seconds
Total bytes sent: 2,575,166
Total bytes received: 22,850

sent 2,575,166 bytes  received 22,850 bytes  5,196,032.00 bytes/sec
total size is 2,504,893  speedup is 0.96
"""

# rsync 3.5.0 -a --delete --stats with a missing source argument: exit 23, stats still printed.
PARTIAL_WITH_ERROR = """rsync: [sender] link_stat "/tmp/cap/src/nonexistent" failed: No such file or directory (2)

Number of files: 891 (reg: 889, dir: 2)
Number of created files: 0
Number of deleted files: 312 (reg: 312)
Number of regular files transferred: 0
Total file size: 2,503,456 bytes
Total transferred file size: 0 bytes
Literal data: 0 bytes
Matched data: 0 bytes
File list size: 0
File list generation time: 0.001 seconds
File list transfer time: 0.000 seconds
Total bytes sent: 13,219
Total bytes received: 3,333

sent 13,219 bytes  received 3,333 bytes  33,104.00 bytes/sec
total size is 2,503,456  speedup is 151.25
rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1394) [sender=3.5.0]
"""

# rsync 3.5.0 -a --stats --human-readable: rounded, so not reported as exact numbers.
HUMAN_READABLE = """
Number of files: 4 (reg: 2, dir: 2)
Number of created files: 4 (reg: 2, dir: 2)
Number of deleted files: 0
Number of regular files transferred: 2
Total file size: 123.46K bytes
Total transferred file size: 123.46K bytes
Literal data: 123.46K bytes
Matched data: 0 bytes
File list size: 0
File list generation time: 0.001 seconds
File list transfer time: 0.000 seconds
Total bytes sent: 123.69K
Total bytes received: 65
"""

# rsync 3.0.x layout: no created/deleted counts, "Number of files transferred".
RSYNC_30_LAYOUT = """
Number of files: 3
Number of files transferred: 2
Total file size: 12 bytes
Total transferred file size: 12 bytes
Literal data: 12 bytes
Matched data: 0 bytes
File list size: 64
File list generation time: 0.001 seconds
File list transfer time: 0.000 seconds
Total bytes sent: 183
Total bytes received: 53
"""

AUTH_FAILED = """Password: @ERROR: auth failed on module mod
rsync error: error starting client-server protocol (code 5) at main.c(1954) [Receiver=3.5.0]
"""

CONNECTION_REFUSED = """rsync: [Receiver] failed to connect to 127.0.0.1 (127.0.0.1): Connection refused (111)
rsync error: error in socket I/O (code 10) at clientserver.c(139) [Receiver=3.5.0]
"""


def test_plain_digit_stats_are_read_field_by_field():
    assert parse_stats(PLAIN_DIGITS) == RsyncStats(
        files_total=39, files_created=6, files_deleted=9, files_transferred=7,
        total_size=524863, bytes_sent=525796, bytes_received=379,
    )


def test_thousands_separators_are_dropped():
    assert parse_stats(THOUSANDS_GROUPED) == RsyncStats(
        files_total=1203, files_created=1203, files_deleted=0, files_transferred=1201,
        total_size=2504893, bytes_sent=2575166, bytes_received=22850,
    )


def test_stats_survive_error_lines_around_them():
    stats = parse_stats(PARTIAL_WITH_ERROR)
    assert (stats.files_total, stats.files_deleted, stats.total_size) == (891, 312, 2503456)


def test_rounded_human_readable_numbers_are_not_reported_as_exact():
    stats = parse_stats(HUMAN_READABLE)
    assert stats.total_size is None
    assert stats.bytes_sent is None
    assert stats.bytes_received == 65
    assert stats.files_total == 4


def test_rsync_30_layout_leaves_created_and_deleted_unknown():
    stats = parse_stats(RSYNC_30_LAYOUT)
    assert stats.files_transferred == 2
    assert stats.files_created is None
    assert stats.files_deleted is None
    assert stats.bytes_received == 53


def test_output_without_stats_gives_all_none():
    assert parse_stats(AUTH_FAILED) == RsyncStats()
    assert parse_stats("") == RsyncStats()


def test_missing_lines_give_none_and_the_rest_still_parse():
    without_sent = "\n".join(line for line in PLAIN_DIGITS.splitlines() if not line.startswith("Total bytes sent"))
    stats = parse_stats(without_sent)
    assert stats.bytes_sent is None
    assert stats.bytes_received == 379


def test_stats_to_dict_is_plain_and_complete():
    assert parse_stats(PLAIN_DIGITS).to_dict() == {
        "files_total": 39, "files_created": 6, "files_deleted": 9, "files_transferred": 7,
        "total_size": 524863, "bytes_sent": 525796, "bytes_received": 379,
    }


def test_exit_zero_is_ok_with_stats():
    result = result_from_exit(0, PLAIN_DIGITS)
    assert result.ok and result.warning is None and result.error is None
    assert result.stats.files_deleted == 9


def test_vanished_files_are_ok_with_a_warning():
    result = result_from_exit(24, PLAIN_DIGITS)
    assert result.ok
    assert result.error is None
    assert "vanished" in result.warning and "24" in result.warning


def test_auth_failure_names_the_protocol_error_and_the_daemon_reason():
    result = result_from_exit(5, AUTH_FAILED)
    assert not result.ok
    assert result.error == "Error starting client-server protocol (rsync exit 5): auth failed on module mod"


def test_partial_transfer_error_quotes_rsyncs_own_complaint():
    result = result_from_exit(23, PARTIAL_WITH_ERROR)
    assert not result.ok
    assert result.error.startswith("Partial transfer due to error (rsync exit 23): rsync: [sender] link_stat")
    assert result.stats.files_deleted == 312


def test_connection_refused_is_a_socket_error_with_the_reason():
    result = result_from_exit(10, CONNECTION_REFUSED)
    assert "socket I/O" in result.error
    assert "Connection refused" in result.error
    assert 10 in TRANSIENT_EXIT_CODES


def test_generic_summary_line_is_used_without_its_source_location():
    output = "rsync error: error in rsync protocol data stream (code 12) at io.c(232) [Receiver=3.5.0]\n"
    result = result_from_exit(12, output)
    assert result.error == ("Error in rsync protocol data stream (rsync exit 12): "
                            "rsync error: error in rsync protocol data stream (code 12)")


def test_failure_without_output_still_reads_as_a_sentence():
    assert result_from_exit(25, "").error == "The --max-delete limit stopped deletions (rsync exit 25)"
    assert result_from_exit(99, "").error == "Unknown error (rsync exit 99)"


def test_killed_by_signal_is_named():
    result = result_from_exit(-9, "")
    assert not result.ok
    assert result.error == "rsync was killed by signal SIGKILL"


def test_timeout_and_cancel_win_over_the_exit_code():
    timed_out = result_from_exit(20, "rsync error: received SIGINT, SIGTERM, or SIGHUP (code 20)", timed_out=True,
                                 timeout=30)
    assert (timed_out.ok, timed_out.timed_out, timed_out.error) == (False, True, "timed out after 30 seconds")
    cancelled = result_from_exit(20, "", cancelled=True, timeout=30)
    assert (cancelled.ok, cancelled.cancelled, cancelled.error) == (False, True, "cancelled")


def test_exit_table_covers_rsync_man_page():
    documented = {1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24, 25, 30, 35}
    assert documented <= EXIT_MEANINGS.keys()
    assert TRANSIENT_EXIT_CODES == {5, 10, 12, 30, 35}


def test_daemon_error_is_preferred_over_later_summary():
    assert last_error_line(AUTH_FAILED) == "auth failed on module mod"
    assert last_error_line("just some output\n") is None
