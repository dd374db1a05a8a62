"""Text from the other side (a slave's answer, a report, rsync's output) made safe to show.

One sanitizer for every place such text reaches a log line, a terminal or a
stored message: control characters, ANSI escape sequences, newlines and the
Unicode line and direction controls become visible escapes (``\\x1b``,
``\\n``), so a hostile text can neither forge a log line nor drive a terminal.
"""

import logging
import re

# C0 and C1 controls (newline and tab included), DEL, and the Unicode characters that break
# or reorder lines: line/paragraph separators, bidirectional overrides and isolates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# The same, but newline, tab and carriage return (rsync's progress lines) stay: for a block of lines.
_UNSAFE_IN_BLOCK = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
ELLIPSIS = "\u2026"


def _escape(match):
    char = match.group()
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value, limit=None):
    """``value`` as one line of plain text, at most ``limit`` characters (clipped with an ellipsis).

    None stays None; anything else is turned into a string first.
    """
    if value is None:
        return None
    text = _UNSAFE.sub(_escape, str(value))
    if limit is not None and len(text) > limit:
        text = text[:max(0, limit - 1)] + ELLIPSIS
    return text


def printable_lines(value, limit=None):
    """Like ``printable`` but keeps newlines and tabs: for multi-line text shown as a block."""
    if value is None:
        return None
    text = _UNSAFE_IN_BLOCK.sub(_escape, str(value))
    if limit is not None and len(text) > limit:
        text = text[:max(0, limit - 1)] + ELLIPSIS
    return text


class PrintableFormatter(logging.Formatter):
    """A log formatter that escapes the message, so no logged text can forge a line or drive a
    terminal; a traceback that follows keeps its lines."""

    def formatMessage(self, record):
        record.message = printable(record.message)
        return super().formatMessage(record)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level):
    """Log to stderr at ``level`` through the PrintableFormatter (once per process)."""
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger().setLevel(level)
