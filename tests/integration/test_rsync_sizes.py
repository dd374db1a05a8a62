"""tunasync's /jobs passes on the size rsync -h prints: common.tunasync.rsync_size matches the real rsync."""

import re
import subprocess

import pytest

from common.tunasync import rsync_size

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("size", [0, 999, 1000, 1500, 132_490, 999_999, 4_000_001, 1_288_490_189,
                                  55_610_000_000, 3_000_000_000_000])
def test_sizes_read_as_rsync_h_prints_them(tmp_path, size):
    source = tmp_path / "tree"
    source.mkdir()
    with open(source / "sparse.bin", "wb") as sparse:
        sparse.truncate(size)  # a hole: rsync's file list counts the length without reading it
    done = subprocess.run(["rsync", "--archive", "--dry-run", "--stats", "-h", f"{source}/", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60, check=True)
    [printed] = re.findall(r"^Total file size: (\S+) bytes$", done.stdout, re.MULTILINE)
    assert rsync_size(size) == printed


def test_an_unknown_size_reads_unknown():
    assert rsync_size(None) == "unknown"
