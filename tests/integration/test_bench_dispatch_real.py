"""bench/dispatch_real.py at the smallest size: it measures every span and leaves no process behind.

The speed goal (P2, under 0.5 s for 50 slaves) is kept in the benchmark, not asserted here.
"""

import os
from pathlib import Path

import pytest

from bench.dispatch_real import measure

pytestmark = pytest.mark.slow


def processes_mentioning(text):
    """Pids of processes whose command line or environment names ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue  # gone already, or not ours to read
        if text.encode() in seen:
            found.append(int(entry.name))
    return found


def test_dispatch_to_two_real_slaves_is_timed_against_the_baseline_and_every_process_is_stopped(tmp_path):
    lines = []
    median = measure(slaves=2, repeat=1, workers=1, scratch=tmp_path, out=lines.append)
    print("\n".join(lines))
    for span in ("ours", "baseline", "kept alive", "healthz", "to first accept", "first to last accept",
                 "last accept to stamp", "ordered in", "pull", "run end", "refused", "repeat"):
        assert median[span] is not None, span
    assert 0 < median["ours"] < median["run end"]
    assert median["baseline"] > 0
    assert any(line.strip().startswith("ratio ours / baseline") for line in lines), lines
    assert processes_mentioning(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == [], "the benchmark removes its files"
