"""README's 5-minute tour, run line by line as written.

The commands are read from README.md itself, so the tour and this test cannot
drift apart. Only the example ports and /tmp/tour are swapped for free ports
and a temporary directory, so the test runs beside others. Each numbered
terminal of the tour is one process here; the last one's lines run in order,
and the outcome each line's comment promises is checked.
"""

import os
import re
import shlex
import socket
import subprocess

import pytest

from tests.integration.conftest import _track
from tests.support.processes import REPO_ROOT, ServiceProcess, free_port, wait_for
from tests.support.trees import assert_trees_equal

pytestmark = pytest.mark.slow

TOUR_TITLE = "## A 5-minute tour\n"
EXAMPLE_PORTS = ("8873", "5000", "8730", "7000")
EXAMPLE_ROOT = "/tmp/tour"
ASSIGNMENT = re.compile(r"[A-Z_][A-Z0-9_]*=")
COMMAND_TIMEOUT = 120
READY_TIMEOUT = 30


def tour_text():
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index(TOUR_TITLE)
    return readme[start:readme.index("\n## ", start + 1)]


def tour_terminals(text):
    """The tour's code as [(heading comment, [command line, ...]), ...], one entry per terminal."""
    code = [line[4:] for line in text.splitlines() if line.startswith("    ")]
    terminals, pending = [], ""
    for line in code:
        if re.match(r"# \d+\. ", line):
            terminals.append((line, []))
            continue
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        if pending.strip():
            terminals[-1][1].append(pending)
        pending = ""
    return terminals


def split_command(line):
    """(environment assignments, argv, promise) of one shell line, parsed without a shell."""
    words = shlex.split(line, comments=True)
    promise = line.partition("  # ")[2].strip()
    assignments = {}
    while words and ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        assignments[name] = value
    return assignments, words, promise


def clean_environment():
    """A shell's environment without a developer's own mirror-sync settings."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith(("MIRRORSYNC_", "VIRTUAL_ENV"))}


@pytest.fixture
def tour(tmp_path):
    """The tour's terminals with the example ports and directory swapped for private ones."""
    text = tour_text()
    ports = {port: str(free_port()) for port in EXAMPLE_PORTS}
    text = re.sub(r"\b(%s)\b" % "|".join(EXAMPLE_PORTS), lambda match: ports[match.group(1)], text)
    root = tmp_path / "tour"
    text = text.replace(EXAMPLE_ROOT, str(root))
    return tour_terminals(text), root


def start_terminal(heading, lines, env, log_dir):
    """Start a terminal's one long-running command and wait until it serves."""
    [line] = lines
    assignments, argv, _ = split_command(line)
    service = ServiceProcess(argv, dict(env, **assignments), log_dir, name=f"tour-{heading[2]}")
    try:
        if "MIRRORSYNC_API_PORT" in assignments:
            service.wait_healthy(f"http://127.0.0.1:{assignments['MIRRORSYNC_API_PORT']}/healthz",
                                 timeout=READY_TIMEOUT)
        else:
            service.wait_for_log("upstream ready", timeout=READY_TIMEOUT)
    except BaseException:
        service.stop()
        raise
    return service


def run_line(line, env):
    """Run one line of the last terminal; ``export`` changes the environment of the lines after it."""
    assignments, argv, promise = split_command(line)
    if argv[0] == "export":
        env.update(word.split("=", 1) for word in argv[1:])
        return None, promise
    done = subprocess.run(argv, env=dict(env, **assignments), cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    assert done.returncode == 0, f"{line!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout, promise


def line_naming(lines, *words):
    return next(line for line in lines if all(word in line for word in words))


def test_the_readme_tour_runs_as_written(tour, tmp_path, request):
    terminals, root = tour
    assert [heading.split(".")[0] for heading, _ in terminals] == ["# 1", "# 2", "# 3", "# 4"]
    *services_terminals, (_, commands) = terminals
    env = clean_environment()
    started = []
    try:
        for heading, lines in services_terminals:
            started.append(_track(request, start_terminal(heading, lines, env, tmp_path)))
        outputs = {}
        for line in commands:
            _, argv, _ = split_command(line)
            if argv[:3] == [".venv/bin/mirrorctl", "slaves", "list"]:
                # A person who saw mirror1 still enrolling would look again.
                wait_for(lambda: re.search(r"mirror1\s.*\bonline\b", run_line(line, env)[0]),
                         READY_TIMEOUT, interval=0.5, message="mirror1 listed online")
            outputs[" ".join(argv[:3])], _ = run_line(line, env)
        assert "success" in outputs[".venv/bin/mirrorctl projects sync"].splitlines()[-1], outputs
        runs_show = outputs[".venv/bin/mirrorctl runs show"].splitlines()
        assert "success" in line_naming(runs_show, "mirror1"), runs_show
        status = outputs[".venv/bin/mirrorctl status"].splitlines()
        assert "fresh" in line_naming(status, "mirror1"), status
        listed = outputs[f"ls {root}/mirror1/public/tour"].split("\n")
        assert "small.txt" in listed and "with space.txt" in listed, listed
        assert_trees_equal(root / "upstream" / "tree", root / "mirror1" / "public" / "tour")
    finally:
        for service in reversed(started):
            service.stop()
    assert all(service.returncode is not None for service in started)


def test_the_local_upstream_says_in_one_line_when_its_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([".venv/bin/python", "examples/local_upstream.py", "--dir", str(tmp_path / "up"),
                               "--port", str(port)], cwd=REPO_ROOT, env=clean_environment(), capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("error: ") and f"port {port}" in line and "already taken" in line, line
    assert "Traceback" not in done.stdout + done.stderr
