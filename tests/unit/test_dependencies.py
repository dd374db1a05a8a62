"""Started on a Python without the project's packages, every program says so in one line."""

import subprocess
import sys

import pytest

from tests.support.processes import REPO_ROOT


@pytest.mark.parametrize("module", ["master", "master.scheduler", "slave"])
def test_a_python_without_the_packages_gets_one_line_naming_the_fix(module, tmp_path):
    # -S leaves site-packages out: the same as the system's python without the virtualenv.
    result = subprocess.run([sys.executable, "-S", "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "is not installed for" in lines[0] and ".venv/bin/python" in lines[0]
