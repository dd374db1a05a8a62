"""One sanitizer for every text from the other side that reaches a log line or a terminal."""

import logging

import pytest

from common.texts import PrintableFormatter, printable, printable_lines


@pytest.mark.parametrize("raw, shown", [
    ("plain text", "plain text"), ("two\nlines", "two\\nlines"), ("cr\rhere", "cr\\rhere"),
    ("\x1b[2Jclear", "\\x1b[2Jclear"), ("bell\x07", "bell\\x07"), ("c1\x9bcsi", "c1\\x9bcsi"),
    ("rtl\u202eoverride", "rtl\\u202eoverride"), ("line\u2028sep", "line\\u2028sep"), ("nul\x00", "nul\\x00"),
    ("üñíçødé", "üñíçødé"),
])
def test_control_characters_escapes_and_newlines_become_visible(raw, shown):
    assert printable(raw) == shown


def test_long_text_is_clipped_with_an_ellipsis():
    assert printable("x" * 500, 200) == "x" * 199 + "\u2026"
    assert printable(None) is None and printable(5) == "5"


def test_blocks_keep_their_lines_and_tabs_but_no_escape():
    assert printable_lines("a\tb\nc\x1b[0m\r") == "a\tb\nc\\x1b[0m\r"


def test_the_log_formatter_escapes_messages_so_no_line_can_be_forged():
    record = logging.LogRecord("master", logging.WARNING, __file__, 1, "slave said %s", (
        "ok\n2026-01-01 00:00:00 INFO master: admin token rotated\x1b[2K",), None)
    line = PrintableFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line == "WARNING master: slave said ok\\n2026-01-01 00:00:00 INFO master: admin token rotated\\x1b[2K"
